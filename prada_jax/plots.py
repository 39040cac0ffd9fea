"""Matplotlib figures and the Table 2 markdown, drawn only from result rows of real runs.

Rows are the dicts of `results.json` (prada_jax.sweep): `<metric>_mean` and `<metric>_ci95` per
(dataset, policy, sweep_value). Accuracy is stored as a fraction and drawn in percent; latencies are ms per task.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

POLICY_LABELS = {
    "all_slm": "All SLM",
    "all_llm": "All LLM",
    "pi_only": r"$\pi_\theta$ only",
    "prada": "PRADA",
    "random_policy": "Random policy",
    "random_scheduler": "Random scheduler",
    "router": "Router",
    "rsd": "RSD",
    "pi_frontier": r"$\pi_\theta$ over $\beta$ (3, 10, 30)",
}
TEXT_LABELS = dict(POLICY_LABELS, pi_only="π_θ only")  # plain-text labels (markdown)
PARAM_LABELS = {
    "bandwidth_bps": "Total bandwidth B (bit/s)",
    "server_capacity": "Server parallel capacity M",
    "arrival_rate": r"Arrival rate $\lambda$ (tasks per slot)",
    "beta": r"Trade-off weight $\beta$",
    "snr_db": "Mean SNR (dB)",
    "snr_threshold_db": r"SNR threshold $\gamma_{th}$ (dB)",
    "path_loss_exponent": "Path-loss exponent",
    "flops_slm": "SLM FLOP/s",
    "flops_llm": "LLM FLOP/s",
}
LOG_PARAMS = ("bandwidth_bps", "beta", "flops_slm", "flops_llm")
DELAYS = (("processing_ms", "Processing"), ("communication_ms", "Communication"), ("queuing_ms", "Queuing"))

# Paper Table 2 (reference values printed in the paper, section 5.2), for side-by-side comparison only.
# metric -> dataset -> policy -> value; None where the paper prints "-".
PAPER_TABLE2: dict[str, dict[str, dict[str, float | None]]] = {
    "accuracy": {
        "gsm8k": {"all_slm": 85.2, "pi_only": 93.9, "prada": 90.3},
        "gaokao2023en": {"all_slm": 66.2, "pi_only": 68.1, "prada": 67.3},
        "mmlu_stem": {"all_slm": 59.3, "pi_only": 70.4, "prada": 65.2},
    },
    "processing_ms": {
        "gsm8k": {"all_slm": 3.1, "pi_only": 9.9, "prada": 6.0},
        "gaokao2023en": {"all_slm": 5.8, "pi_only": 22.5, "prada": 11.7},
        "mmlu_stem": {"all_slm": 5.6, "pi_only": 15.3, "prada": 8.9},
    },
    "communication_ms": {
        "gsm8k": {"all_slm": None, "pi_only": None, "prada": 0.4},
        "gaokao2023en": {"all_slm": None, "pi_only": None, "prada": 0.6},
        "mmlu_stem": {"all_slm": None, "pi_only": None, "prada": 0.7},
    },
    "queuing_ms": {
        "gsm8k": {"all_slm": None, "pi_only": None, "prada": 2.5},
        "gaokao2023en": {"all_slm": None, "pi_only": None, "prada": 3.2},
        "mmlu_stem": {"all_slm": None, "pi_only": None, "prada": 3.8},
    },
}
TABLE2_METRICS = (
    ("accuracy", "Accuracy (%)"),
    ("processing_ms", "Avg. processing delay (ms/task)"),
    ("communication_ms", "Avg. communication delay (ms/task)"),
    ("queuing_ms", "Avg. queuing delay (ms/task)"),
    ("offload_fraction", "Offloaded steps (%)"),
    ("dropped", "Arrivals dropped (per episode; 0 in a stable run)"),
)


def label(policy: str) -> str:
    return POLICY_LABELS.get(policy, policy)


def _scale(metric: str) -> float:
    return 100.0 if metric in ("accuracy", "offload_fraction") else 1.0


def _select(rows: Iterable[dict], **match) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _unique(rows: Iterable[dict], key: str) -> list:
    seen: list = []
    for r in rows:
        if r[key] not in seen:
            seen.append(r[key])
    return seen


def _series(rows: list[dict], metric: str) -> tuple[list[float], list[float], list[float]]:
    rows = sorted(rows, key=lambda r: r["sweep_value"])
    s = _scale(metric)
    return (
        [r["sweep_value"] for r in rows],
        [r[f"{metric}_mean"] * s for r in rows],
        [_nan0(r[f"{metric}_ci95"]) * s for r in rows],
    )


def _nan0(x: float | None) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _axis(ax, param: str, metric_label: str) -> None:
    ax.set_xlabel(PARAM_LABELS.get(param, param))
    ax.set_ylabel(metric_label)
    if param in LOG_PARAMS:
        ax.set_xscale("log")
    if param == "server_capacity":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _require_sweep(rows: list[dict]) -> str:
    params = _unique(rows, "sweep_param")
    if len(params) != 1 or params[0] == "none":
        raise ValueError(f"line plots need rows of one swept parameter, got {params}")
    return params[0]


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _policy_lines(axes, rows: Sequence[dict], metrics: Sequence[str]) -> None:
    """One error-bar line per policy on each axis: metric i vs the swept value on axes[i]."""
    for policy in _unique(rows, "policy"):
        sub = _select(rows, policy=policy)
        for ax, metric in zip(axes, metrics):
            x, y, e = _series(sub, metric)
            ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=label(policy))


def plot_performance(rows: Sequence[dict], dataset: str, path: str, title: str | None = None) -> str:
    """Accuracy (a) and end-to-end delay (b) vs the swept parameter, one line per policy (Figs. 5 and 8)."""
    rows = _select(rows, dataset=dataset)
    param = _require_sweep(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _policy_lines(axes, rows, ("accuracy", "end_to_end_ms"))
    _axis(axes[0], param, "Accuracy (%)")
    _axis(axes[1], param, "End-to-end delay (ms/task)")
    axes[0].set_title("(a) accuracy")
    axes[1].set_title("(b) total delay")
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"{dataset}: performance vs {PARAM_LABELS.get(param, param)}", fontsize=10)
    return _save(fig, path)


def plot_delay_decomposition(rows: Sequence[dict], dataset: str, path: str, title: str | None = None) -> str:
    """Processing / communication / queuing delay vs the swept parameter, one line per policy (Figs. 6 and 7)."""
    rows = _select(rows, dataset=dataset)
    param = _require_sweep(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    _policy_lines(axes, rows, [metric for metric, _ in DELAYS])
    for ax, (letter, (_, name)) in zip(axes, zip("abc", DELAYS)):
        _axis(ax, param, f"{name} delay (ms/task)")
        ax.set_title(f"({letter}) {name.lower()}")
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"{dataset}: delay decomposition vs {PARAM_LABELS.get(param, param)}", fontsize=10)
    return _save(fig, path)


def plot_frontier(rows: Sequence[dict], dataset: str, path: str) -> str:
    """Accuracy vs end-to-end delay traced by the swept parameter (the beta frontier), one curve per policy."""
    rows = _select(rows, dataset=dataset)
    param = _require_sweep(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for policy in _unique(rows, "policy"):
        sub = sorted(_select(rows, policy=policy), key=lambda r: r["sweep_value"])
        x = [r["end_to_end_ms_mean"] for r in sub]
        y = [r["accuracy_mean"] * 100 for r in sub]
        ax.errorbar(
            x, y, xerr=[_nan0(r["end_to_end_ms_ci95"]) for r in sub],
            yerr=[_nan0(r["accuracy_ci95"]) * 100 for r in sub], marker="o", ms=3, capsize=2, label=label(policy),
        )
        if len(sub) > 1:
            for end in (sub[0], sub[-1]):
                ax.annotate(f"{param}={end['sweep_value']:g}", (end["end_to_end_ms_mean"], end["accuracy_mean"] * 100), fontsize=7)
    ax.set_xlabel("End-to-end delay (ms/task)")
    ax.set_ylabel("Accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{dataset}: accuracy-delay frontier over {param}", fontsize=10)
    return _save(fig, path)


def plot_bars(rows: Sequence[dict], path: str, title: str | None = None) -> str:
    """Unswept results: accuracy and the three delays per dataset, one bar per policy."""
    datasets = _unique(rows, "dataset")
    policies = _unique(rows, "policy")
    metrics = (("accuracy", "Accuracy (%)"),) + tuple((m, f"{n} delay (ms/task)") for m, n in DELAYS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.8))
    width = 0.8 / max(len(policies), 1)
    for i, policy in enumerate(policies):
        for ax, (metric, _) in zip(axes, metrics):
            ys, es = [], []
            for d in datasets:
                match = _select(rows, dataset=d, policy=policy)
                if len(match) != 1:
                    raise ValueError(f"bar plot needs exactly one row per (dataset, policy), got {len(match)} for {d}/{policy}")
                ys.append(match[0][f"{metric}_mean"] * _scale(metric))
                es.append(_nan0(match[0][f"{metric}_ci95"]) * _scale(metric))
            xs = [j + (i - (len(policies) - 1) / 2) * width for j in range(len(datasets))]
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=label(policy))
    for ax, (_, name) in zip(axes, metrics):
        ax.set_xticks(range(len(datasets)))
        ax.set_xticklabels(datasets, fontsize=8)
        ax.set_ylabel(name)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sweep_figures(rows: Sequence[dict], out_dir: str, prefix: str = "fig_") -> list[str]:
    """The figures experiments/sweep.py draws after a sweep: per dataset, performance + delay decomposition
    (line plots) for a swept parameter, plus the frontier for beta; bars when nothing is swept."""
    rows = list(rows)
    if not rows:
        return []
    params = _unique(rows, "sweep_param")
    if params == ["none"]:
        return [plot_bars(rows, os.path.join(out_dir, f"{prefix}bars.png"))]
    paths = []
    for dataset in _unique(rows, "dataset"):
        paths.append(plot_performance(rows, dataset, os.path.join(out_dir, f"{prefix}{dataset}_accuracy_delay.png")))
        paths.append(plot_delay_decomposition(rows, dataset, os.path.join(out_dir, f"{prefix}{dataset}_delays.png")))
        if params == ["beta"]:
            paths.append(plot_frontier(rows, dataset, os.path.join(out_dir, f"{prefix}{dataset}_frontier.png")))
    return paths


def _fmt(value: float | None, ci: float | None = None, digits: int = 1) -> str:
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    if ci is not None and not math.isnan(ci):
        text += f" ± {ci:.{digits}f}"
    return text


def table2_markdown(rows: Sequence[dict], policies: Sequence[str] = ("all_slm", "pi_only", "prada")) -> str:
    """Table 2 as markdown: for each dataset and metric, ours (mean ± 95% CI) next to the paper's value."""
    rows = list(rows)
    datasets = _unique(rows, "dataset")
    head = ["Dataset", "Metric"]
    for p in policies:
        name = TEXT_LABELS.get(p, p)
        head += [f"{name} (ours)", f"{name} (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in datasets:
        for metric, name in TABLE2_METRICS:
            cells = [d, name]
            for p in policies:
                match = _select(rows, dataset=d, policy=p)
                if len(match) != 1:
                    raise ValueError(f"Table 2 needs one row for {d}/{p}, got {len(match)}")
                s = _scale(metric)
                digits = 2 if metric.endswith("_ms") else 1
                cells.append(_fmt(match[0][f"{metric}_mean"] * s, _nan0(match[0][f"{metric}_ci95"]) * s, digits))
                cells.append(_fmt(PAPER_TABLE2.get(metric, {}).get(d, {}).get(p)))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_single_user(results: Sequence[dict[str, Any]], path: str) -> str:
    """Fig. 4: accuracy vs computation cost per dataset for each single-user method.

    `results` rows: {dataset, method, accuracy (fraction), cost, cost_unit}; methods with several rows
    (e.g. RSD over thresholds) are drawn as a line. All rows must share one cost unit.
    """
    results = list(results)
    if not results:
        raise ValueError("Fig. 4 needs at least one result row")
    units = _unique(results, "cost_unit")
    if len(units) != 1:
        raise ValueError(f"Fig. 4 rows must share one cost unit, got {units}")
    datasets = _unique(results, "dataset")
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.8), squeeze=False)
    markers = {"all_slm": "s", "all_llm": "^", "pi_only": "o", "random_policy": "v", "rsd": "D", "pi_frontier": "."}
    for ax, d in zip(axes[0], datasets):
        for method in _unique(_select(results, dataset=d), "method"):
            sub = sorted(_select(results, dataset=d, method=method), key=lambda r: r["cost"])
            x = [r["cost"] for r in sub]
            y = [r["accuracy"] * 100 for r in sub]
            style = "-" if len(sub) > 1 else ""
            ax.plot(x, y, style, marker=markers.get(method, "x"), ms=7, label=label(method))
        ax.set_title(d, fontsize=10)
        ax.set_xlabel(f"Computation cost ({units[0]})")
        ax.set_ylabel("Accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)
