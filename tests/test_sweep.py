"""Sweep CLI plumbing: flag validation, flagfile resolution, resumable results, figures.

The runner is exercised with a small fake point function injected here (tests only); the end-to-end CLI test
at the bottom runs the real simulator on the smoke config.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys

import cli_inprocess
import numpy as np
import pytest
from absl import flags

from prada_jax import constants as C
from prada_jax import plots, sweep
from prada_jax.traces import save_trace
from tests.conftest import REPO_ROOT, make_tiny_trace


@pytest.fixture
def traces_dir(tmp_path):
    d = tmp_path / "traces"
    for i, name in enumerate(("gsm8k", "mmlu_stem")):
        save_trace(d / f"{name}.npz", make_tiny_trace(seed=i))
    return str(d)


def spec_for(traces_dir, **kw):
    args = dict(
        datasets=["gsm8k", "mmlu_stem"],
        policies=["all_slm", "prada", "random_scheduler"],
        sweep_param="bandwidth_bps",
        sweep_values=[1e5, 1e6, 4e7],
        episodes=4,
        horizon_ms=100,
        warmup_ms=10,
        max_users=16,
        traces_dir=traces_dir,
        supported_policies=sweep.POLICIES,
    )
    args.update(kw)
    return sweep.make_spec(**args)


class FakeRunner:
    """Deterministic stand-in for simulate_point; records calls; can fail after n calls."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[tuple[str, str]] = []
        self.fail_after = fail_after

    def __call__(self, spec, dataset, policy):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("injected failure")
        self.calls.append((dataset, policy))
        g = spec.grid_size
        x = np.arange(g, dtype=float)
        base = len(dataset) + 3 * len(policy)
        names = list(sweep.REQUIRED_METRICS) + ["utility"]
        summary = {m: (base + x + i, 0.1 * (i + 1) + 0 * x) for i, m in enumerate(names)}
        summary["accuracy"] = (0.5 + 0.01 * x + 0.001 * base, 0.01 + 0 * x)
        return sweep.rows_from_summary(spec, dataset, policy, summary, seconds=0.01)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, flag",
    [
        (dict(params={"bandwidth_bps": -1.0}, sweep_param="none", sweep_values=[]), "bandwidth_bps"),
        (dict(params={"server_capacity": 0}), "server_capacity"),
        (dict(sweep_param="server_capacity", sweep_values=[0, 3]), "sweep_values"),
        (dict(sweep_param="server_capacity", sweep_values=[2.5]), "sweep_values"),
        (dict(sweep_values=[-1e6]), "sweep_values"),
        (dict(sweep_values=[]), "sweep_values"),
        (dict(sweep_values=[1e6, 1e6]), "sweep_values"),
        (dict(sweep_param="none"), "sweep_values"),
        (dict(sweep_param="bogus"), "sweep_param"),
        (dict(datasets=["nope"]), "datasets"),
        (dict(datasets=[]), "datasets"),
        (dict(policies=["magic"]), "policies"),
        (dict(policies=[]), "policies"),
        (dict(policies=["prada"], supported_policies=("all_slm",)), "policies"),
        (dict(warmup_ms=100), "warmup_ms"),
        (dict(episodes=1), "episodes"),
        (dict(max_users=0), "max_users"),
        (dict(server_prefill="half"), "server_prefill"),
        (dict(params={"arrival_rate": float("nan")}), "arrival_rate"),
        (dict(table_beta=-1.0), "table_beta"),
        (dict(explicitly_set=["bandwidth_bps"]), "bandwidth_bps"),
    ],
)
def test_invalid_values_name_the_flag(traces_dir, override, flag):
    with pytest.raises(sweep.SweepConfigError) as info:
        spec_for(traces_dir, **override)
    assert info.value.flag == flag
    assert str(info.value).startswith(f"--{flag}:")


