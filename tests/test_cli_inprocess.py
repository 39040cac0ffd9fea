"""tests/cli_inprocess.py, which runs commands in the test process: commands whose absl flags clash run one after
the other, and the process is left as it was (flags, imported command modules, working directory, environment,
logging); exit statuses and stderr are those of a process."""

from __future__ import annotations

import logging
import os
import sys

import cli_inprocess
from absl import flags


def _process_state():
    fv = flags.FLAGS
    root = logging.getLogger()
    commands = {name: module for name, module in sys.modules.items()
                if name.startswith(cli_inprocess.COMMAND_PACKAGES)}
    return (sorted(fv), {name: fv[name] for name in fv}, fv.is_parsed(), commands, os.getcwd(), dict(os.environ),
            list(sys.argv), root.level, list(root.handlers))


def test_clashing_commands_run_in_turn_and_leave_the_process_as_it_was(tmp_path):
    from prada_jax.cli import bench  # a command module imported the usual way: its flags stay registered

    def commands():
        train = cli_inprocess.run("prada_jax.cli.train", "--epochs=0", f"--ckpt_dir={tmp_path}")
        assert (train.returncode, train.stdout, train.stderr) == (1, "", "FATAL --epochs must be >= 1, got 0\n")
        # prada-sweep defines --seed, --datasets, --ckpt_dir too.
        sweep = cli_inprocess.run("experiments/sweep.py", "--flagfile=smoke.cfg", f"--out_dir={tmp_path / 'out'}",
                                  "--warmup_ms=500")
        assert sweep.returncode == 1 and sweep.stderr.startswith("FATAL Flags error: --warmup_ms")
        assert len(sweep.stderr.splitlines()) == 1
        helped = cli_inprocess.run("prada_jax.cli.bench", "--helpshort")  # afresh, beside the imported module
        assert "--episodes_list" in helped.stdout and "Traceback" not in helped.stderr

    commands()  # once for the libraries the commands import (orbax defines absl flags of its own)
    before = _process_state()
    commands()
    assert _process_state() == before
    assert sys.modules["prada_jax.cli.bench"] is bench and sys.modules["prada_jax.cli"].bench is bench
    assert flags.FLAGS.find_module_defining_flag("episodes_list") == "prada_jax.cli.bench"
    assert not (tmp_path / "out").exists()


def test_exit_messages_and_uncaught_exceptions_are_a_process_s(tmp_path):
    script = tmp_path / "cmd.py"
    script.write_text("import os, sys\nprint('cwd', os.getcwd())\nprint('env', os.environ.get('CMD_TEST'))\n"
                      "if sys.argv[1] == 'exit':\n    sys.exit('FATAL no good')\n"
                      "if sys.argv[1] == 'code':\n    sys.exit(3)\n"
                      "raise ValueError('boom')\n")
    done = cli_inprocess.run(str(script), "exit", cwd=tmp_path, env={"CMD_TEST": "x"})
    assert (done.returncode, done.stderr) == (1, "FATAL no good\n")
    assert done.stdout == f"cwd {tmp_path}\nenv x\n" and "CMD_TEST" not in os.environ
    assert cli_inprocess.run(str(script), "code").returncode == 3
    raised = cli_inprocess.run(str(script), "raise")
    assert raised.returncode == 1 and raised.stderr.startswith("Traceback") and "ValueError: boom" in raised.stderr
