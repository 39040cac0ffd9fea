"""Command-line entry points (absl apps), installed as console scripts by pyproject.toml:

    prada-sweep    prada_jax.cli.sweep          (also: python -m prada_jax.cli.sweep)
    prada-train    prada_jax.cli.train          (also: python -m prada_jax.cli.train)
    prada-figures  prada_jax.cli.make_figures   (also: python -m prada_jax.cli.make_figures)
    prada-bench    prada_jax.cli.bench          (with the NumPy oracle: python -m experiments.bench, repository only)

Each module defines its absl flags on import, so import one per process.
"""