def test_spec_defaults_are_table3(traces_dir):
    spec = spec_for(traces_dir)
    assert spec.params["server_capacity"] == C.DEFAULT_SERVER_CAPACITY
    assert spec.params["arrival_rate"] == C.DEFAULT_ARRIVAL_RATE
    assert spec.params["bandwidth_bps"] is None  # swept
    assert [g["bandwidth_bps"] for g in spec.grid()] == [1e5, 1e6, 4e7]
    assert spec.table_beta == C.DEFAULT_BETA
    beta_spec = spec_for(traces_dir, sweep_param="beta", sweep_values=[1, 100])
    assert beta_spec.table_beta == C.DEFAULT_BETA and beta_spec.params["beta"] is None
    cap = spec_for(traces_dir, sweep_param="server_capacity", sweep_values=[1.0, 20.0], max_users=20)
    assert [g["server_capacity"] for g in cap.grid()] == [1, 20]
    assert all(isinstance(g["server_capacity"], int) for g in cap.grid())


def test_flagfile_resolution(tmp_path):
    out = sweep.resolve_flagfile_argv(["prog", "--flagfile=bandwidth.cfg", "--episodes=3"])
    assert out[1] == "--flagfile=" + os.path.join(sweep.CONFIG_DIR, "bandwidth.cfg")
    assert out[2] == "--episodes=3"
    out = sweep.resolve_flagfile_argv(["prog", "--flagfile", "smoke"])
    assert out[2] == os.path.join(sweep.CONFIG_DIR, "smoke.cfg")
    own = tmp_path / "mine.cfg"
    own.write_text("--episodes=2\n")
    assert sweep.resolve_flagfile_argv(["prog", f"--flagfile={own}"])[1] == f"--flagfile={own}"
    with pytest.raises(sweep.SweepConfigError, match="--flagfile:.*nothere.cfg"):
        sweep.resolve_flagfile_argv(["prog", "--flagfile=nothere.cfg"])


@pytest.mark.parametrize("name", ["bandwidth", "capacity", "arrival", "beta", "table2", "smoke"])
def test_shipped_configs_parse_and_validate(name):
    fv = flags.FlagValues()
    sweep.define_flags(fv)
    fv(sweep.resolve_flagfile_argv(["prog", f"--flagfile={name}.cfg"]))
    spec = sweep.spec_from_flags(fv, supported_policies=sweep.POLICIES)
    if name == "bandwidth":
        assert spec.sweep_param == "bandwidth_bps" and len(spec.sweep_values) >= 10
        assert min(spec.sweep_values) <= 1e5 and max(spec.sweep_values) >= 1e9
        assert spec.params["server_capacity"] == 9 and spec.datasets == ("gsm8k",)
    if name == "capacity":
        assert spec.sweep_values == tuple(float(m) for m in range(1, 21))
    if name == "table2":
        assert spec.datasets == ("gsm8k", "gaokao2023en", "mmlu_stem")
        assert spec.policies == ("all_slm", "pi_only", "prada") and spec.grid_size == 1


# ----------------------------------------------------------------------------------------------------------
# resumable runner
# ----------------------------------------------------------------------------------------------------------


def test_sweep_writes_all_outputs(traces_dir, tmp_path):
    spec = spec_for(traces_dir)
    out = str(tmp_path / "out")
    runner = FakeRunner()
    sweep.run_sweep(spec, out, run_point=runner, argv=["test"])
    assert runner.calls == spec.points()
    rows = read_csv(os.path.join(out, "results.csv"))
    assert len(rows) == 2 * 3 * 3
    for m in sweep.REQUIRED_METRICS:
        assert f"{m}_mean" in rows[0] and f"{m}_ci95" in rows[0]
    config, json_rows = sweep.read_results(out)
    assert config == spec.to_config() and len(json_rows) == len(rows)
    assert [float(r["sweep_value"]) for r in rows[:3]] == [1e5, 1e6, 4e7]
    run = json.load(open(os.path.join(out, "run.json")))
    session = run["sessions"][0]
    assert session["versions"]["jax"] and session["device"]["backend"] == "cpu"
    assert "commit" in session["git"] and run["config"]["trace_sha256"]["gsm8k"]


