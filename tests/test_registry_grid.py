"""The one registry (prada_jax.sim.registry), multi-parameter --grid sweeps, labelled summaries and the summary
table printed after a sweep."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import cli_inprocess
import jax
import numpy as np
import pytest
from absl import flags

from prada_jax import plots, sim, sweep
from prada_jax.sim import registry
from prada_jax.traces import pack_traces
from tests.conftest import REPO_ROOT, make_tiny_trace
from tests.test_sweep import FakeRunner, read_csv, spec_for, traces_dir  # noqa: F401 (traces_dir: the same fixture)

# ----------------------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------------------


def test_every_registered_policy_and_parameter_is_known_to_the_sweep_bench_and_figures(traces_dir):
    assert list(sweep.POLICIES) == list(registry.POLICIES) == list(sweep.POLICY_SPECS)
    assert list(sweep.SYSTEM_PARAMS) == list(registry.PARAMS)
    from prada_jax.cli import bench

    for name, policy in registry.POLICIES.items():
        assert policy.scheduler in sim.SCHEDULERS and policy.table in registry.TABLES
        assert name in bench.BENCH_POLICIES and name in plots.POLICY_LABELS and plots.label(name)
        spec = spec_for(traces_dir, policies=[name], sweep_param="none", sweep_values=[])
        assert spec.policies == (name,)
    trace = make_tiny_trace()
    for name in registry.POLICIES:  # the benchmark builds every table without a checkpoint
        table = bench.build_table(trace, name)
        assert np.shape(table.nominate_prob) == np.shape(trace.step_mask)
    for name, param in registry.PARAMS.items():
        assert sweep.SYSTEM_PARAMS[name] == (param.kind, param.default)
        assert name in plots.PARAM_LABELS and param.help
        value = param.default if param.default != 0 else 1.0
        spec = spec_for(traces_dir, sweep_param=name, sweep_values=[value], max_users=16)
        assert spec.grid()[0][name] == param.kind(value)
    fv = flags.FlagValues()
    sweep.define_flags(fv)
    fv(["prog"])
    for name, param in registry.PARAMS.items():
        assert fv[name].default == param.default and fv[name].help == param.help


def test_duplicate_and_dangling_registrations_are_errors():
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_policy("prada", table="learned", scheduler="prada")
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_param("beta", float, 1.0, "beta")
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_table("router", lambda trace, ctx: None)
    with pytest.raises(registry.RegistryError, match="unknown scheduler"):
        registry.register_policy("x_test", table="all_slm", scheduler="no_such_scheduler")
    with pytest.raises(registry.RegistryError, match="unknown table kind"):
        registry.register_policy("x_test", table="no_such_table", scheduler="prada")
    with pytest.raises(registry.RegistryError, match="not a SimParams field"):
        registry.register_param("no_such_field", float, 1.0, "nothing")
    assert "x_test" not in registry.POLICIES


def test_one_registration_makes_a_policy_available_everywhere(traces_dir):
    name = "all_slm_fifo_test"
    try:
        registry.register_policy(name, table="all_slm", scheduler="fifo", description="test policy")
        assert name in sweep.POLICIES and name in plots.POLICY_LABELS and plots.label(name) == name  # the default
        plots.register_policy_look(name, "All SLM (FIFO)")
        assert plots.label(name) == "All SLM (FIFO)" and plots.POLICY_STYLES[name] == plots.DEFAULT_STYLE
        spec = spec_for(traces_dir, policies=[name], datasets=["gsm8k"], sweep_values=[1e6], episodes=2,
                        horizon_ms=30, warmup_ms=5)
        rows = sweep.simulate_point(spec, "gsm8k", name)
        assert rows[0]["policy"] == name and rows[0]["offload_fraction_mean"] == 0.0
    finally:
        registry.POLICIES.pop(name, None)
        plots._POLICY_LOOKS.pop(name, None)
    assert name not in sweep.POLICIES and name not in plots.POLICY_LABELS


def test_check_param_uses_the_registered_check():
    assert sweep.check_param("server_capacity", 3.0) == 3
    with pytest.raises(sweep.SweepConfigError, match="--grid: server_capacity must be >= 1"):
        sweep.check_param("server_capacity", 0, flag="grid")
    with pytest.raises(sweep.SweepConfigError, match="--bandwidth_bps: bandwidth_bps must be > 0"):
        sweep.check_param("bandwidth_bps", -1.0)
    with pytest.raises(sweep.SweepConfigError, match="finite"):
        sweep.check_param("snr_db", float("nan"))


# ----------------------------------------------------------------------------------------------------------
# --grid
# ----------------------------------------------------------------------------------------------------------


def test_parse_grid_and_the_cartesian_product(traces_dir):
    axes = sweep.parse_grid(["server_capacity=1,3,9", "bandwidth_bps=1e6, 4e7"])
    assert axes == (("server_capacity", (1.0, 3.0, 9.0)), ("bandwidth_bps", (1e6, 4e7)))
    spec = spec_for(traces_dir, sweep_param="none", sweep_values=[], grid=axes)
    assert spec.sweep_param == sweep.GRID and spec.grid_size == 6
    assert spec.point_columns() == ("server_capacity", "bandwidth_bps")
    assert spec.point_keys()[:3] == [(1.0, 1e6), (1.0, 4e7), (3.0, 1e6)]
    grid = spec.grid()
    assert [(g["server_capacity"], g["bandwidth_bps"]) for g in grid][-1] == (9, 4e7)
    assert isinstance(grid[0]["server_capacity"], int) and spec.params["server_capacity"] is None
    assert spec.to_config()["grid_axes"] == [["server_capacity", [1.0, 3.0, 9.0]], ["bandwidth_bps", [1e6, 4e7]]]
    # One axis is the same sweep as --sweep_param (same rows and fingerprint).
    one = spec_for(traces_dir, sweep_param="none", sweep_values=[], grid=[("bandwidth_bps", (1e5, 1e6, 4e7))])
    assert one == spec_for(traces_dir) and "grid_axes" not in one.to_config()


@pytest.mark.parametrize(
    "items, kw, needle",
    [
        (["bogus=1,2"], {}, "--grid: unknown parameter 'bogus'"),
        (["beta=1,2", "beta=3"], {}, "--grid: parameter 'beta' given twice"),
        (["beta"], {}, "--grid: 'beta' is not name=v1,v2"),
        (["beta="], {}, "--grid: beta: no values"),
        (["beta=1,x"], {}, "--grid: 'x' is not a number"),
        (["server_capacity=1,2.5", "beta=1,2"], {}, "--grid: server_capacity must be an integer"),
        (["beta=-1,2", "snr_db=1,2"], {}, "--grid: beta must be >= 0"),
        (["beta=1,1", "snr_db=1,2"], {}, "--grid: beta: duplicate values"),
        (["server_capacity=1,30", "beta=1,2"], {}, "--grid: server capacity M = 30 exceeds --max_users"),
        (["beta=1,2", "snr_db=1,2"], dict(sweep_param="bandwidth_bps"), "--grid: cannot be combined"),
        (["beta=1,2", "snr_db=1,2"], dict(explicitly_set=["beta"]), "--beta: is set but --grid sweeps beta"),
    ],
)
def test_grid_validation_names_the_flag(traces_dir, items, kw, needle):
    args = dict(sweep_param="none", sweep_values=[])
    args.update(kw)
    if args["sweep_param"] != "none":
        args["sweep_values"] = [1e6]
    with pytest.raises(sweep.SweepConfigError) as err:
        spec_for(traces_dir, grid=sweep.parse_grid(items), **args)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_grid_sweep_rows_and_resume_after_a_kill(traces_dir, tmp_path):
    out = str(tmp_path / "out")
    spec = spec_for(traces_dir, sweep_param="none", sweep_values=[], policies=["all_slm", "prada"],
                    grid=sweep.parse_grid(["server_capacity=1,3", "bandwidth_bps=1e6,4e7"]))
    dying = FakeRunner(fail_after=3)
    with pytest.raises(RuntimeError, match="injected"):
        sweep.run_sweep(spec, out, run_point=dying)
    rows = read_csv(f"{out}/results.csv")
    assert len(rows) == 3 * 4
    # A kill in the middle of the next point's write: two complete rows of its four, then a partial line.
    header = list(rows[0])
    partial = FakeRunner()(spec, "mmlu_stem", "prada")[:2]
    with open(f"{out}/results.csv", "a", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for r in partial:
            writer.writerow(["" if r[c] is None else sweep.format_value(r[c]) for c in header])
        handle.write("mmlu_stem,prada,grid,,4,1.0,1000")
    runner = FakeRunner()
    store = sweep.run_sweep(spec, out, run_point=runner)
    assert runner.calls == [("mmlu_stem", "prada")]
    rows = read_csv(f"{out}/results.csv")
    assert len(rows) == 16
    header = list(rows[0])
    assert header[:7] == ["dataset", "policy", "sweep_param", "sweep_value", "episodes", "server_capacity",
                          "bandwidth_bps"]
    keys = [(r["dataset"], r["policy"], float(r["server_capacity"]), float(r["bandwidth_bps"])) for r in rows]
    assert len(set(keys)) == 16 and all(r["sweep_param"] == "grid" and r["sweep_value"] == "" for r in rows)
    assert {k[2:] for k in keys} == {(1.0, 1e6), (1.0, 4e7), (3.0, 1e6), (3.0, 4e7)}
    assert len(store.rows) == 16
    _, json_rows = sweep.read_results(out)
    assert (json_rows[6]["server_capacity"], json_rows[6]["bandwidth_bps"]) == (3.0, 1e6)
    # A restart with another grid is refused, naming only the changed entry.
    other = spec_for(traces_dir, sweep_param="none", sweep_values=[], policies=["all_slm", "prada"],
                     grid=sweep.parse_grid(["server_capacity=1,4", "bandwidth_bps=1e6,4e7"]))
    with pytest.raises(sweep.SweepStateError) as err:
        sweep.run_sweep(other, out, run_point=FakeRunner())
    assert "grid_axes" in str(err.value) and "params" not in str(err.value)
    paths = plots.sweep_figures(store.rows, str(tmp_path / "figs"))
    assert len(paths) == 2 * 2 and all(p.endswith("_accuracy_delay.png") for p in paths)


def test_changed_flags_refusal_names_only_the_changed_leaves(traces_dir, tmp_path):
    out = str(tmp_path / "out")
    sweep.run_sweep(spec_for(traces_dir), out, run_point=FakeRunner())
    with pytest.raises(sweep.SweepStateError) as err:
        sweep.run_sweep(spec_for(traces_dir, params={"beta": 3.0}), out, run_point=FakeRunner())
    text = str(err.value)
    assert "params.beta: 10.0 -> 3.0" in text and "arrival_rate" not in text and text.count("bandwidth") == 0


def test_eta_leaves_compile_time_out():
    eta = sweep.Eta()
    assert "compiling" in eta.text(["a"])
    eta.record("a", 10.0)  # compiled
    assert eta.estimate(["a", "a"]) is None
    eta.record("a", 1.0)  # from the jit cache
    assert eta.estimate(["a", "a"]) == pytest.approx(2.0)
    assert eta.estimate(["a", "b"]) == pytest.approx(2.0 + 9.0)  # one more compile ahead
    assert eta.text([]) == "no points left"


# ----------------------------------------------------------------------------------------------------------
# labelled summaries and the summary table
# ----------------------------------------------------------------------------------------------------------


def test_summarize_grid_labels_each_point():
    trace = make_tiny_trace()
    table = sim.all_slm_table(trace)
    grid = sim.param_grid(server_capacity=[1, 2], bandwidth_bps=[1e6, 4e7])
    config = sim.SimConfig(num_slots=30, warmup_slots=5, max_users=8, max_servers=2, drain_slots=20)
    metrics = sim.simulate_grid(pack_traces(trace), table, grid, config, episodes=2, seed=0)
    rows = sim.summarize_grid(metrics, grid)
    assert [(r["server_capacity"], r["bandwidth_bps"]) for r in rows] == [(1, 1e6), (1, 4e7), (2, 1e6), (2, 4e7)]
    summary = sim.summarize(metrics)
    np.testing.assert_allclose([r["accuracy_mean"] for r in rows], summary["accuracy"][0])
    np.testing.assert_allclose([r["end_to_end_ms_ci95"] for r in rows], summary["end_to_end_ms"][1])
    labelled = sim.summarize_grid(metrics, [{"point": i} for i in range(4)])
    assert [r["point"] for r in labelled] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="3 point labels for 4 grid points"):
        sim.summarize_grid(metrics, [{}] * 3)
    config1 = sim.SimConfig(num_slots=30, warmup_slots=5, max_users=8, drain_slots=20)
    one = sim.simulate(pack_traces(trace), table, sim.make_params(), config1, jax.random.PRNGKey(0))
    assert len(sim.summarize_grid(jax.tree.map(lambda x: x[None], one), [{"M": 9}])) == 1


def test_summary_table_lists_every_row_with_ci(traces_dir, tmp_path):
    spec = spec_for(traces_dir, sweep_param="none", sweep_values=[], datasets=["gsm8k"], policies=["all_slm"],
                    grid=sweep.parse_grid(["server_capacity=1,3", "bandwidth_bps=1e6,4e7"]))
    store = sweep.run_sweep(spec, str(tmp_path / "out"), run_point=FakeRunner())
    text = sweep.summary_table(store.rows)
    lines = text.splitlines()
    assert "accuracy %" in lines[0] and "end-to-end ms" in lines[0] and "offload %" in lines[0]
    assert len(lines) == 2 + 4 + 1 and "server_capacity=3, bandwidth_bps=4e+07" in text and "±" in lines[2]
    assert "over 4 episodes" in lines[-1]
    plain = sweep.summary_table(sweep.run_sweep(spec_for(traces_dir), str(tmp_path / "b"), run_point=FakeRunner()).rows)
    assert "bandwidth_bps=1e+06" in plain
    assert sweep.point_label({"sweep_param": "none", "sweep_value": None}) == "-"


def test_values_alike_under_g_get_distinct_labels_and_figures(traces_dir, tmp_path, monkeypatch):
    """1e6 and 1.0000001e6 are distinct float32 numbers (a sweep accepts both) but both '1e+06' under %g: the
    summary labels and the --grid figure names tell them apart; values %g reads back exactly keep %g."""
    assert np.float32(1.0000001e6) != np.float32(1e6) and f"{1.0000001e6:g}" == f"{1e6:g}"
    labels = [sweep.value_label(v) for v in (1e6, 1.0000001e6, 4e7, 0.5, 3)]
    assert labels == ["1e+06", "1000000.1", "4e+07", "0.5", "3"]
    spec = spec_for(traces_dir, datasets=["gsm8k"], policies=["all_slm"], sweep_values=[1e6, 1.0000001e6])
    rows = sweep.run_sweep(spec, str(tmp_path / "one"), run_point=FakeRunner()).rows
    assert [sweep.point_label(r) for r in rows] == ["bandwidth_bps=1e+06", "bandwidth_bps=1000000.1"]
    grid = spec_for(traces_dir, sweep_param="none", sweep_values=[], datasets=["gsm8k"], policies=["all_slm"],
                    grid=sweep.parse_grid(["bandwidth_bps=1e6,1.0000001e6", "server_capacity=1,3"]))
    rows = sweep.run_sweep(grid, str(tmp_path / "grid"), run_point=FakeRunner()).rows
    assert len({sweep.point_label(r) for r in rows}) == 4
    monkeypatch.setattr(plots, "_save", lambda fig, path, bottom=0.0: path)
    paths = plots.grid_figures(rows, str(tmp_path / "figs"))
    assert [os.path.basename(p) for p in paths] == ["fig_gsm8k_bandwidth_bps=1e+06_accuracy_delay.png",
                                                    "fig_gsm8k_bandwidth_bps=1000000.1_accuracy_delay.png"]


def test_cli_grid_end_to_end_prints_the_table_quietly(tmp_path):
    """Real simulator through the CLI: a 2 x 2 grid, then a restart that computes nothing; no TPU probe or
    orbax INFO in the output; --grid with --sweep_param is one FATAL line. The first run is a real process (JAX
    starts there); the restart and the refusal run in this process (tests/cli_inprocess.py)."""
    out = tmp_path / "grid"
    args = [sys.executable, "-m", "prada_jax.cli.sweep", "--flagfile=smoke.cfg", f"--out_dir={out}", "--policies=all_slm",
            "--sweep_param=none", "--sweep_values=", "--grid=server_capacity=1,3", "--grid=bandwidth_bps=1e6,4e7",
            "--noplots", "--horizon_ms=40", "--warmup_ms=5"]
    proc = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(out / "results.csv")
    assert [(float(r["server_capacity"]), float(r["bandwidth_bps"])) for r in rows] == \
        [(1.0, 1e6), (1.0, 4e7), (3.0, 1e6), (3.0, 4e7)]
    assert "server_capacity=1, bandwidth_bps=1e+06" in proc.stdout and "accuracy %" in proc.stdout
    both = proc.stdout + proc.stderr
    assert "Unable to initialize backend" not in both and "orbax" not in both
    assert "compiling and running" in proc.stderr
    before = (out / "results.csv").read_bytes()
    proc = cli_inprocess.run(*args[2:])
    assert proc.returncode == 0 and "Nothing to do" in proc.stderr and (out / "results.csv").read_bytes() == before
    proc = cli_inprocess.run(*args[2:-4], "--sweep_param=beta", "--sweep_values=1,2", "--grid=snr_db=1,2")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("FATAL Flags error: --grid")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bench_median_rate_by_hand():
    """The benchmark's ratio of medians: a record keeps its fastest run; the median run's rate is work / median."""
    from prada_jax.cli import bench

    # 1,000 user-slot updates; runs of 2, 4 and 5 s: fastest 500/s, median 250/s.
    record = {"user_slots_per_s": 500.0, "run_s": 2.0, "runs_s": [4.0, 2.0, 5.0]}
    assert bench.median_rate(record) == 250.0
    assert bench.median_rate({"user_slots_per_s": 500.0, "run_s": 2.0}) == 500.0  # older JSON without runs_s
