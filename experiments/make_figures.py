"""`python experiments/make_figures.py` is the console script `prada-figures` (the code lives in prada_jax/cli/make_figures.py).

Kept so that a source checkout runs the command by path, as the docs show; its --help text is the module's
docstring.
"""

from prada_jax.cli.make_figures import __doc__, run  # noqa: F401 (absl's --help prints this module's __doc__)

if __name__ == "__main__":
    run()
