"""Small helpers shared by the command-line entry points (prada_jax/cli/*.py and experiments/*.py)."""

from __future__ import annotations

import logging

from absl import flags

flags.DEFINE_integer("cpu_devices", 0, "CPU devices JAX exposes, set before any JAX work: 0 = one per available "
                     "core, so that simulations use every core (prada_jax.sharding.use_cpu_cores); 1 = the "
                     "single-device path. More than the cores this process may use is allowed (e.g. to try a "
                     "multi-device layout on a small machine; only slower) with a one-line warning. Ignored when "
                     "XLA_FLAGS sets --xla_force_host_platform_device_count.")


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


INTERRUPTED_HINT = ("rerun the same command to resume (prada-sweep skips finished points, prada-train takes "
                    "--resume)")


def one_line(message) -> str:
    """A message as one line: its non-blank lines joined by '; ' (the CLIs' errors are single FATAL lines)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _flagfile_args(args) -> list[str]:
    """The --flagfile values among command-line args or flagfile lines, as absl reads them (`--flagfile=x`,
    `-flagfile=x`, `--flagfile x`)."""
    import os

    found = []
    for i, arg in enumerate(args):
        if arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
            found.append(os.path.expanduser(args[i + 1].strip()))
        for prefix in ("--flagfile=", "-flagfile="):
            if arg.startswith(prefix):
                found.append(os.path.expanduser(arg[len(prefix):].strip()))
    return [f for f in found if f]


def undecodable_flagfile(argv, _seen=None) -> str | None:
    """'--flagfile=PATH: not UTF-8 text (...)' for the first flagfile in argv, or nested in one, that absl cannot
    read as text; None when every readable flagfile decodes."""
    seen = set() if _seen is None else _seen
    for path in _flagfile_args(list(argv)):
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError:
            continue  # absl reports a flagfile it cannot open (one line)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return (f"--flagfile={path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                    "a flagfile holds one --flag=value per line")
        nested = undecodable_flagfile([line.strip() for line in text.splitlines()], seen)
        if nested:
            return nested
    return None


def _flag_name(arg: str, known) -> str | None:
    """The flag an argument `--name=value` / `--name` / `--noname` sets (None for anything else)."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.lstrip("-").split("=", 1)[0].strip()
    if name not in known and name.startswith("no") and name[2:] in known:
        name = name[2:]
    return name or None


def repeated_flagfile_flag(argv, flag_values=None, _seen=None) -> str | None:
    """'--flagfile=PATH sets --name twice (line i: ...; line j: ...)' for the first flagfile in argv (or nested in
    one) that sets a flag twice, or None. absl would take the last value silently; a flagfile is a list of
    settings, so a repeat is a mistake (a command-line flag after --flagfile still overrides the file's value,
    as absl documents). Repeatable flags (multi flags such as --grid) may repeat."""
    fv = flags.FLAGS if flag_values is None else flag_values
    seen = set() if _seen is None else _seen
    for path in _flagfile_args(list(argv)):
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue  # reported by absl / undecodable_flagfile
        first: dict[str, tuple[int, str]] = {}
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#") or line.startswith("//"):
                continue
            name = _flag_name(line, fv)
            if name is None or name == "flagfile":
                continue
            if name in fv and isinstance(fv[name], flags.MultiFlag):
                continue
            if name in first:
                was_line, was = first[name]
                return (f"--flagfile={path} sets --{name} twice (line {was_line}: {was}; line {number}: {line}); "
                        "set each flag once in a flagfile (a flag on the command line after --flagfile overrides it)")
            first[name] = (number, line)
        nested = repeated_flagfile_flag([line.strip() for line in lines], fv, seen)
        if nested:
            return nested
    return None


def parse_flags_one_line(argv):
    """absl's flag parsing (app.run's flags_parser) with every error as ONE line on stderr and exit status 1:
    absl's own parse errors (unknown flag, ill-typed value, unreadable flagfile) without its second 'Pass
    --helpshort' line, and a flagfile that is not UTF-8 text named instead of a UnicodeDecodeError traceback."""
    import sys

    repeated = repeated_flagfile_flag(argv)
    if repeated:
        sys.exit(f"FATAL Flags parsing error: {repeated}")
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        sys.exit(f"FATAL Flags parsing error: {one_line(err)} (--helpshort lists the flags)")
    except UnicodeDecodeError as err:
        sys.exit(f"FATAL Flags parsing error: {undecodable_flagfile(argv) or f'a --flagfile is not UTF-8 text ({err})'}")


def run_main(main, doc: str | None, key_flag_modules=(), argv=None) -> None:
    """`absl.app.run(main)` for a command whose code lives in a package module (prada_jax/cli/*.py), started as a
    console script (prada-sweep ...) or through its thin experiments/*.py wrapper.

    absl's --help/--helpshort describe the *main* module (sys.argv[0]): give it `doc` when it has no docstring of
    its own, and make the flags of `key_flag_modules` its key flags, so --helpshort lists them.

    Every error before and during main's validation is ONE line on stderr (`FATAL ...`, exit status 1): flag
    parsing (parse_flags_one_line) and an `app.UsageError` raised by main (absl would print the whole module
    docstring and flag list before it; --helpshort still prints them on request).
    """
    import sys

    from absl import app, logging

    main_module = sys.modules.get("__main__")
    if main_module is not None and doc and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = doc
    for module in key_flag_modules:
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["cpu_devices"])

    def main_on_every_core(argv_):
        from prada_jax import sharding

        requested = flags.FLAGS.cpu_devices
        try:
            count = sharding.use_cpu_cores(requested)
        except sharding.ShardingError as err:
            sys.exit(f"FATAL Flags error: {one_line(err)}")
        cores = sharding.available_cores()
        if requested > cores and count == requested:  # (an XLA_FLAGS device count wins and is not warned about)
            logging.warning("--cpu_devices=%d exceeds the %d cores this process may use: allowed, but the "
                            "simulations run slower than with at most one device per core", requested, cores)
        try:
            return main(argv_)
        except app.UsageError as err:
            print(f"FATAL {one_line(err)}", file=sys.stderr, flush=True)
            sys.exit(err.exitcode if err.exitcode else 1)
        except KeyboardInterrupt:
            # Ctrl-C: what was written stays (sweeps write whole points; training writes whole checkpoints).
            print(f"Interrupted: what was written so far is kept; {INTERRUPTED_HINT}", file=sys.stderr, flush=True)
            sys.exit(130)

    app.run(main_on_every_core, argv=argv, flags_parser=parse_flags_one_line)