def test_run_json_records_each_points_candidate_sets_across_sessions(traces_dir, tmp_path):
    """A runner's PointRows.run_info goes into run.json's "points" before the point's rows; a resumed sweep keeps
    the earlier sessions' records."""
    spec = spec_for(traces_dir)
    out = str(tmp_path / "out")
    fake = FakeRunner(fail_after=2)

    def runner(spec, dataset, policy):
        rows = fake(spec, dataset, policy)
        return sweep.PointRows(rows, {"largest_candidates_seen": len(fake.calls), "candidate_cap": "exact"})

    with pytest.raises(RuntimeError, match="injected failure"):
        sweep.run_sweep(spec, out, run_point=runner)
    fake.fail_after = None
    sweep.run_sweep(spec, out, run_point=runner)
    points = json.load(open(os.path.join(out, "run.json")))["points"]
    assert {tuple(k.split("/")) for k in points} == set(spec.points())
    assert sorted(p["largest_candidates_seen"] for p in points.values()) == list(range(1, len(spec.points()) + 1))


def test_candidate_info_summarises_every_episode_and_grid_point(traces_dir):
    from types import SimpleNamespace

    metrics = SimpleNamespace(max_candidates_seen=np.array([[3, 17], [9, 2]]),
                              candidate_overflow_slots=np.array([[0, 0], [0, 0]]),
                              candidate_cap=np.array([[16, 32], [16, 16]]))
    exact = sweep.sim_config(spec_for(traces_dir), "prada")
    assert sweep.candidate_info(metrics, exact) == {
        "largest_candidates_seen": 17, "candidate_overflow_slots": 0, "candidate_cap": "exact",
        "episodes_by_cap": {"16": 3, "32": 1}}
    metrics.candidate_overflow_slots = np.array([[0, 4], [0, 0]])
    fixed = dataclasses.replace(exact, max_candidates=16)
    info = sweep.candidate_info(metrics, fixed)
    assert info["candidate_cap"] == 16 and info["candidate_overflow_slots"] == 4


