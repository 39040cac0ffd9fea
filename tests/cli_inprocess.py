"""Run a command of the repository in the test process, as `python -m <module> <args>` (or `python <script.py>
<args>`) would in a fresh one, and return what that process would have: a CompletedProcess with the exit status,
stdout and stderr.

A fresh Python process costs about 2 s of imports (JAX, the package) before the command does anything, and a test
that only checks how a command answers its flags and files (one FATAL line, nothing written) or a short run has
nothing to gain from it. Every console script keeps tests that start a real process (tests/test_packaging.py
runs the installed scripts; the sweep, training, figure and benchmark commands have end-to-end process tests), so
what only a process shows (the interpreter printing sys.exit's message, the import path of `python -m`) stays
covered.

What a fresh process has and this one provides for the command's run, then puts back:
- absl's one set of flags (absl.flags.FLAGS): the commands define flags of the same names (--seed, --datasets, ...)
  at import, so the flags that the package, experiments/ and studies/ defined are set aside, the command's modules
  are executed afresh (their flags defined anew), and afterwards the flags and modules are as they were, unparsed.
- JAX's devices, fixed in this process once JAX ran: XLA_FLAGS names the device count this process has (what
  `prada_jax.sharding.use_cpu_cores` reads first), so `--cpu_devices` is checked but does not try to change them.
- `sys.exit("message")`: the message is written to stderr and the status is 1; an uncaught exception is a
  traceback on stderr and status 1 (as the interpreter does at exit).
- absl's logging handler (installed by the first app.run in a process) writes to the captured stderr.
- the working directory (the repository root unless `cwd` is given) and the environment (`env` entries added).

absl has no public way to set flags aside or to rerun app.run's first-run set-up: this reaches into FlagValues'
registries and app.run's once-per-process markers (absl-py 2.x); tests/test_cli_inprocess.py fails if they change.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import runpy
import subprocess
import sys
import traceback

from absl import app, flags
from absl import logging as absl_logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Where the commands live: their modules define absl flags at import and are executed afresh for each run.
COMMAND_PACKAGES = ("prada_jax.cli.", "experiments.", "studies.")
# Flags defined once per process by a module that stays imported (shared by every command).
SHARED_FLAG_MODULES = ("prada_jax.cli_support",)
# The flags the first app.run of a process defines (--help, --helpshort, ...): defined once, here, so that a run
# leaves the flags as it found them.
app.define_help_flags()
_FLAG_STATE = ("__flags", "__hiddenflags", "__flags_by_module", "__flags_by_module_id", "__key_flags_by_module")


def _command_module(module: str) -> bool:
    """Whether flags defined by `module` are a command's: the package's, experiments/, studies/, or a script run as
    __main__ (absl names it by its path). Not absl's, another library's or SHARED_FLAG_MODULES'."""
    return module not in SHARED_FLAG_MODULES and (
        module.split(".")[0] in ("prada_jax", "experiments", "studies", "__main__") or module.endswith(".py")
        or os.sep in module)


def _command_flag(fv: flags.FlagValues, name: str) -> bool:
    return _command_module(fv.find_module_defining_flag(name) or "")


def _flag_state(fv: flags.FlagValues) -> dict:
    """Copies of the registries of FlagValues: its flags, and its flags by defining module and key flags."""
    state = {}
    for key in _FLAG_STATE:
        value = fv.__dict__[key]
        state[key] = {k: list(v) for k, v in value.items()} if "_by_module" in key else value.copy()
    return state


def _restore_command_flags(fv: flags.FlagValues, saved: dict) -> None:
    """The commands' flags as in `saved`; other flags defined meanwhile (by a library the command imported) stay."""
    now = _flag_state(fv)
    command_flags = {id(flag) for module, entries in now["__flags_by_module"].items() if _command_module(module)
                     for flag in entries}
    for key in _FLAG_STATE:
        if key == "__flags":
            fv.__dict__[key] = {**saved[key], **{name: flag for name, flag in now[key].items()
                                                 if id(flag) not in command_flags and name not in saved[key]}}
        elif "_by_module" in key:
            fv.__dict__[key] = {**saved[key], **{
                module: entries for module, entries in now[key].items() if module not in saved[key]
                and not _command_module(str(module)) and not any(id(flag) in command_flags for flag in entries)}}
        else:
            fv.__dict__[key] = saved[key]


