"""Bad input to the sweep (audit items F1, F2, F6, F9, F10, F11): each is refused with one line naming the flag or
file, before any work and before anything is written; nothing is silently reduced, clipped or duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cli_inprocess
import pytest

from prada_jax import cli_support, sweep
from prada_jax import constants as C
from prada_jax.sim import policies as P
from prada_jax.traces import load_trace
from tests.conftest import REPO_ROOT, TEST_XLA_FLAGS
from tests.test_fault_injection import _write_table
from tests.test_sweep import FakeRunner, spec_for, traces_dir  # noqa: F401 (fixture)


def _flag_error(traces_dir, **override) -> sweep.SweepConfigError:
    with pytest.raises(sweep.SweepConfigError) as info:
        spec_for(traces_dir, **override)
    return info.value


# ----------------------------------------------------------------------------------------------------------
# F1: --seed outside [0, 2**32) would repeat or crash jax.random.PRNGKey
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**32, 2**32 + 1, 2**63, 2**64])
def test_seed_outside_the_distinct_key_range_is_a_flag_error(traces_dir, seed):
    err = _flag_error(traces_dir, seed=seed)
    assert err.flag == "seed" and "2**32" in str(err) and "\n" not in str(err)


def test_every_accepted_seed_has_its_own_episode_keys(traces_dir):
    import numpy as np

    from prada_jax.sim.run import episode_keys

    assert spec_for(traces_dir, seed=C.SEED_LIMIT - 1).seed == 2**32 - 1
    keys = [np.asarray(episode_keys(2, s)) for s in (0, 1, 2**31, C.SEED_LIMIT - 1)]
    assert len({k.tobytes() for k in keys}) == len(keys)
    # Just past the limit the raw keys repeat seed 0's: why the limit is there, and why episode_keys refuses it.
    import jax

    from prada_jax.sim import SimParamsError

    assert np.array_equal(np.asarray(jax.random.split(jax.random.PRNGKey(C.SEED_LIMIT), 2)), keys[0])
    with pytest.raises(SimParamsError, match=r"seed: .*2\*\*32"):
        episode_keys(2, C.SEED_LIMIT)


# ----------------------------------------------------------------------------------------------------------
# F2: a changed-flags refusal comes before any first-use training
# ----------------------------------------------------------------------------------------------------------


def test_changed_flags_are_refused_before_a_missing_table_is_trained(traces_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    sweep.run_sweep(spec_for(traces_dir, ckpt_dir=str(tmp_path / "ckpt_a")), out, run_point=FakeRunner())
    run_before = open(os.path.join(out, sweep.RUN_JSON)).read()

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained a table for a sweep its --out_dir refuses")

    monkeypatch.setattr(sweep.runner, "train_policy_table", must_not_train)
    changed = spec_for(traces_dir, ckpt_dir=str(tmp_path / "empty_ckpt"), episodes=5)
    with pytest.raises(sweep.SweepStateError, match="different flags.*episodes: 4 -> 5"):
        sweep.run_sweep(changed, out)  # the real runner: validate inputs, check out_dir, then train
    assert open(os.path.join(out, sweep.RUN_JSON)).read() == run_before


def test_table_trained_on_first_use_is_compared_after_training(traces_dir, tmp_path, monkeypatch):
    """Before training, a missing table matches what run.json recorded; after it, its real hash is compared."""
    spec = spec_for(traces_dir, ckpt_dir=str(tmp_path / "ckpt"))
    for d in spec.datasets:
        _write_table(spec, d, P.all_llm_table(load_trace(spec.trace_path(d))))
    table_path = sweep.learned_table_paths(spec.ckpt_dir, "gsm8k")[0]
    saved = open(table_path, "rb").read()
    monkeypatch.setattr(sweep.runner, "simulate_point", FakeRunner())  # the "real" runner path, without JAX
    out = str(tmp_path / "out")
    sweep.run_sweep(spec, out)
    trained = []

    def retrain(table_bytes):
        def train(dataset, *args, **kwargs):
            trained.append(dataset)
            open(table_path, "wb").write(table_bytes)
        return train

    os.remove(table_path)
    monkeypatch.setattr(sweep.runner, "train_policy_table", retrain(saved))
    store = sweep.run_sweep(spec, out)  # the same table again: the sweep resumes (nothing left to do)
    assert trained == ["gsm8k"] and len(store.rows) == len(spec.points()) * spec.grid_size
    os.remove(table_path)
    other = tmp_path / "other.npz"
    _write_table(spec, "gsm8k", P.all_slm_table(load_trace(spec.trace_path("gsm8k"))))
    os.replace(table_path, other)
    monkeypatch.setattr(sweep.runner, "train_policy_table", retrain(other.read_bytes()))
    with pytest.raises(sweep.SweepStateError, match="table_sha256.gsm8k"):
        sweep.run_sweep(spec, out)
    assert trained == ["gsm8k", "gsm8k"]


# ----------------------------------------------------------------------------------------------------------
# F6: an --out_dir that cannot be a folder; a flagfile that is not text
# ----------------------------------------------------------------------------------------------------------


def test_out_dir_that_is_a_file_or_under_one_is_named(traces_dir, tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me\n")
    for out in (a_file, a_file / "sub"):
        with pytest.raises(sweep.SweepStateError, match=f"^--out_dir={out}: .*not a folder$"):
            sweep.run_sweep(spec_for(traces_dir), str(out), run_point=FakeRunner())
    assert a_file.read_text() == "keep me\n"


def test_non_utf8_flagfile_is_named_also_when_nested(tmp_path):
    binary = tmp_path / "binary.cfg"
    binary.write_bytes(b"\x00\x80\xff not text")
    outer = tmp_path / "outer.cfg"
    outer.write_text(f"--episodes=2\n# a comment\n--flagfile={binary}\n")
    good = tmp_path / "good.cfg"
    good.write_text("--episodes=2\n")
    for argv in (["prog", f"--flagfile={binary}"], ["prog", "--flagfile", str(outer)]):
        message = cli_support.undecodable_flagfile(argv)
        assert message.startswith(f"--flagfile={binary}: not UTF-8 text (byte 0x80 at offset 1)")
    assert cli_support.undecodable_flagfile(["prog", f"--flagfile={good}", "--flagfile=/nonexistent"]) is None


# ----------------------------------------------------------------------------------------------------------
# F9: every validation error of every CLI (cli_support.run_main) is ONE line, without the usage text
# ----------------------------------------------------------------------------------------------------------

_TINY_CLI = textwrap.dedent('''
    """A long module docstring that absl's usage text would print first.

    Line two of it.
    """
    import sys
    from absl import app
    from prada_jax import cli_support

    def main(argv):
        if "fail" in argv:
            raise app.UsageError("--thing: must be > 0, got -1")
        if "interrupt" in argv:
            raise KeyboardInterrupt
        print("ran main")

    cli_support.run_main(main, __doc__)
''')


def test_run_main_errors_are_one_fatal_line(tmp_path):
    """The script runs in this process (tests/cli_inprocess.py), but for --cpu_devices beyond the cores: a real
    process, whose JAX devices that flag sets."""
    script = tmp_path / "tiny_cli.py"
    script.write_text(_TINY_CLI)
    binary = tmp_path / "binary.cfg"
    binary.write_bytes(b"--episodes=2\n\xff\xfe\n")
    twice = tmp_path / "twice.cfg"
    twice.write_text("--cpu_devices=1\n# a comment\n--cpu_devices=2\n")

    def run(*args):
        return cli_inprocess.run(str(script), *args, cwd=tmp_path)

    expected = {
        ("fail",): "FATAL --thing: must be > 0, got -1",
        ("--cpu_devices=-1",): "FATAL Flags error: --cpu_devices must be >= 0",
        ("--no_such_flag=1",): "FATAL Flags parsing error: Unknown command line flag 'no_such_flag'",
        ("--cpu_devices=two",): "FATAL Flags parsing error: flag --cpu_devices=two",
        (f"--flagfile={binary}",): f"FATAL Flags parsing error: --flagfile={binary}: not UTF-8 text",
        (f"--flagfile={twice}",): f"FATAL Flags parsing error: --flagfile={twice} sets --cpu_devices twice (line 1: "
                                  "--cpu_devices=1; line 3: --cpu_devices=2)",
    }
    for args, start in expected.items():
        proc = run(*args)
        assert proc.returncode == 1, (args, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), (args, proc.stderr[-2000:])
        assert "docstring" not in proc.stdout + proc.stderr
    # Ctrl-C: one line saying how to resume, exit status 130 (no KeyboardInterrupt traceback).
    proc = run("interrupt")
    assert proc.returncode == 130 and proc.stderr.strip().splitlines() == [
        f"Interrupted: what was written so far is kept; {cli_support.INTERRUPTED_HINT}"], proc.stderr[-2000:]
    # More devices than cores: runs, with one warning line that names the flag.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(script), f"--cpu_devices={cores + 1}"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "ran main" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "--cpu_devices" in line]
    assert len(warnings) == 1 and f"exceeds the {cores} cores" in warnings[0]


def test_a_flag_set_twice_in_one_flagfile_names_both_lines(tmp_path):
    from absl import flags

    fv = flags.FlagValues()
    flags.DEFINE_integer("episodes", 2, "", flag_values=fv)
    flags.DEFINE_bool("plots", True, "", flag_values=fv)
    flags.DEFINE_multi_string("grid", [], "", flag_values=fv)
    inner = tmp_path / "inner.cfg"
    inner.write_text("--plots\n--grid=beta=1,2\n--grid=snr_db=1,2\n// c\n--noplots\n")
    outer = tmp_path / "outer.cfg"
    outer.write_text(f"--episodes=3\n--flagfile={inner}\n")
    assert cli_support.repeated_flagfile_flag([f"--flagfile={outer}"], fv) == (
        f"--flagfile={inner} sets --plots twice (line 1: --plots; line 5: --noplots); set each flag once in a "
        "flagfile (a flag on the command line after --flagfile overrides it)")
    inner.write_text("--grid=beta=1,2\n--grid=snr_db=1,2\n")  # a repeatable flag may repeat
    assert cli_support.repeated_flagfile_flag([f"--flagfile={outer}", "--episodes=5"], fv) is None
    outer.write_text("--episodes=3\n\n --episodes=4\n")
    assert "sets --episodes twice (line 1: --episodes=3; line 3: --episodes=4)" in \
        cli_support.repeated_flagfile_flag(["prog", "--flagfile", str(outer)], fv)


def test_sweep_flagfile_line_without_dashes_is_one_line_and_writes_nothing(tmp_path):
    flagfile = tmp_path / "nodash.cfg"
    flagfile.write_text("--episodes=2\ndatasets=gsm8k\n")
    out = tmp_path / "out"
    proc = cli_inprocess.run("experiments/sweep.py", f"--flagfile={flagfile}", f"--out_dir={out}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("FATAL unexpected positional arguments ['datasets=gsm8k']") and "--" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------
# F10: a corrupt results.csv is named before run.json is touched
# ----------------------------------------------------------------------------------------------------------


def test_corrupt_results_csv_leaves_run_json_untouched_and_overwrite_discards_it(traces_dir, tmp_path):
    out = tmp_path / "out"
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    csv_path = out / sweep.RESULTS_CSV
    lines = csv_path.read_text().splitlines(keepends=True)
    cells = lines[3].rstrip("\n").split(",")
    cells[-2] = "zz0"  # a metric cell of row 3 that is no number
    csv_path.write_text("".join(lines[:3]) + ",".join(cells) + "\n" + "".join(lines[4:]))
    run_before = (out / sweep.RUN_JSON).read_bytes()
    for _ in range(2):  # every retry is refused the same way and leaves run.json as it was
        with pytest.raises(sweep.SweepStateError, match=f"{csv_path}: row 3"):
            sweep.run_sweep(spec, str(out), run_point=FakeRunner())
        assert (out / sweep.RUN_JSON).read_bytes() == run_before
    runner = FakeRunner()
    store = sweep.run_sweep(spec, str(out), run_point=runner, overwrite=True)
    assert runner.calls == spec.points() and len(store.rows) == len(spec.points()) * spec.grid_size
    assert len(json.loads((out / sweep.RUN_JSON).read_text())["sessions"]) == 1


def test_a_refused_result_store_releases_the_lock_it_took(traces_dir, tmp_path):
    """ResultStore without a lock takes one; when the folder is then refused, the lock is released at once (not
    when the exception is garbage-collected), so the same process can open the folder again."""
    import dataclasses

    out = tmp_path / "out"
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    changed = dataclasses.replace(spec, seed=spec.seed + 1)
    with pytest.raises(sweep.SweepStateError, match="different flags") as refused:
        sweep.ResultStore(str(out), changed)
    lock = sweep.acquire_lock(str(out))  # the refused store held it until now before the fix
    lock.release()
    del refused
    sweep.ResultStore(str(out), spec).close()


# ----------------------------------------------------------------------------------------------------------
# F11: dataset paths, values the simulator's float32 cannot tell apart or hold, a missing --traces_dir
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../traces/gsm8k", "sub/gsm8k", "..", ".hidden"])
def test_dataset_must_be_a_plain_name(traces_dir, name):
    err = _flag_error(traces_dir, datasets=[name])
    assert err.flag == "datasets" and "not a dataset name" in str(err)


def test_dataset_path_that_reaches_an_existing_trace_is_refused(traces_dir):
    other = os.path.join(os.path.dirname(traces_dir), "elsewhere")
    os.makedirs(other)
    assert _flag_error(other, datasets=[os.path.join("..", "traces", "gsm8k")]).flag == "datasets"


@pytest.mark.parametrize(
    "override, flag, match",
    [
        (dict(sweep_values=[4e7, 40000001.0]), "sweep_values", "same number in float32"),
        (dict(sweep_param="none", sweep_values=[], grid=[("beta", [1.0, 1.00000001]), ("snr_db", [1.0])]),
         "grid", "same number in float32"),
        (dict(sweep_param="arrival_rate", sweep_values=[1.0, 1.0 + 1e-9]), "sweep_values", "same number in float32"),
        (dict(sweep_values=[1e6, 1e39]), "sweep_values", "overflows float32"),
        (dict(sweep_param="none", sweep_values=[], params={"flops_llm": 1e39}), "flops_llm", "overflows float32"),
        (dict(sweep_param="none", sweep_values=[], params={"flops_llm": 1e-50}), "flops_llm",
         "0.0 in float32.*must be > 0"),
    ],
)
def test_values_the_simulator_cannot_tell_apart_or_hold_are_refused(traces_dir, override, flag, match):
    err = _flag_error(traces_dir, **override)
    assert err.flag == flag
    assert __import__("re").search(match, str(err)), str(err)


def test_values_distinct_in_float32_are_kept(traces_dir):
    spec = spec_for(traces_dir, sweep_values=[4e7, 40000004.0])  # float32 spacing at 4e7 is 4
    assert spec.sweep_values == (4e7, 40000004.0)


def test_missing_traces_dir_names_traces_dir(traces_dir, tmp_path):
    for path in (tmp_path / "nowhere", tmp_path / "a_file"):
        if path.name == "a_file":
            path.write_text("x")
        with pytest.raises(sweep.SweepConfigError) as info:
            spec_for(str(path))
        err = info.value
        assert err.flag == "traces_dir" and str(path) in str(err)


def test_trace_whose_metadata_names_another_dataset_is_reported(traces_dir, caplog):
    """Allowed (renamed or custom traces), but said: the results are labelled with the file's name."""
    spec = spec_for(traces_dir, policies=["all_slm"])
    named = {d: load_trace(spec.trace_path(d)).dataset for d in spec.datasets}
    with caplog.at_level("WARNING"):
        sweep.validate_inputs(spec)
    warned = [r.getMessage() for r in caplog.records if "its metadata names dataset" in r.getMessage()]
    assert len(warned) == sum(named[d] != d for d in spec.datasets) > 0, (named, warned)
    assert all(spec.trace_path(d) in " ".join(warned) for d in spec.datasets if named[d] != d)
