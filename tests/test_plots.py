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
