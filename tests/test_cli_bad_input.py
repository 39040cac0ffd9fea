"""Bad input to the training / figure / benchmark commands: one-line errors naming the file or flag, raised before
any work and before anything is written (audit items F3-F8). Validation functions are called directly where they
are flag-free; make_figures runs as its command (in this process, tests/cli_inprocess.py, which keeps its absl
flags apart from bench's)."""

from __future__ import annotations

import json
import os

import cli_inprocess
import numpy as np
import pytest
from conftest import REPO_ROOT

from prada_jax.cli import bench_setup
from prada_jax.learn import tables

# --------------------------------------------------------------------------------------------------------------
# F7: policy-table dtypes
# --------------------------------------------------------------------------------------------------------------


def _write_table(path, **override):
    fields = {f: np.full((3, 4), 0.5, np.float32) for f in tables.TABLE_FIELDS}
    fields.update(override)
    np.savez(path, **fields)
    return str(path)


@pytest.mark.parametrize("bad", [
    np.full((3, 4), "0.5"),  # strings: a TypeError traceback before
    np.full((3, 4), 0.5 + 0.25j, np.complex64),  # complex: the imaginary part was dropped silently
    np.ones((3, 4), np.int32),  # ints and bools were accepted as probabilities
    np.ones((3, 4), bool),
])
def test_table_fields_must_be_real_floats(tmp_path, bad):
    path = _write_table(tmp_path / "t.npz", nominate_prob=bad)
    with pytest.raises(tables.TableError) as err:
        tables.load_table(path)
    message = str(err.value)
    assert message.startswith(path) and "'nominate_prob'" in message and str(bad.dtype) in message
    assert "\n" not in message


def test_float64_tables_load_as_float32_but_not_beyond_its_range(tmp_path):
    table = tables.load_table(_write_table(tmp_path / "ok.npz", advantage=np.full((3, 4), 0.25, np.float64)))
    assert table.advantage.dtype == np.float32 and float(table.advantage[0, 0]) == 0.25
    path = _write_table(tmp_path / "big.npz", advantage=np.full((3, 4), 1e300, np.float64))
    with pytest.raises(tables.TableError, match="big.npz: field 'advantage' has 12 values beyond the float32 range"):
        tables.load_table(path)


# --------------------------------------------------------------------------------------------------------------
# F4 / F5: training records (summary.json merged into by prada-train; eval.json read by prada-figures)
# --------------------------------------------------------------------------------------------------------------


def test_training_summary_is_checked_before_a_run_merges_into_it(tmp_path):
    path = tmp_path / "summary.json"
    assert tables.read_training_summary(str(path)) == {}
    cases = [("{bad", "unreadable JSON"), ("[1]", "a JSON object expected"),
             ('{"results": [1]}', "'results' must be an object"),
             ('{"results": {"gsm8k": {"beta": 1}}}', r"results\['gsm8k'\] must be an object with a 'checks'")]
    for text, needle in cases:
        path.write_text(text)
        with pytest.raises(tables.RecordError, match=needle) as err:
            tables.read_training_summary(str(path))
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    path.write_text('{"results": {"gsm8k": {"checks": {"a": true}}}}')
    assert tables.read_training_summary(str(path))["results"]["gsm8k"]["checks"] == {"a": True}


def test_eval_record_is_checked_for_what_figure_4_reads(tmp_path):
    shipped = os.path.join(REPO_ROOT, "checkpoints", "gsm8k", "eval.json")
    if not os.path.exists(shipped):
        pytest.skip("no shipped checkpoints/gsm8k/eval.json")
    good = json.load(open(shipped, encoding="utf-8"))
    assert tables.read_eval_record(shipped, single_user=True)["beta"] == good["beta"]
    path = tmp_path / "eval.json"
    cases = [
        ("{garbled", "unreadable JSON"),
        (dict(good, beta="10"), "'beta' must be a finite number"),
        (dict(good, single_user=dict(good["single_user"], pi_theta={"accuracy": 0.9})),
         r"single_user.pi_theta.tflop_per_task must be a finite number, got None"),
        (dict(good, frontier=[{"accuracy": float("nan"), "tflop_per_task": 1.0}]), r"frontier\[0\].accuracy"),
    ]
    for content, needle in cases:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(tables.RecordError, match=needle) as err:
            tables.read_eval_record(str(path), single_user=True)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------------------
# F8: prada-bench flags
# --------------------------------------------------------------------------------------------------------------

