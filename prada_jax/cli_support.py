"""Small helpers shared by the command-line entry points (experiments/*.py)."""

from __future__ import annotations

import logging

# Loggers whose INFO lines are noise for a user: JAX's backend probe ("Unable to initialize backend 'tpu'").
NOISY_LOGGERS = ("jax._src.xla_bridge",)


def _not_orbax_info(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def quiet_third_party_logs(verbosity: int = 0) -> None:
    """Hide third-party INFO chatter unless the user asked for more (absl --verbosity >= 1): JAX's backend probe
    and orbax's checkpoint INFO lines (orbax logs through absl, so a filter on absl's handler drops them)."""
    level = logging.DEBUG if verbosity >= 1 else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if verbosity < 1:
        from absl import logging as absl_logging

        absl_logging.get_absl_handler().addFilter(_not_orbax_info)
