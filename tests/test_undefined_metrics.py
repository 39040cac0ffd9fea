"""Undefined metrics are explicit ("n/a" in the CSV and the figures), and step times float32 cannot add up are
refused before work instead of turning utilisations into NaN."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from sim_helpers import tiny  # noqa: E402
from test_plots import _rows  # noqa: E402
from test_sweep import FakeRunner, spec_for, traces_dir  # noqa: E402,F401 - the fixture

from prada_jax import plots, sim, sweep  # noqa: E402
from prada_jax.sim import policies  # noqa: E402
from prada_jax.traces import pack_traces  # noqa: E402

TRACE = tiny(num_problems=5, seed=3)
PACKED = pack_traces(TRACE)
CONFIG = sim.SimConfig(num_slots=40, warmup_slots=5, max_users=4, max_servers=3, drain_slots=40)


@pytest.mark.parametrize("leaf,value", [("flops_llm", 1e-30), ("flops_slm", 1e-30), ("flops_llm", 1e-25)])
def test_step_times_float32_cannot_add_up_are_refused_naming_the_parameter(leaf, value):
    grid = sim.param_grid(sim.make_params(arrival_rate=0.3, server_capacity=2), **{leaf: [value, 1e14]})
    with pytest.raises(sim.SimParamsError, match=rf"SimParams\.{leaf}={value:g} makes one .* step take up to"):
        sim.simulate_grid(PACKED, policies.all_llm_table(TRACE), grid, CONFIG, 2, 0)


def test_the_sweep_refuses_such_a_flops_value_before_writing_anything(traces_dir, tmp_path):
    out = tmp_path / "out"
    spec = spec_for(traces_dir, policies=["all_slm"], params={"flops_llm": 1e-30})
    with pytest.raises(sweep.SweepConfigError, match=r"^--flops_llm: SimParams\.flops_llm=1e-30 makes one LLM step"):
        sweep.run_sweep(spec, str(out))
    assert not os.path.exists(out / sweep.RUN_JSON)
    swept = spec_for(traces_dir, policies=["all_slm"], sweep_param="flops_slm", sweep_values=[1e-30, 1e13])
    with pytest.raises(sweep.SweepConfigError, match=r"^--sweep_values: SimParams\.flops_slm=1e-30"):
        sweep.run_sweep(swept, str(out))


def test_a_point_that_cannot_fit_in_memory_is_refused_before_run_json(traces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PRADA_MEMORY_LIMIT_BYTES", str(2**20))
    out = tmp_path / "out"
    with pytest.raises(sweep.SweepConfigError, match=r"^--episodes: one point \(--episodes=4 x 3 grid values\) needs"):
        sweep.run_sweep(spec_for(traces_dir, policies=["all_slm"]), str(out))
    assert not os.path.exists(out / sweep.RUN_JSON)


def test_undefined_metrics_are_n_a_in_the_csv_and_read_back_as_nan(traces_dir, tmp_path):
    class Undefined(FakeRunner):
        def __call__(self, spec, dataset, policy):
            rows = super().__call__(spec, dataset, policy)
            for row in rows:
                row["accuracy_mean"] = row["accuracy_ci95"] = math.nan
            return rows

    spec = spec_for(traces_dir)
    out = tmp_path / "out"
    sweep.run_sweep(spec, str(out), run_point=Undefined())
    text = (out / sweep.RESULTS_CSV).read_text()
    assert "n/a" in text and ",nan" not in text
    store = sweep.run_sweep(spec, str(out), run_point=FakeRunner())  # resume: verified, parsed back
    assert all(math.isnan(r["accuracy_mean"]) for r in store.rows)
    _, rows = sweep.read_results(str(out))
    assert all(math.isnan(r["accuracy_mean"]) for r in rows)


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_figures_mark_undefined_points_and_say_so_for_empty_panels(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, bottom=0.0: figs.append(fig) or path)
    rows = _rows()
    for r in rows:
        if r["sweep_value"] == 9.0:  # every arrival dropped at this point: nothing is defined
            for m in ("accuracy", "processing_ms", "communication_ms", "queuing_ms", "end_to_end_ms", "sojourn_ms"):
                r[f"{m}_mean"] = r[f"{m}_ci95"] = math.nan
    plots.plot_performance(rows, "gsm8k", str(tmp_path / "a.png"))
    assert _texts(figs[-1]).count("n/a") >= 2  # one mark per policy at M = 9
    plots.plot_frontier([dict(r, sweep_param="beta") for r in rows], "gsm8k", str(tmp_path / "f.png"))
    assert any(t.startswith("n/a (no task entered): PRADA at") for t in _texts(figs[-1]))
    bars = [dict(r, sweep_param="none", sweep_value=None) for r in rows if r["sweep_value"] == 9.0]
    plots.plot_bars(bars, str(tmp_path / "b.png"))
    assert sum("n/a for every policy" in t for t in _texts(figs[-1])) == 4  # accuracy + three delay panels
    for fig in figs:
        plt.close(fig)


def test_beta_zero_stays_on_a_log_beta_axis(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, bottom=0.0: figs.append(fig) or path)
    plots.plot_performance(_rows(param="beta", values=(0.0, 1.0, 10.0)), "gsm8k", str(tmp_path / "a.png"))
    ax = figs[0].axes[0]
    assert ax.get_xscale() == "symlog"  # a log axis would drop beta = 0 without a word
    plt.close(figs[0])


def test_a_full_disk_while_drawing_is_one_line_and_leaves_no_half_written_figure(tmp_path, monkeypatch):
    import errno

    from matplotlib.figure import Figure

    def full(self, path, **kwargs):
        open(path, "wb").write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    target = tmp_path / "a.png"
    with pytest.raises(plots.FigureWriteError, match=rf"^{target}: cannot write the figure \(No space left"):
        plots.plot_performance(_rows(), "gsm8k", str(target))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    assert plots.plot_performance(_rows(), "gsm8k", str(target)) == str(target) and target.stat().st_size > 1000