BENCH_FLAGS = {
    "horizon_ms": 1000, "warmup_ms": 100, "max_users": 64, "users_episodes": 256, "repeats": 1, "seed": 0,
    "oracle_episodes": 2, "oracle_horizon_ms": None, "profile": True, "profile_episodes": 256,
    "profile_horizon_ms": 200, "sweep_check": False, "sweep_episodes": 256, "sweep_horizon_ms": 10000,
    "sweep_warmup_ms": 1000, "sweep_full_horizon_ms": 10000, "sweep_target_s": 300.0,
    "sweep_datasets": ["gsm8k"], "sweep_values": ["1e6"], "out": os.path.join("results", "bench.json"),
}


@pytest.mark.parametrize("override,flag", [
    ({"horizon_ms": -5}, "--horizon_ms"), ({"max_users": 0}, "--max_users"), ({"repeats": 0}, "--repeats"),
    ({"seed": -3}, "--seed"), ({"seed": 2**32}, "--seed"), ({"warmup_ms": 1000}, "--warmup_ms"),
    ({"users_episodes": 0}, "--users_episodes"), ({"oracle_episodes": -1}, "--oracle_episodes"),
    ({"oracle_horizon_ms": 0}, "--oracle_horizon_ms"), ({"profile_horizon_ms": 0}, "--profile_horizon_ms"),
    ({"sweep_check": True, "sweep_values": ["1e6", "-1"]}, "--sweep_values"),
    ({"sweep_check": True, "sweep_warmup_ms": 10000}, "--sweep_warmup_ms"),
])
def test_bench_flags_are_checked_before_any_output(override, flag):
    with pytest.raises(ValueError) as err:
        bench_setup.check_flags(dict(BENCH_FLAGS, **override))
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)


def test_bench_flag_defaults_and_limits_pass(tmp_path):
    bench_setup.check_flags(BENCH_FLAGS)
    bench_setup.check_flags(dict(BENCH_FLAGS, seed=2**32 - 1, profile=False, profile_horizon_ms=0))
    with pytest.raises(ValueError, match="--out=.* is a directory"):
        bench_setup.check_flags(dict(BENCH_FLAGS, out=str(tmp_path)))


# --------------------------------------------------------------------------------------------------------------
# F5: make_figures
# --------------------------------------------------------------------------------------------------------------


def _nan_trace_dir(tmp_path):
    src = os.path.join(REPO_ROOT, "traces", "gsm8k.npz")
    if not os.path.exists(src):
        pytest.skip("no traces/gsm8k.npz")
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["slm_step_success"] = arrays["slm_step_success"].copy()
    arrays["slm_step_success"][0, 0] = np.nan
    out = tmp_path / "traces"
    out.mkdir()
    np.savez(out / "gsm8k.npz", **arrays)
    return out


@pytest.mark.parametrize("case", ["provenance", "results_json", "nan_trace", "results_dir_file"])
def test_make_figures_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    figures = tmp_path / "figures"
    args = ["--only=capacity", f"--results_dir={tmp_path / 'results'}", f"--figures_dir={figures}"]
    if case == "provenance":  # a damaged provenance.json was overwritten with {} before
        figures.mkdir()
        (figures / "provenance.json").write_text("{bad")
        args.append("--plot_only")
        needle = f"--figures_dir={figures}: {figures / 'provenance.json'}: unreadable JSON"
    elif case == "results_json":
        (tmp_path / "results" / "capacity").mkdir(parents=True)
        (tmp_path / "results" / "capacity" / "results.json").write_text("{bad")
        args.append("--plot_only")
        needle = f"{tmp_path / 'results' / 'capacity' / 'results.json'}: unreadable sweep results"
    elif case == "results_dir_file":  # blamed --out_dir, a flag make_figures does not have
        (tmp_path / "results").write_text("a file")
        needle = f"FATAL --results_dir={tmp_path / 'results'}: "
    else:  # a TraceError was a traceback
        args += [f"--traces_dir={_nan_trace_dir(tmp_path)}", "--episodes=2", "--horizon_ms=50", "--warmup_ms=10"]
        needle = "gsm8k.npz: field 'slm_step_success': contains NaN"
    proc = cli_inprocess.run("experiments/make_figures.py", *args)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    if case == "provenance":
        assert (figures / "provenance.json").read_text() == "{bad"
        assert os.listdir(figures) == ["provenance.json"]
    else:
        assert not figures.exists()
    if case == "nan_trace":
        assert not (tmp_path / "results").exists()
    assert "--out_dir" not in proc.stderr