def test_killed_sweep_resumes_without_recomputing(traces_dir, tmp_path):
    spec = spec_for(traces_dir)
    out = str(tmp_path / "out")
    first = FakeRunner(fail_after=2)
    with pytest.raises(RuntimeError, match="injected failure"):
        sweep.run_sweep(spec, out, run_point=first)
    assert len(read_csv(os.path.join(out, "results.csv"))) == 2 * 3
    second = FakeRunner()
    sweep.run_sweep(spec, out, run_point=second)
    assert second.calls == spec.points()[2:]
    rows = read_csv(os.path.join(out, "results.csv"))
    keys = [(r["dataset"], r["policy"], r["sweep_value"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 3 * 3
    # A third run computes nothing and writes nothing new; sessions record every start.
    third = FakeRunner()
    sweep.run_sweep(spec, out, run_point=third)
    assert third.calls == [] and len(read_csv(os.path.join(out, "results.csv"))) == 18
    assert len(json.load(open(os.path.join(out, "run.json")))["sessions"]) == 3
    # Same numbers as an uninterrupted run.
    clean = str(tmp_path / "clean")
    sweep.run_sweep(spec, clean, run_point=FakeRunner())
    strip = lambda rs: [{k: v for k, v in r.items() if k != "point_seconds"} for r in rs]  # noqa: E731
    assert strip(read_csv(os.path.join(clean, "results.csv"))) == strip(rows)


def test_resume_reads_results_and_hashes_inputs_once(traces_dir, tmp_path, monkeypatch):
    """run_sweep's check of out_dir is the read its ResultStore opens from: results.csv parsed once, each input
    file hashed once."""
    spec = spec_for(traces_dir)
    out = str(tmp_path / "out")
    with pytest.raises(RuntimeError, match="injected failure"):
        sweep.run_sweep(spec, out, run_point=FakeRunner(fail_after=2))
    hashed, parsed = [], []
    real_hash, real_parse = sweep.spec.file_sha256, sweep.store._parse_results_csv
    monkeypatch.setattr(sweep.spec, "file_sha256", lambda path: hashed.append(path) or real_hash(path))
    monkeypatch.setattr(sweep.store, "_parse_results_csv", lambda *a: parsed.append(a[0]) or real_parse(*a))
    runner = FakeRunner()
    store = sweep.run_sweep(spec, out, run_point=runner)
    assert runner.calls == spec.points()[2:] and len(store.rows) == 18
    assert parsed == [os.path.join(out, sweep.RESULTS_CSV)]
    assert len(hashed) == len(set(hashed)) and {spec.trace_path(d) for d in spec.datasets} <= set(hashed)


@pytest.mark.parametrize("cut", ["mid_line", "mid_point"])
def test_interrupted_write_is_repaired_and_recomputed(traces_dir, tmp_path, cut):
    spec = spec_for(traces_dir)
    out = str(tmp_path / "out")
    with pytest.raises(RuntimeError, match="injected failure"):
        sweep.run_sweep(spec, out, run_point=FakeRunner(fail_after=2))
    path = os.path.join(out, "results.csv")
    text = open(path).read()
    lines = text.splitlines(keepends=True)
    # header + 3 rows of point 1 + 3 rows of point 2; simulate a kill while writing point 2.
    kept = "".join(lines[:5]) + (lines[5][:7] if cut == "mid_line" else "")
    open(path, "w").write(kept)
    runner = FakeRunner()
    sweep.run_sweep(spec, out, run_point=runner)
    assert runner.calls == spec.points()[1:]
    rows = read_csv(path)
    assert len(rows) == 18
    assert len({(r["dataset"], r["policy"], r["sweep_value"]) for r in rows}) == 18


def test_changed_flags_refuse_then_overwrite(traces_dir, tmp_path):
    out = str(tmp_path / "out")
    sweep.run_sweep(spec_for(traces_dir), out, run_point=FakeRunner())
    open(os.path.join(out, "fig_old.png"), "wb").write(b"x")
    changed = spec_for(traces_dir, episodes=5)
    with pytest.raises(sweep.SweepStateError, match="episodes: 4 -> 5"):
        sweep.run_sweep(changed, out, run_point=FakeRunner())
    assert len(read_csv(os.path.join(out, "results.csv"))) == 18  # untouched
    runner = FakeRunner()
    sweep.run_sweep(changed, out, run_point=runner, overwrite=True)
    assert runner.calls == changed.points()
    assert not os.path.exists(os.path.join(out, "fig_old.png"))
    assert {r["episodes"] for r in read_csv(os.path.join(out, "results.csv"))} == {"5"}


def test_changed_trace_file_is_a_different_sweep(traces_dir, tmp_path):
    out = str(tmp_path / "out")
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, out, run_point=FakeRunner())
    save_trace(os.path.join(traces_dir, "gsm8k.npz"), make_tiny_trace(seed=7))
    with pytest.raises(sweep.SweepStateError, match="trace_sha256"):
        sweep.run_sweep(spec, out, run_point=FakeRunner())


def test_foreign_csv_without_run_json_is_refused(traces_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(sweep.SweepStateError, match="run.json"):
        sweep.run_sweep(spec_for(traces_dir), str(out), run_point=FakeRunner())


def test_runner_rows_must_match_the_grid(traces_dir, tmp_path):
    spec = spec_for(traces_dir)

    def short(spec_, dataset, policy):
        return FakeRunner()(spec_, dataset, policy)[:2]

    with pytest.raises(ValueError, match="sweep values"):
        sweep.run_sweep(spec, str(tmp_path / "out"), run_point=short)


def test_unswept_sweep_and_bars(traces_dir, tmp_path):
    spec = spec_for(traces_dir, sweep_param="none", sweep_values=[], policies=["all_slm", "pi_only", "prada"])
    out = str(tmp_path / "out")
    with pytest.raises(RuntimeError):
        sweep.run_sweep(spec, out, run_point=FakeRunner(fail_after=1))
    store = sweep.run_sweep(spec, out, run_point=FakeRunner())
    assert len(store.rows) == 6 and all(r["sweep_value"] is None for r in store.rows)
    paths = plots.sweep_figures(store.rows, out)
    assert paths == [os.path.join(out, "fig_bars.png")] and os.path.getsize(paths[0]) > 1000
    table = plots.table2_markdown(store.rows)
    # Paper values sit next to ours; ours are the fake runner's means (accuracy in percent).
    assert "| gsm8k | Accuracy (%) |" in table and "85.2" in table and "| mmlu_stem |" in table
    acc = next(r for r in store.rows if r["dataset"] == "gsm8k" and r["policy"] == "prada")["accuracy_mean"]
    assert f"{acc * 100:.1f} ± 1.0" in table


def test_sweep_figures_from_rows(traces_dir, tmp_path):
    spec = spec_for(traces_dir, sweep_param="beta", sweep_values=[1.0, 10.0, 100.0])
    store = sweep.run_sweep(spec, str(tmp_path / "out"), run_point=FakeRunner())
    paths = plots.sweep_figures(store.rows, str(tmp_path / "figs"))
    assert len(paths) == 2 * 3  # per dataset: performance, delays, frontier
    assert all(os.path.getsize(p) > 1000 for p in paths)
    with pytest.raises(ValueError, match="one swept parameter"):
        plots.plot_performance([dict(r, sweep_param="none") for r in store.rows], "gsm8k", str(tmp_path / "x.png"))


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _cli(*args):
    """`python experiments/sweep.py <args>` in this process (tests/cli_inprocess.py); the sweep command runs as a
    real process in tests/test_registry_grid.py, tests/test_fault_injection.py and tests/test_packaging.py."""
    return cli_inprocess.run("experiments/sweep.py", *args)


def test_cli_rejects_bad_flags_before_work(tmp_path):
    out = tmp_path / "out"
    proc = _cli("--flagfile=smoke.cfg", f"--out_dir={out}", "--warmup_ms=500")
    assert proc.returncode != 0 and "--warmup_ms" in proc.stderr
    assert not out.exists()


def test_cli_smoke_end_to_end_and_resume(tmp_path):
    """Real simulator through the CLI: bare flagfile name, outputs, then a restart that computes nothing."""
    out = tmp_path / "smoke"
    args = ("--flagfile=smoke.cfg", f"--out_dir={out}", "--policies=all_slm", "--plots=false")
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(out / "results.csv")
    assert [(r["policy"], float(r["sweep_value"])) for r in rows] == [("all_slm", 1e6), ("all_slm", 4e7)]
    acc = float(rows[0]["accuracy_mean"])
    assert 0.0 < acc <= 1.0 and float(rows[0]["communication_ms_mean"]) == 0.0  # all-SLM never uploads
    config, json_rows = sweep.read_results(str(out))
    assert config["episodes"] == 2 and len(json_rows) == 2
    before = (out / "results.csv").read_bytes()
    proc = _cli(*args)
    assert proc.returncode == 0 and "Nothing to do" in proc.stderr
    assert (out / "results.csv").read_bytes() == before
    proc = _cli(*args, "--seed=3")
    assert proc.returncode != 0 and "seed: 0 -> 3" in proc.stderr and "--overwrite" in proc.stderr


def test_make_figures_plot_only_from_results(tmp_path):
    """make_figures draws Table 2 and Figs. 4-8 from result directories (filled here by the fake runner), through a
    real process; the refusal after it runs in this process."""
    results, figs, ckpt = tmp_path / "results", tmp_path / "figs", tmp_path / "ckpt"
    for name in ("table2", "capacity", "bandwidth"):
        fv = flags.FlagValues()
        sweep.define_flags(fv)
        fv(["prog", f"--flagfile={os.path.join(sweep.CONFIG_DIR, name + '.cfg')}", f"--out_dir={results / name}",
            f"--ckpt_dir={ckpt}", "--traces_dir=traces"])
        spec = sweep.spec_from_flags(fv, supported_policies=sweep.POLICIES)
        sweep.run_sweep(spec, str(results / name), run_point=FakeRunner())
    for i, dataset in enumerate(("gsm8k", "math500", "gaokao2023en", "mmlu_stem")):
        point = lambda acc, tf: {"accuracy": acc, "tflop_per_task": tf}  # noqa: E731
        su = {"all_slm": point(0.6 + i / 10, 1.0), "all_llm": point(0.8, 5.0), "pi_theta": point(0.75, 2.0),
              "random": point(0.65, 2.0), "rsd": [point(0.7, 2.5), point(0.72, 3.0)]}
        (ckpt / dataset).mkdir(parents=True)
        frontier = [dict(point(0.7, 1.5), beta=30.0), dict(point(0.78, 3.0), beta=3.0)]
        (ckpt / dataset / "eval.json").write_text(json.dumps({"beta": 10.0, "single_user": su, "frontier": frontier}))
    proc = subprocess.run(
        [sys.executable, "experiments/make_figures.py", "--plot_only", f"--results_dir={results}",
         f"--figures_dir={figs}", f"--ckpt_dir={ckpt}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = ["table2.md", "table2_bars.png", "fig4_single_user.png", "fig5_capacity_performance.png",
                "fig6_capacity_delays.png", "fig7_bandwidth_delays.png", "fig8_bandwidth_performance.png"]
    for name in expected:
        assert (figs / name).stat().st_size > 500, name
    table = (figs / "table2.md").read_text()
    assert "| gaokao2023en | Avg. queuing delay (ms/task) |" in table and "93.9" in table
    prov = json.loads((figs / "provenance.json").read_text())
    assert prov["fig8_bandwidth_performance.png"]["results"] == str(results / "bandwidth")
    # An incomplete results directory (a sweep killed after its first point) is refused, not drawn.
    import shutil

    shutil.rmtree(results / "capacity")
    fv = flags.FlagValues()
    sweep.define_flags(fv)
    fv(["prog", f"--flagfile={os.path.join(sweep.CONFIG_DIR, 'capacity.cfg')}", f"--out_dir={results / 'capacity'}",
        f"--ckpt_dir={ckpt}", "--traces_dir=traces"])
    with pytest.raises(RuntimeError, match="injected"):
        sweep.run_sweep(sweep.spec_from_flags(fv, supported_policies=sweep.POLICIES), str(results / "capacity"),
                        run_point=FakeRunner(fail_after=1))
    proc = cli_inprocess.run("experiments/make_figures.py", "--plot_only", "--only=capacity",
                             f"--results_dir={results}", f"--figures_dir={figs}", f"--ckpt_dir={ckpt}")
    assert proc.returncode != 0 and "is incomplete" in proc.stderr


def test_learned_table_is_loaded_only_for_its_beta(traces_dir, tmp_path):
    from prada_jax.learn import tables
    from prada_jax.sim import policies as P
    from prada_jax.traces import load_trace

    ckpt = tmp_path / "ckpt"
    spec = spec_for(traces_dir, ckpt_dir=str(ckpt))
    trace = load_trace(spec.trace_path("gsm8k"))
    table_path, eval_path = sweep.learned_table_paths(str(ckpt), "gsm8k")
    stored = P.all_llm_table(trace)
    tables.save_table(table_path, stored, trace_sha256=tables.file_sha256(spec.trace_path("gsm8k")))
    with open(eval_path, "w") as handle:
        json.dump({"beta": 5.0}, handle)
    with pytest.raises(sweep.PolicyTableError, match="trained for beta=5.*--table_beta=10"):
        sweep.learned_table(spec, "gsm8k", trace)
    loaded = sweep.learned_table(spec_for(traces_dir, ckpt_dir=str(ckpt), table_beta=5.0), "gsm8k", trace)
    np.testing.assert_allclose(np.asarray(loaded.nominate_prob), np.asarray(stored.nominate_prob))
    # random_policy keeps the learned Stage-2 inputs and nominates with probability 0.5 (sampled).
    table, ps = sweep.policy_setup(spec_for(traces_dir, ckpt_dir=str(ckpt), table_beta=5.0), "random_policy",
                                   "gsm8k", trace, C.FLOPS_LLM)
    assert ps.stage1_sampling and ps.scheduler == "prada"
    mask = trace.step_mask
    assert np.all(np.asarray(table.nominate_prob)[mask] == sweep.RANDOM_POLICY_PROB)
    np.testing.assert_allclose(np.asarray(table.value_gap())[mask], np.asarray(stored.value_gap())[mask], rtol=1e-5)
