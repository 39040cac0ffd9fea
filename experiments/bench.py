"""Thin wrapper: the code lives in prada_jax/cli/bench.py (installed as the console script prada-bench).

Running this file from a source checkout is the same command without installing the package; its --help text
is the module's docstring.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prada_jax.cli.bench import __doc__, run  # noqa: E402,F401 (absl's --help prints this module's __doc__)

if __name__ == "__main__":
    run()
