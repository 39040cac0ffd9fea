"""prada-bench with the NumPy oracle: the repository's entry point of the benchmark (prada_jax/cli/bench.py).

    python -m experiments.bench --quick        # from the repository root

The oracle, tests/reference_sim.py, lives with the tests and the package never imports tests/; this file loads it
by path and passes its `simulate_reference` to the benchmark, which times it and checks the JAX run against it.
The installed console script prada-bench has no oracle and skips those rows. --help prints the benchmark's own
docstring.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from prada_jax.cli import bench

TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def load_test_module(name: str):
    """tests/<name>.py as module `name` (registered in sys.modules, so that the oracle's own `import
    reference_exact` finds its sibling), without touching the import path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(TESTS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_oracle():
    """The NumPy reference simulator, `simulate_reference(trace, table, params, config, key) -> metrics`."""
    load_test_module("reference_exact")  # imported by the oracle's prada_exact scheduler
    return load_test_module("reference_sim").simulate_reference


if __name__ == "__main__":
    __doc__ = bench.__doc__  # absl's --help describes the __main__ module: the benchmark's flags and usage
    bench.run(oracle=load_oracle())
