"""Small helpers shared by the command-line entry points (prada_jax/cli/*.py and experiments/*.py)."""

from __future__ import annotations

import logging

from absl import flags

flags.DEFINE_integer("cpu_devices", 0, "CPU devices JAX exposes, set before any JAX work: 0 = one per available "
                     "core, so that simulations use every core (prada_jax.sharding.use_cpu_cores); 1 = the "
                     "single-device path. Ignored when XLA_FLAGS sets --xla_force_host_platform_device_count.")



def positive_ints(flag: str, items) -> list[int]:
    """A list flag's items as positive ints; absl's UsageError naming --flag otherwise."""
    from absl import app

    try:
        values = [int(x) for x in items]
    except ValueError as exc:
        raise app.UsageError(f"--{flag}: integers expected, got {items}") from exc
    if not values or min(values) < 1:
        raise app.UsageError(f"--{flag}: positive integers expected, got {items}")
    return values


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


def run_main(main, doc: str | None, key_flag_modules=(), argv=None) -> None:
    """`absl.app.run(main)` for a command whose code lives in a package module (prada_jax/cli/*.py), started as a
    console script (prada-sweep ...) or through its thin experiments/*.py wrapper.

    absl's --help/--helpshort describe the *main* module (sys.argv[0]): give it `doc` when it has no docstring of
    its own, and make the flags of `key_flag_modules` its key flags, so --helpshort lists them.
    """
    import sys

    from absl import app

    main_module = sys.modules.get("__main__")
    if main_module is not None and doc and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = doc
    for module in key_flag_modules:
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["cpu_devices"])

    def main_on_every_core(argv_):
        from prada_jax import sharding

        try:
            sharding.use_cpu_cores(flags.FLAGS.cpu_devices)
        except sharding.ShardingError as err:
            raise app.UsageError(str(err)) from err
        return main(argv_)

    app.run(main_on_every_core, argv=argv)
