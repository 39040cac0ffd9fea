"""Small helpers shared by the command-line entry points (experiments/*.py)."""

from __future__ import annotations

import logging

# Loggers whose INFO lines are noise for a user: JAX's backend probe ("Unable to initialize backend 'tpu'").
NOISY_LOGGERS = ("jax._src.xla_bridge",)


def quiet_third_party_logs(verbosity: int = 0) -> None:
    """Hide third-party INFO chatter unless the user asked for more (absl --verbosity >= 1)."""
    level = logging.DEBUG if verbosity >= 1 else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
