"""Figures and the Table-2 markdown: fixed style per policy, labelled intervals, flagged overloaded points."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from prada_jax import plots, sweep  # noqa: E402


def _rows(param="server_capacity", values=(1, 3, 9), policies=("prada", "random_scheduler"), overloaded_at=1,
          with_new_columns=True):
    rows = []
    for p in policies:
        for v in values:
            row = {"dataset": "gsm8k", "policy": p, "sweep_param": param, "sweep_value": float(v), "episodes": 16}
            for m in ("accuracy", "processing_ms", "communication_ms", "queuing_ms", "end_to_end_ms", "sojourn_ms",
                      "offload_fraction", "dropped"):
                row[f"{m}_mean"], row[f"{m}_ci95"] = 0.9 if m == "accuracy" else float(v), 0.01
            if with_new_columns:
                row["unfinished_mean"], row["unfinished_ci95"] = (3.0 if v == overloaded_at else 0.0), 0.0
                row["overloaded_mean"], row["overloaded_ci95"] = (1.0 if v == overloaded_at else 0.0), 0.0
            else:
                row["in_system_mean"], row["in_system_ci95"] = 0.0, 0.0
            rows.append(row)
    return rows


def test_every_policy_has_one_fixed_style():
    for name in sweep.POLICY_SPECS:
        assert name in plots.POLICY_STYLES, name
    styles = [plots.POLICY_STYLES[p] for p in sweep.POLICY_SPECS]
    assert len(set(styles)) == len(styles)  # no two policies look alike


@pytest.mark.parametrize("plot", [plots.plot_performance, plots.plot_delay_decomposition])
def test_line_plots_use_the_style_flag_overload_and_label_the_intervals(plot, tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, bottom=0.0: figs.append(fig) or path)
    plot(_rows(), "gsm8k", str(tmp_path / "x.png"))
    fig = figs[0]
    legend = fig.legends[0]
    assert "95 % CI (Student t) over 16 episodes" in legend.get_title().get_text()
    assert plots.OVERLOAD_NOTE in [t.get_text() for t in legend.get_texts()]
    ax = fig.axes[0]
    colors = {line.get_color() for line in ax.get_lines() if line.get_linestyle() != "None"}
    assert plots.POLICY_STYLES["prada"][0] in colors and plots.POLICY_STYLES["random_scheduler"][0] in colors
    hollow = [line for line in ax.get_lines() if line.get_linestyle() == "None" and line.get_markerfacecolor() == "white"]
    assert len(hollow) == 2 and all(len(line.get_xdata()) == 1 for line in hollow)  # one overloaded point per policy
    plt.close(fig)


def test_old_results_without_the_new_columns_still_draw(tmp_path):
    rows = _rows(with_new_columns=False)
    assert plots.plot_performance(rows, "gsm8k", str(tmp_path / "a.png"))
    table = plots.table2_markdown(
        [dict(r, sweep_param="none", policy=p) for r, p in zip(rows[:3], ("all_slm", "pi_only", "prada"))])
    assert "n/a" in table and plots.OVERLOAD_FLAG not in table


def test_table2_markdown_has_unfinished_row_and_flags_overloaded_cells():
    rows = [dict(r, sweep_param="none", policy=p, dataset="gsm8k")
            for r, p in zip(_rows(values=(1, 2, 3), policies=("x",)), ("all_slm", "pi_only", "prada"))]
    text = plots.table2_markdown(rows)
    assert "Unfinished tasks (per episode" in text and "Sojourn time" in text
    assert text.count(plots.OVERLOAD_FLAG) >= 2  # the pi_only cells (overloaded_at=1 -> first row) and the note
    assert "overloaded run" in text


def test_frontier_labels_do_not_use_zero_padded_numbers(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, bottom=0.0: figs.append(fig) or path)
    plots.plot_frontier(_rows(param="beta", values=(0.1, 10, 100)), "gsm8k", str(tmp_path / "f.png"))
    texts = [t.get_text() for t in figs[0].axes[0].texts]
    assert "β = 0.1" in texts and "β = 100" in texts and not any("0100" in t for t in texts)


def _capture(monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, bottom=0.0: figs.append(fig) or path)
    return figs


def test_frontier_draws_a_policy_that_ignores_beta_as_one_marker(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    rows = _rows(param="beta", values=(0.1, 10, 100))
    for r in rows:
        if r["policy"] == "random_scheduler":  # identical rows at every beta
            r["end_to_end_ms_mean"], r["accuracy_mean"] = 4.7, 0.88
    plots.plot_frontier(rows, "gsm8k", str(tmp_path / "f.png"), title="frontier; Stage-1 table at β = 10")
    fig = figs[0]
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Random scheduler (independent of β)" in labels and "PRADA" in labels
    green = plots.POLICY_STYLES["random_scheduler"][0]
    lines = [line for line in ax.get_lines() if line.get_color() == green and len(line.get_xdata()) > 0]
    assert lines and all(len(line.get_xdata()) == 1 for line in lines)  # one marker, no pseudo-curve
    assert [t.get_color() for t in ax.texts].count(green) == 0  # no beta annotations for it
    assert ax.get_title() == "frontier; Stage-1 table at β = 10"
    plt.close(fig)


def test_beta_axis_label_has_unit_and_names_stage_2():
    assert plots.PARAM_LABELS["beta"] == r"Stage-2 trade-off weight $\beta$ (1/s)"


def test_performance_panel_b_is_end_to_end_and_titles_read_as_a_sentence(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    plots.plot_performance(_rows(param="arrival_rate"), "gsm8k", str(tmp_path / "p.png"))
    fig = figs[0]
    assert fig.axes[1].get_title() == "(b) end-to-end delay (processing + communication + queuing)"
    assert fig._suptitle.get_text().startswith("gsm8k: performance vs arrival rate")
    assert fig.axes[1].get_yscale() == "linear"
    plt.close(fig)


def test_log_delay_scale_and_overlap_note(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    rows = _rows(policies=("prada", "pi_only"))
    for r in rows:  # pi_only far above at M = 1, the same as PRADA elsewhere; one zero communication delay
        if r["sweep_value"] == 3:
            r["communication_ms_mean"] = 0.0
        if r["policy"] == "pi_only" and r["sweep_value"] == 1:
            r["end_to_end_ms_mean"] = r["queuing_ms_mean"] = 65000.0
    plots.plot_performance(rows, "gsm8k", str(tmp_path / "p.png"), delay_scale="log", note_overlaps=True)
    plots.plot_delay_decomposition(rows, "gsm8k", str(tmp_path / "d.png"), delay_scale="log", note_overlaps=True)
    perf, delays = figs
    assert perf.axes[1].get_yscale() == "log" and "log scale" in perf.axes[1].get_title()
    assert delays.axes[1].get_yscale() == "symlog"  # zeros stay visible
    notes = [t.get_text() for t in perf.texts]
    assert any("PRADA and" in n and "overlap at M = 3-9" in n for n in notes), notes
    with pytest.raises(ValueError, match="delay scale"):
        plots.plot_performance(rows, "gsm8k", str(tmp_path / "x.png"), delay_scale="cubic")
    for fig in figs:
        plt.close(fig)


def test_bars_put_delays_on_log_axes_and_print_values(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    rows = [dict(r, sweep_param="none", policy=p) for r, p in zip(_rows(values=(0.07, 0.44, 113), policies=("x",)),
                                                                  ("all_slm", "pi_only", "prada"))]
    plots.plot_bars(rows, str(tmp_path / "b.png"))
    fig = figs[0]
    assert fig.axes[0].get_yscale() == "linear" and all(ax.get_yscale() == "log" for ax in fig.axes[1:])
    queuing = fig.axes[3]
    assert {"0.07", "0.44", "113"} <= {t.get_text() for t in queuing.texts}
    plt.close(fig)


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    for k, n in ((223, 264), (0, 77), (77, 77), (359, 604)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert plots.wilson_interval(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def _fig4_rows(num_problems):
    rows = []
    for d, n in (("gsm8k", 264), ("math500", 100)):
        same = d == "math500"  # pi_theta offloads nothing there: three methods on one spot
        for method, acc, cost in (("all_slm", 0.75, 0.08), ("pi_only", 0.75 if same else 0.9, 0.08 if same else 0.2),
                                  ("random_policy", 0.75 if same else 0.85, 0.08 if same else 0.27)):
            rows.append(dict(dataset=d, method=method, accuracy=acc, cost=cost, cost_unit="TFLOP per task",
                             num_problems=n if num_problems else None, evaluated_on="held-out problems"))
    return rows


def test_single_user_states_n_draws_intervals_and_flags_coinciding_markers(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    plots.plot_single_user(_fig4_rows(True), str(tmp_path / "f4.png"))
    plots.plot_single_user(_fig4_rows(False), str(tmp_path / "f4b.png"))
    fig, bare = figs
    assert "held-out problems, N = 264 / 100" in fig._suptitle.get_text()
    assert [ax.get_title() for ax in fig.axes] == ["gsm8k (N = 264)", "math500 (N = 100)"]
    assert "Wilson" in fig.legends[0].get_title().get_text()
    math500 = fig.axes[1]
    assert any("same point" in t.get_text() and "Random policy" in t.get_text() for t in math500.texts)
    assert not any("same point" in t.get_text() for t in fig.axes[0].texts)
    assert "no confidence intervals" in bare.legends[0].get_title().get_text()
    for f in figs:
        plt.close(f)


def test_paired_figure_has_a_difference_row_with_its_own_intervals(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    rows = []
    for m in (1, 9):
        row = {"server_capacity": float(m)}
        for metric in ("accuracy", "sojourn_ms", "utility"):
            row.update({f"{metric}_base": 0.9, f"{metric}_base_ci95": 0.05, f"{metric}_cand": 0.91,
                        f"{metric}_cand_ci95": 0.05, f"{metric}_diff": 0.01 * m, f"{metric}_diff_ci95": 0.002})
        rows.append(row)
    plots.plot_paired(rows, "server_capacity", str(tmp_path / "s.png"), "prada", "prada_exact", 8, "title")
    fig = figs[0]
    top, bottom = fig.axes[0], fig.axes[3]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "PRADA" in labels and "PRADA, exact Stage 2" in labels and "prada_exact" not in labels
    diff_line = [line for line in bottom.get_lines() if len(line.get_xdata()) == 2 and line.get_color() == "black"][0]
    assert list(diff_line.get_ydata()) == pytest.approx([1.0, 9.0])  # accuracy Δ in points
    assert "paired 95 % CI" in fig.legends[0].get_title().get_text() and bottom.get_ylabel() == "Δ accuracy (% points)"
    assert "each scheduler" in top.get_title()
    plt.close(fig)