def _unbind(name: str) -> None:
    """Module `name` out of sys.modules and out of its package's attributes (where `from package import name` looks
    first)."""
    module = sys.modules.pop(name)
    parent, _, child = name.rpartition(".")
    if getattr(sys.modules.get(parent), child, None) is module:
        delattr(sys.modules[parent], child)


@contextlib.contextmanager
def _fresh_command_modules():
    """The command modules (COMMAND_PACKAGES) out of sys.modules while a command runs, so that it imports them
    afresh; afterwards the modules (and their packages' attributes) are those of before."""
    before = {name: module for name, module in sys.modules.items() if name.startswith(COMMAND_PACKAGES)}
    for name in before:
        _unbind(name)
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n.startswith(COMMAND_PACKAGES)]:
            _unbind(name)
        sys.modules.update(before)
        for name, module in before.items():
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, module)


def _unparse(fv: flags.FlagValues) -> None:
    """fv.unparse_flags() without the effect of its logging.info line on a root logger with no handler
    (logging.basicConfig: a handler on the real stderr for the rest of the process)."""
    root, null = logging.getLogger(), logging.NullHandler()
    root.addHandler(null)
    try:
        fv.unparse_flags()
    finally:
        root.removeHandler(null)


def _device_count_flags(xla_flags: str) -> str:
    """XLA_FLAGS with this process's CPU device count (JAX's devices cannot change once it ran)."""
    import jax

    kept = [f for f in xla_flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + [f"--xla_force_host_platform_device_count={jax.local_device_count()}"])


def run(command: str, *args: str, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <command> <args>` (a dotted module) or `python <command> <args>` (a .py path, relative to the
    repository root) in this process, in `cwd` (default: the repository root) with `env` added to os.environ."""
    fv = flags.FLAGS
    saved_flags, was_parsed = _flag_state(fv), fv.is_parsed()
    handler = absl_logging.get_absl_handler()
    root, absl_logger = logging.getLogger(), logging.getLogger("absl")
    saved_logging = (root.level, list(root.handlers), absl_logger.level, handler.python_handler.stream)
    # absl.app.run initialises once per process (its logging handler, verbosity INFO): as a fresh process's first.
    saved_app_init = (app._run_init.done, app._register_and_parse_flags_with_usage.done)
    saved_argv, saved_cwd, saved_env = list(sys.argv), os.getcwd(), dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    status = 0
    try:
        for name in [n for n in list(fv) if _command_flag(fv, n)]:
            delattr(fv, name)
        _unparse(fv)
        app._run_init.done = app._register_and_parse_flags_with_usage.done = False
        os.environ.update(env or {})
        os.environ["XLA_FLAGS"] = _device_count_flags(os.environ.get("XLA_FLAGS", ""))
        os.chdir(REPO_ROOT if cwd is None else cwd)
        handler.python_handler.stream = err
        with _fresh_command_modules(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if command.endswith(".py"):
                    path = str(REPO_ROOT / command)
                    sys.argv = [path, *args]
                    runpy.run_path(path, run_name="__main__")
                else:
                    sys.argv = [command, *args]
                    runpy.run_module(command, run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    status = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    status = 1
            except Exception:  # what the interpreter prints for an uncaught exception
                traceback.print_exc()
                status = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.setLevel(saved_logging[0])
        root.handlers[:] = saved_logging[1]
        absl_logger.setLevel(saved_logging[2])
        handler.python_handler.stream = saved_logging[3]
        app._run_init.done, app._register_and_parse_flags_with_usage.done = saved_app_init
        _unparse(fv)
        _restore_command_flags(fv, saved_flags)
        if was_parsed:
            fv.mark_as_parsed()
    return subprocess.CompletedProcess([command, *args], status, out.getvalue(), err.getvalue())
