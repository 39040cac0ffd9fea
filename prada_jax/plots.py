"""Matplotlib figures and the Table 2 markdown, drawn only from result rows of real runs.

Rows are the dicts of `results.json` (prada_jax.sweep): `<metric>_mean` and `<metric>_ci95` per
(dataset, policy, sweep_value). Accuracy is stored as a fraction and drawn in percent; latencies are ms per task.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from prada_jax.paper import PAPER_TABLE2  # noqa: E402  (re-exported: the Table 2 markdown's paper columns)
from prada_jax.sim import registry  # noqa: E402
from prada_jax.sweep.report import value_label  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# Presentation: how figures and tables draw policies and parameters. The simulator's registry
# (prada_jax.sim.registry) says what a policy or parameter *is*; this says how it looks. A policy registered there
# without a look here is drawn under its name with a grey 'x'; a parameter without an axis gets its help text and
# unit as axis label and a linear axis.
# ---------------------------------------------------------------------------------------------------------------

DEFAULT_STYLE = ("#333333", "x")


@dataclasses.dataclass(frozen=True)
class PolicyLook:
    label: str  # figure label (matplotlib mathtext allowed)
    text_label: str  # plain text (tables, markdown)
    style: tuple[str, str]  # (colour, marker), the same in every figure


@dataclasses.dataclass(frozen=True)
class ParamAxis:
    label: str
    log_scale: bool


_POLICY_LOOKS: dict[str, PolicyLook] = {}
_PARAM_AXES: dict[str, ParamAxis] = {}


def register_policy_look(name: str, label: str, *, text_label: str = "",
                         style: tuple[str, str] = DEFAULT_STYLE) -> PolicyLook:
    """How every figure and table draws policy (or Fig. 4 method) `name`; a later call replaces an earlier one."""
    look = PolicyLook(label, text_label or label, tuple(style))
    _POLICY_LOOKS[name] = look
    return look


def register_param_axis(name: str, label: str = "", *, log_scale: bool = False) -> None:
    """The axis label (default: the registered help text and unit) and scale of system parameter `name`."""
    _PARAM_AXES[name] = ParamAxis(label, bool(log_scale))


def _default_param_label(name: str) -> str:
    param = registry.PARAMS.get(name)
    if param is None:
        return name
    return param.help.rstrip(".") + (f" ({param.unit})" if param.unit and f"({param.unit})" not in param.help else "")


class _Looks(Mapping):
    """Live read-only view: every registered policy (and every name with a look, such as Fig. 4's "pi_frontier")
    -> one attribute of its look, or the default."""

    def __init__(self, get: Callable[[str, PolicyLook | None], Any]):
        self._get = get

    def _names(self) -> list[str]:
        return list(registry.POLICIES) + [k for k in _POLICY_LOOKS if k not in registry.POLICIES]

    def __getitem__(self, name):
        if name not in registry.POLICIES and name not in _POLICY_LOOKS:
            raise KeyError(name)
        return self._get(name, _POLICY_LOOKS.get(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


class _Axes(Mapping):
    """Live read-only view: every registered system parameter -> its axis label."""

    def __getitem__(self, name):
        if name not in registry.PARAMS:
            raise KeyError(name)
        axis = _PARAM_AXES.get(name)
        return axis.label if axis is not None and axis.label else _default_param_label(name)

    def __iter__(self) -> Iterator[str]:
        return iter(registry.PARAMS)

    def __len__(self) -> int:
        return len(registry.PARAMS)


POLICY_LABELS = _Looks(lambda name, look: look.label if look else name)
TEXT_LABELS = _Looks(lambda name, look: look.text_label if look else name)  # plain text (markdown)
POLICY_STYLES = _Looks(lambda name, look: look.style if look else DEFAULT_STYLE)
PARAM_LABELS = _Axes()
LOG_PARAMS = registry.NamesView(registry.PARAMS, lambda p: p.name in _PARAM_AXES and _PARAM_AXES[p.name].log_scale)
OVERLOAD_NOTE = "hollow marker: overloaded (arrivals dropped or tasks unfinished)"

register_policy_look("all_slm", "All SLM", style=("#7f7f7f", "s"))
register_policy_look("all_llm", "All LLM", style=("#8c564b", "^"))
register_policy_look("pi_only", r"$\pi_\theta$ only", text_label="π_θ only", style=("#9467bd", "D"))
register_policy_look("prada", "PRADA", style=("#1f77b4", "o"))
register_policy_look("prada_exact", "PRADA, exact Stage 2", style=("#17becf", "*"))
register_policy_look("learned", "Learned Stage 2", style=("#bcbd22", "h"))
register_policy_look("random_policy", "Random policy", style=("#ff7f0e", "v"))
register_policy_look("random_scheduler", "Random scheduler", style=("#2ca02c", "P"))
register_policy_look("router", "Router", style=("#e377c2", "X"))
register_policy_look("rsd", "RSD", style=("#d62728", "d"))
register_policy_look("pi_frontier", r"$\pi_\theta$ over $\beta$ (3, 10, 30)", style=("#9467bd", "."))  # Fig. 4 only

register_param_axis("bandwidth_bps", "Total bandwidth B (bit/s)", log_scale=True)
register_param_axis("server_capacity", "Server parallel capacity M")
register_param_axis("arrival_rate", r"Arrival rate $\lambda$ (tasks per ms)")
register_param_axis("beta", r"Stage-2 trade-off weight $\beta$ (1/s)", log_scale=True)
register_param_axis("snr_db", "Mean SNR (dB)")
register_param_axis("snr_threshold_db", r"SNR threshold $\gamma_{th}$ (dB)")
register_param_axis("path_loss_exponent", "Path-loss exponent")
register_param_axis("flops_slm", "SLM FLOP/s", log_scale=True)
register_param_axis("flops_llm", "LLM FLOP/s", log_scale=True)
for _side in ("server", "edge"):
    register_param_axis(f"{_side}_peak_flops", log_scale=True)
    register_param_axis(f"{_side}_memory_bandwidth", log_scale=True)

DELAYS = (("processing_ms", "Processing"), ("communication_ms", "Communication"), ("queuing_ms", "Queuing"))

TABLE2_METRICS = (
    ("accuracy", "Accuracy (%)"),
    ("processing_ms", "Avg. processing delay (ms/task)"),
    ("communication_ms", "Avg. communication delay (ms/task)"),
    ("queuing_ms", "Avg. queuing delay (ms/task)"),
    ("sojourn_ms", "Sojourn time, wall clock (ms/task)"),
    ("offload_fraction", "Offloaded steps (%)"),
    ("unfinished", "Unfinished tasks (per episode; 0 in a stable run)"),
    ("dropped", "Arrivals dropped (per episode; 0 in a stable run)"),
)
OVERLOAD_FLAG = "⚠"


def label(policy: str) -> str:
    return POLICY_LABELS.get(policy, policy)


def policy_style(policy: str) -> dict:
    """matplotlib colour and marker of a policy (grey 'x' for names without a registered style)."""
    color, marker = POLICY_STYLES.get(policy, ("#333333", "x"))
    return {"color": color, "marker": marker}


def ci_label(rows: Iterable[dict]) -> str:
    """What the error bars are: '95 % CI (Student t) over N episodes' (N from the rows)."""
    counts = sorted({int(r["episodes"]) for r in rows if r.get("episodes") is not None})
    n = "?" if not counts else (str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}")
    return f"error bars: 95 % CI (Student t) over {n} episodes"


def _overloaded(row: dict) -> bool:
    value = row.get("overloaded_mean")
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value > 0


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
        [math.nan if _missing(r[f"{metric}_mean"]) else r[f"{metric}_mean"] * s for r in rows],
        [_nan0(r[f"{metric}_ci95"]) * s for r in rows],
    )


def _nan0(x: float | None) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _axis(ax, param: str, metric_label: str) -> None:
    ax.set_xlabel(PARAM_LABELS.get(param, param))
    ax.set_ylabel(metric_label)
    if param in LOG_PARAMS:
        xs = [x for line in ax.get_lines() for x in np.asarray(line.get_xdata(), float).reshape(-1)
              if line.get_transform() is not None and math.isfinite(x)]
        positive = [x for x in xs if x > 0]
        if positive and min(xs) <= 0:  # e.g. beta = 0 (accuracy only): symlog keeps the point on the axis
            ax.set_xscale("symlog", linthresh=min(positive))
        else:
            ax.set_xscale("log")
    if param == "server_capacity":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


DELAY_SCALES = ("linear", "log")


def _in_sentence(text: str) -> str:
    """A label used mid-sentence: 'Arrival rate λ' -> 'arrival rate λ'; acronyms and names with digits ('SLM
    FLOP/s', 'Stage-2 ...') are kept as they are."""
    word = text.split(" ", 1)[0]
    if len(word) > 1 and word[0].isupper() and word[1:].replace("-", "").isalpha() and word[1:] == word[1:].lower():
        return text[0].lower() + text[1:]
    return text


def _check_delay_scale(scale: str) -> None:
    if scale not in DELAY_SCALES:
        raise ValueError(f"delay scale must be one of {DELAY_SCALES}, got {scale!r}")


def _delay_yscale(ax, scale: str, values: Iterable[float]) -> str:
    """Put a delay axis on `scale` ('linear' or 'log'); returns the note for its panel title ('' when linear). With
    'log', a panel with zero delays (e.g. All SLM's communication) is drawn symlog: linear from 0 up to the decade
    below its smallest positive value, logarithmic above, so that zeros stay visible."""
    _check_delay_scale(scale)
    if scale == "linear":
        return ""
    values = [v for v in values if v is not None and math.isfinite(v)]
    positive = [v for v in values if v > 0]
    if not positive:
        return ""
    if len(positive) == len(values):
        ax.set_yscale("log")
        return "log scale"
    linthresh = 10.0 ** max(math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive))) - 6)
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.7)
    return f"log scale, linear below {linthresh:g} ms"


def _require_sweep(rows: list[dict]) -> str:
    params = _unique(rows, "sweep_param")
    if len(params) != 1 or params[0] == "none":
        raise ValueError(f"line plots need rows of one swept parameter, got {params}")
    return params[0]


class FigureWriteError(RuntimeError):
    """A figure could not be written (a full disk, an unwritable folder); the message names the file."""


def _save(fig, path: str, bottom: float = 0.0) -> str:
    """Draw `fig` into `path` (through path.tmp, renamed when complete: a full disk leaves no half-written PNG);
    FigureWriteError naming the file when it cannot be written."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
        tmp = path + ".tmp"
        try:
            fig.savefig(tmp, dpi=130, format=os.path.splitext(path)[1][1:] or "png")
            os.replace(tmp, path)
        except OSError:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as err:
        raise FigureWriteError(f"{path}: cannot write the figure ({err.strerror or err}); free space and rerun (the "
                               "results are kept; --plots draws them again)") from None
    finally:
        plt.close(fig)
    return path


NA_NOTE = "n/a: undefined (no task entered the system)"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _mark_na(ax, xs: Sequence[float], color: str = "black") -> None:
    """An 'n/a' mark at the bottom of the axis at each swept value whose metric is undefined (never a silent gap)."""
    for x in xs:
        ax.plot([x], [0.0], transform=ax.get_xaxis_transform(), marker="x", ms=6, color=color, clip_on=False,
                linestyle="none", zorder=6)
        ax.annotate("n/a", (x, 0.0), xycoords=ax.get_xaxis_transform(), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize=6, color=color)


def _na_panel(ax, what: str = "at every point") -> None:
    """Say so on a panel whose metric is undefined everywhere (instead of an empty panel)."""
    ax.text(0.5, 0.5, f"n/a {what}:\nno task entered the system", transform=ax.transAxes, ha="center",
            va="center", fontsize=9, color="0.3")


def _policy_lines(axes, rows: Sequence[dict], metrics: Sequence[str]) -> bool:
    """One error-bar line per policy on each axis (metric i vs the swept value on axes[i]), in the policy's fixed
    style; overloaded points get a hollow marker, undefined points an 'n/a' mark at the bottom, and a panel with no
    defined point says so. Returns whether any point was overloaded."""
    any_over = False
    drawn = [False] * len(axes)
    for policy in _unique(rows, "policy"):
        sub = sorted(_select(rows, policy=policy), key=lambda r: r["sweep_value"])
        style = policy_style(policy)
        over = [_overloaded(r) for r in sub]
        any_over |= any(over)
        for i, (ax, metric) in enumerate(zip(axes, metrics)):
            x, y, e = _series(sub, metric)
            _mark_na(ax, [xi for xi, yi in zip(x, y) if _missing(yi)], style["color"])
            drawn[i] |= any(not _missing(yi) for yi in y)
            ax.errorbar(x, y, yerr=e, ms=4, capsize=2, label=label(policy), **style)
            hollow = [(xi, yi) for xi, yi, o in zip(x, y, over) if o]
            if hollow:
                ax.plot(*zip(*hollow), linestyle="none", marker=style["marker"], ms=8, mfc="white",
                        mec=style["color"], mew=1.2, zorder=5)
    for ax, ok in zip(axes, drawn):
        if not ok:
            _na_panel(ax)
    return any_over


def _figure_legend(fig, axes, rows, any_over: bool, y: float = 0.0) -> None:
    """One legend below the axes (never over data) whose title says what the error bars are."""
    handles, labels = axes[0].get_legend_handles_labels()
    if any_over:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], linestyle="none", marker="o", mfc="white", mec="black"))
        labels.append(OVERLOAD_NOTE)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False,
               title=ci_label(rows), title_fontsize=8, bbox_to_anchor=(0.5, y))


def _short(value: float) -> str:
    """3 -> '3', 0.5 -> '0.5', 300000 -> '3e5'."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _ranges(values: Sequence[float], order: Sequence[float]) -> str:
    """'7-20' for a contiguous run of the swept values (in sweep order), else '1, 3, 9'."""
    idx = sorted(order.index(v) for v in values)
    runs, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            runs.append(_short(order[start]) if start == a else f"{_short(order[start])}-{_short(order[a])}")
            start = b
    return ", ".join(runs)


def overlap_note(rows: Sequence[dict], metrics: Sequence[str], param: str) -> str:
    """Which pairs of policies draw on top of each other: at which swept values every drawn metric's means lie
    within each other's 95 % CIs (and within 1 %). '' when none do."""
    policies = _unique(rows, "policy")
    order = sorted(_unique(rows, "sweep_value"))
    symbol = {"server_capacity": "M", "bandwidth_bps": "B", "arrival_rate": "λ", "beta": "β"}.get(param, param)
    notes = []
    for i, a in enumerate(policies):
        for b in policies[i + 1:]:
            same = []
            for v in order:
                ra, rb = _select(rows, policy=a, sweep_value=v), _select(rows, policy=b, sweep_value=v)
                if len(ra) != 1 or len(rb) != 1:
                    continue
                ra, rb = ra[0], rb[0]
                if all(abs(ra[f"{m}_mean"] - rb[f"{m}_mean"]) <= max(_nan0(ra[f"{m}_ci95"]), _nan0(rb[f"{m}_ci95"]),
                                                                     0.01 * max(abs(ra[f"{m}_mean"]), abs(rb[f"{m}_mean"])))
                       for m in metrics):
                    same.append(v)
            if same:
                notes.append(f"{label(a)} and {label(b)} overlap at {symbol} = {_ranges(same, order)}")
    return "; ".join(notes) + (" (means within each other's 95 % CI)" if notes else "")


def _legend_and_note(fig, axes, rows, any_over: bool, note: str) -> float:
    """The figure legend, with `note` (if any) on a line of its own below it; returns the bottom margin to keep."""
    if not note:
        _figure_legend(fig, axes, rows, any_over)
        return 0.15
    fig.text(0.5, 0.008, note, ha="center", va="bottom", fontsize=7.5, style="italic")
    _figure_legend(fig, axes, rows, any_over, y=0.04)
    return 0.19


def plot_performance(rows: Sequence[dict], dataset: str, path: str, title: str | None = None,
                     delay_scale: str = "linear", note_overlaps: bool = False) -> str:
    """Accuracy (a) and end-to-end delay (b) vs the swept parameter, one line per policy (Figs. 5 and 8).

    End-to-end delay is processing + communication + queuing (the sojourn time also counts slot alignment).
    `delay_scale='log'` draws panel (b) on a log axis (overloaded points far above the rest); `note_overlaps`
    names policies whose points draw on top of each other."""
    rows = _select(rows, dataset=dataset)
    param = _require_sweep(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    any_over = _policy_lines(axes, rows, ("accuracy", "end_to_end_ms"))
    note = _delay_yscale(axes[1], delay_scale, [r["end_to_end_ms_mean"] for r in rows])
    _axis(axes[0], param, "Accuracy (%)")
    _axis(axes[1], param, "End-to-end delay (ms/task)")
    axes[0].set_title("(a) accuracy", fontsize=10)
    axes[1].set_title("(b) end-to-end delay (processing + communication + queuing)" + (f"\n{note}" if note else ""),
                      fontsize=9)
    bottom = _legend_and_note(fig, axes, rows, any_over,
                              overlap_note(rows, ("accuracy", "end_to_end_ms"), param) if note_overlaps else "")
    fig.suptitle(title or f"{dataset}: performance vs {_in_sentence(PARAM_LABELS.get(param, param))}", fontsize=10)
    return _save(fig, path, bottom=bottom)


def plot_delay_decomposition(rows: Sequence[dict], dataset: str, path: str, title: str | None = None,
                             delay_scale: str = "linear", note_overlaps: bool = False) -> str:
    """Processing / communication / queuing delay vs the swept parameter, one line per policy (Figs. 6 and 7).
    `delay_scale` and `note_overlaps` as in plot_performance (here for all three panels)."""
    rows = _select(rows, dataset=dataset)
    param = _require_sweep(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    any_over = _policy_lines(axes, rows, [metric for metric, _ in DELAYS])
    for ax, (letter, (metric, name)) in zip(axes, zip("abc", DELAYS)):
        note = _delay_yscale(ax, delay_scale, [r[f"{metric}_mean"] for r in rows])
        _axis(ax, param, f"{name} delay (ms/task)")
        ax.set_title(f"({letter}) {name.lower()}" + (f"\n{note}" if note else ""), fontsize=10)
    bottom = _legend_and_note(fig, axes, rows, any_over,
                              overlap_note(rows, [metric for metric, _ in DELAYS], param) if note_overlaps else "")
    fig.suptitle(title or f"{dataset}: delay decomposition vs {_in_sentence(PARAM_LABELS.get(param, param))}",
                 fontsize=10)
    return _save(fig, path, bottom=bottom)


def _constant(rows: Sequence[dict], metrics: Sequence[str]) -> bool:
    """Whether every row has the same mean of each metric (a policy the swept parameter does not act on)."""
    return len(rows) > 1 and all(not _missing(r[f"{m}_mean"]) and not _missing(rows[0][f"{m}_mean"]) and
                                 math.isclose(r[f"{m}_mean"], rows[0][f"{m}_mean"], rel_tol=1e-9, abs_tol=1e-12)
                                 for r in rows for m in metrics)


def plot_frontier(rows: Sequence[dict], dataset: str, path: str, title: str | None = None) -> str:
    """Accuracy vs end-to-end delay traced by the swept parameter (the beta frontier), one curve per policy; a
    policy whose rows do not change with the parameter is one marker labelled '(independent of β)'."""
    rows = _select(rows, dataset=dataset)
    param = _require_sweep(rows)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    symbol = {"beta": "β"}.get(param, param)
    curves = 0
    undefined = []
    for policy in _unique(rows, "policy"):
        sub = sorted(_select(rows, policy=policy), key=lambda r: r["sweep_value"])
        undefined += [f"{label(policy)} at {symbol} = {value_label(r['sweep_value'])}" for r in sub
                      if _missing(r["accuracy_mean"]) or _missing(r["end_to_end_ms_mean"])]
        sub = [r for r in sub if not (_missing(r["accuracy_mean"]) or _missing(r["end_to_end_ms_mean"]))]
        if not sub:
            continue
        style = policy_style(policy)
        if _constant(sub, ("accuracy", "end_to_end_ms")):
            r = sub[0]
            ax.errorbar([r["end_to_end_ms_mean"]], [r["accuracy_mean"] * 100], xerr=[_nan0(r["end_to_end_ms_ci95"])],
                        yerr=[_nan0(r["accuracy_ci95"]) * 100], ms=6, capsize=2, linestyle="none",
                        label=f"{label(policy)} (independent of {symbol})", **style)
            continue
        x = [r["end_to_end_ms_mean"] for r in sub]
        y = [r["accuracy_mean"] * 100 for r in sub]
        ax.errorbar(
            x, y, xerr=[_nan0(r["end_to_end_ms_ci95"]) for r in sub],
            yerr=[_nan0(r["accuracy_ci95"]) * 100 for r in sub], ms=4, capsize=2, label=label(policy), **style,
        )
        if len(sub) > 1:  # label the two ends, offset apart so that labels of different curves do not overprint
            for end, (dx, dy) in ((sub[0], (6, 6 + 10 * curves)), (sub[-1], (6, -12 - 10 * curves))):
                ax.annotate(f"{symbol} = {value_label(end['sweep_value'])}",
                            (end["end_to_end_ms_mean"], end["accuracy_mean"] * 100),
                            xytext=(dx, dy), textcoords="offset points", fontsize=7, color=style["color"],
                            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
        curves += 1
    if undefined:  # points with no defined accuracy or delay cannot be placed: listed, never silently missing
        shown = "; ".join(undefined[:6]) + (f"; +{len(undefined) - 6} more" if len(undefined) > 6 else "")
        ax.text(0.01, 0.01, f"n/a (no task entered): {shown}", transform=ax.transAxes, fontsize=6, color="0.3",
                va="bottom", wrap=True)
        if not curves and not ax.lines:
            _na_panel(ax)
    ax.set_xlabel("End-to-end delay (ms/task; processing + communication + queuing)", fontsize=9)
    ax.set_ylabel("Accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False,
               title=ci_label(rows), title_fontsize=8)
    ax.set_title(title or f"{dataset}: accuracy-delay frontier over {_in_sentence(PARAM_LABELS.get(param, param))}",
                 fontsize=9)
    return _save(fig, path, bottom=0.12)


def _bar_value(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"


def plot_bars(rows: Sequence[dict], path: str, title: str | None = None, delay_scale: str = "log") -> str:
    """Unswept results: accuracy and the three delays per dataset, one bar per policy. Delay panels are drawn on
    a log axis by default (one overloaded bar would otherwise flatten the rest) with each bar's value printed on
    it; `delay_scale='linear'` draws them linearly."""
    _check_delay_scale(delay_scale)
    datasets = _unique(rows, "dataset")
    policies = _unique(rows, "policy")
    metrics = (("accuracy", "Accuracy (%)"),) + tuple((m, f"{n} delay (ms/task)") for m, n in DELAYS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4.2))
    width = 0.8 / max(len(policies), 1)
    values: dict[str, list[tuple[float, float]]] = {m: [] for m, _ in metrics}
    for i, policy in enumerate(policies):
        for ax, (metric, _) in zip(axes, metrics):
            ys, es = [], []
            for d in datasets:
                match = _select(rows, dataset=d, policy=policy)
                if len(match) != 1:
                    raise ValueError(f"bar plot needs exactly one row per (dataset, policy), got {len(match)} for {d}/{policy}")
                mean = match[0][f"{metric}_mean"]
                ys.append(math.nan if _missing(mean) else mean * _scale(metric))
                es.append(_nan0(match[0][f"{metric}_ci95"]) * _scale(metric))
            xs = [j + (i - (len(policies) - 1) / 2) * width for j in range(len(datasets))]
            values[metric] += [(xb, yb, yb + eb) for xb, yb, eb in zip(xs, ys, es)]
            over = [_overloaded(_select(rows, dataset=d, policy=policy)[0]) for d in datasets]
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=label(policy), color=policy_style(policy)["color"],
                   hatch=None, edgecolor="black", linewidth=0.3)
            for xb, yb, o in zip(xs, ys, over):
                if o:  # overloaded: hatched overlay
                    ax.bar([xb], [yb], width, fill=False, hatch="///", edgecolor="black", linewidth=0.0)
    for ax, (metric, name) in zip(axes, metrics):
        ax.set_xticks(range(len(datasets)))
        ax.set_xticklabels(datasets, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylabel(name)
        missing = [xb for xb, yb, _ in values[metric] if _missing(yb)]
        _mark_na(ax, missing)
        values[metric] = [v for v in values[metric] if not _missing(v[1])]
        if not values[metric]:
            _na_panel(ax, "for every policy")
            continue
        if metric == "accuracy" or delay_scale == "linear":
            continue
        positive = [y for _, y, _ in values[metric] if y > 0]
        if not positive:
            continue
        floor = 10.0 ** math.floor(math.log10(min(positive) / 2))  # at least half a decade below the lowest bar
        ax.set_yscale("log")
        ax.set_ylim(floor, max(top for _, _, top in values[metric]) * 40)
        for xb, yb, top in values[metric]:  # every bar's value above its error bar (a zero bar has no height here)
            ax.text(xb, max(top, floor) * 1.2, _bar_value(yb), ha="center", va="bottom", rotation=90, fontsize=6)
    handles, labels_ = axes[0].get_legend_handles_labels()
    if any(_overloaded(r) for r in rows):
        from matplotlib.patches import Patch

        handles.append(Patch(fill=False, hatch="///"))
        labels_.append("hatched: overloaded (arrivals dropped or tasks unfinished)")
    legend_title = ci_label(rows) + ("; delays on log axes, each bar's value (ms/task) printed above it"
                                     if delay_scale == "log" else "")
    fig.legend(handles, labels_, loc="lower center", ncol=min(len(labels_), 4), fontsize=8, frameon=False,
               title=legend_title, title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, bottom=0.2)


def sweep_figures(rows: Sequence[dict], out_dir: str, prefix: str = "fig_") -> list[str]:
    """The figures prada-sweep draws after a sweep: per dataset, performance + delay decomposition
    (line plots) for a swept parameter, plus the frontier for beta; bars when nothing is swept."""
    rows = list(rows)
    if not rows:
        return []
    params = _unique(rows, "sweep_param")
    if params == ["none"]:
        return [plot_bars(rows, os.path.join(out_dir, f"{prefix}bars.png"))]
    if params == ["grid"]:
        return grid_figures(rows, out_dir, prefix)
    paths = []
    for dataset in _unique(rows, "dataset"):
        paths.append(plot_performance(rows, dataset, os.path.join(out_dir, f"{prefix}{dataset}_accuracy_delay.png")))
        paths.append(plot_delay_decomposition(rows, dataset, os.path.join(out_dir, f"{prefix}{dataset}_delays.png")))
        if params == ["beta"]:
            paths.append(plot_frontier(rows, dataset, os.path.join(out_dir, f"{prefix}{dataset}_frontier.png")))
    return paths


def grid_parameters(rows: Sequence[dict]) -> list[str]:
    """The parameters of a --grid sweep's rows (their columns named after registered parameters), in column order."""
    return [k for k in rows[0] if k in registry.PARAMS] if rows else []


def grid_figures(rows: Sequence[dict], out_dir: str, prefix: str = "fig_") -> list[str]:
    """Figures of a --grid sweep: the last grid parameter on the x axis, one accuracy/delay figure per dataset and
    per combination of the other grid parameters' values (e.g. one curve over B per server capacity M)."""
    rows = list(rows)
    names = grid_parameters(rows)
    if not names:
        raise ValueError("grid rows carry no grid-parameter columns")
    x, fixed = names[-1], names[:-1]
    paths = []
    for dataset in _unique(rows, "dataset"):
        sub = _select(rows, dataset=dataset)
        for combo in _unique([{"k": tuple(r[n] for n in fixed)} for r in sub], "k"):
            match = dict(zip(fixed, combo))
            slice_rows = [dict(r, sweep_param=x, sweep_value=r[x]) for r in _select(sub, **match)]
            tag = "_".join(f"{n}={value_label(v)}" for n, v in match.items())
            title = f"{dataset}, {', '.join(f'{n} = {value_label(v)}' for n, v in match.items())}: performance vs " \
                    f"{PARAM_LABELS.get(x, x)}" if match else None
            name = f"{prefix}{dataset}{'_' + tag if tag else ''}_accuracy_delay.png"
            paths.append(plot_performance(slice_rows, dataset, os.path.join(out_dir, name), title=title))
    return paths


def _fmt(value: float | None, ci: float | None = None, digits: int = 1) -> str:
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    if ci is not None and not math.isnan(ci):
        text += f" ± {ci:.{digits}f}"
    return text


def table2_markdown(rows: Sequence[dict], policies: Sequence[str] = ("all_slm", "pi_only", "prada"),
                    with_paper: bool = True) -> str:
    """Table 2 as markdown: for each dataset and metric, ours (mean ± 95% CI) next to the paper's value (only
    ours when `with_paper` is False)."""
    rows = list(rows)
    datasets = _unique(rows, "dataset")
    head = ["Dataset", "Metric"]
    for p in policies:
        name = TEXT_LABELS.get(p, p)
        head += [f"{name} (ours)", f"{name} (paper)"] if with_paper else [name]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flagged = False
    for d in datasets:
        for metric, name in TABLE2_METRICS:
            cells = [d, name]
            for p in policies:
                match = _select(rows, dataset=d, policy=p)
                if len(match) != 1:
                    raise ValueError(f"Table 2 needs one row for {d}/{p}, got {len(match)}")
                s = _scale(metric)
                digits = 2 if metric.endswith("_ms") else 1
                row = match[0]
                if f"{metric}_mean" not in row:  # results written before this column existed
                    cells += ["n/a", _fmt(PAPER_TABLE2.get(metric, {}).get(d, {}).get(p))][:2 if with_paper else 1]
                    continue
                text = _fmt(row[f"{metric}_mean"] * s, _nan0(row[f"{metric}_ci95"]) * s, digits)
                if _overloaded(row):
                    text = f"{OVERLOAD_FLAG} {text}"
                    flagged = True
                cells.append(text)
                if with_paper:
                    cells.append(_fmt(PAPER_TABLE2.get(metric, {}).get(d, {}).get(p)))
            lines.append("| " + " | ".join(cells) + " |")
    if flagged:
        lines.append("")
        lines.append(f"{OVERLOAD_FLAG} overloaded run: arrivals were dropped for lack of user slots or tasks were still "
                     "unfinished when the drain ended. Its delays are bounded by the user-slot cap (and include "
                     "censored tasks as lower bounds), so read them as \"does not keep up\", not as a delay.")
    return "\n".join(lines) + "\n"


def wilson_interval(p: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lower, upper) of a proportion p observed on n items."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return max(center - half, 0.0), min(center + half, 1.0)


def _coinciding(points: Sequence[tuple[str, float, float]]) -> list[tuple[list[str], float, float]]:
    """Groups of >= 2 methods whose single markers sit on the same (cost, accuracy)."""
    groups: list[tuple[list[str], float, float]] = []
    for method, x, y in points:
        for names, gx, gy in groups:
            if math.isclose(x, gx, rel_tol=1e-6, abs_tol=1e-9) and math.isclose(y, gy, rel_tol=1e-6, abs_tol=1e-9):
                names.append(method)
                break
        else:
            groups.append(([method], x, y))
    return [g for g in groups if len(g[0]) > 1]


def plot_single_user(results: Sequence[dict[str, Any]], path: str, title: str | None = None) -> str:
    """Fig. 4: accuracy vs computation cost per dataset for each single-user method.

    `results` rows: {dataset, method, accuracy (fraction), cost, cost_unit} and optionally num_problems (the
    problems the accuracy is averaged over) and evaluated_on; methods with several rows (e.g. RSD over thresholds)
    are drawn as a line. All rows must share one cost unit. With num_problems, each point gets a binomial 95 %
    (Wilson) interval from N; markers of several methods on the same spot are annotated.
    """
    results = list(results)
    if not results:
        raise ValueError("Fig. 4 needs at least one result row")
    units = _unique(results, "cost_unit")
    if len(units) != 1:
        raise ValueError(f"Fig. 4 rows must share one cost unit, got {units}")
    datasets = _unique(results, "dataset")
    sizes = {}
    for d in datasets:
        found = {r.get("num_problems") for r in _select(results, dataset=d)}
        n = found.pop() if len(found) == 1 else None
        sizes[d] = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4.3), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        singles = []
        for method in _unique(_select(results, dataset=d), "method"):
            sub = sorted(_select(results, dataset=d, method=method), key=lambda r: r["cost"])
            x = [r["cost"] for r in sub]
            y = [r["accuracy"] * 100 for r in sub]
            style = "-" if len(sub) > 1 else "none"
            if sizes[d]:
                bounds = [wilson_interval(r["accuracy"], sizes[d]) for r in sub]
                yerr = [[yi - lo * 100 for yi, (lo, _) in zip(y, bounds)], [hi * 100 - yi for yi, (_, hi) in zip(y, bounds)]]
                ax.errorbar(x, y, yerr=yerr, linestyle=style, ms=7, capsize=2, elinewidth=0.8, label=label(method),
                            **policy_style(method))
            else:
                ax.plot(x, y, linestyle=style, ms=7, label=label(method), **policy_style(method))
            if len(sub) == 1:
                singles.append((method, x[0], y[0]))
        for names, x, y in _coinciding(singles):
            ax.annotate("same point:\n" + "\n".join(label(m) for m in names), (x, y), xytext=(8, -50),
                        textcoords="offset points", fontsize=7, zorder=6,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.7", "alpha": 0.9},
                        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
        ax.set_title(f"{d} (N = {sizes[d]})" if sizes[d] else d, fontsize=10)
        ax.set_xlabel(f"Computation cost ({units[0]})")
        ax.set_ylabel("Accuracy (%)")
        ax.grid(True, alpha=0.3)
    handles, labels_ = axes[0][0].get_legend_handles_labels()
    known = [sizes[d] for d in datasets if sizes[d]]
    note = ("error bars: binomial 95 % interval (Wilson) from the N problems; every method is scored on the same "
            "problems" if len(known) == len(datasets) else "no confidence intervals (number of problems not recorded)")
    fig.legend(handles, labels_, loc="lower center", ncol=min(len(labels_), 6), fontsize=8, frameon=False,
               title=note, title_fontsize=8)
    where = {r.get("evaluated_on") for r in results} - {None}
    heading = title or "Fig. 4: single-user accuracy vs computation cost"
    if where or known:
        heading += ", " + (where.pop() if len(where) == 1 else "evaluation problems")
        if known:
            heading += ", N = " + " / ".join(str(sizes[d]) if sizes[d] else "?" for d in datasets)
    fig.suptitle(heading, fontsize=10)
    return _save(fig, path, bottom=0.16)


# The paired scheduler study (studies/scheduler_study.py): (metric, scale, axis label).
PAIRED_METRICS = (("accuracy", 100.0, "Accuracy (%)"),
                  ("sojourn_ms", 1.0, "Sojourn time (ms/task)"),
                  ("utility", 1.0, "Utility: accuracy − β·delay"))


def plot_paired(rows: Sequence[dict], x_key: str, path: str, baseline: str, candidate: str, episodes: int,
                title: str, metrics: Sequence[tuple[str, float, str]] = PAIRED_METRICS) -> str:
    """Two schedulers run on the same episode keys (common random numbers), one column per metric.

    Top row: each scheduler's mean with its own Student-t 95 % CI (`<metric>_base`, `<metric>_cand` and their
    `_ci95`). Bottom row: the paired per-episode difference Δ = candidate − baseline with its paired Student-t
    95 % CI (`<metric>_diff`, `<metric>_diff_ci95`), which is the comparison the common draws make sharp."""
    rows = sorted(rows, key=lambda r: r[x_key])
    x = [r[x_key] for r in rows]
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.4 * len(metrics), 6.6), sharex=True, squeeze=False)
    for col, (metric, scale, ylabel) in enumerate(metrics):
        top, bottom = axes[0][col], axes[1][col]
        for name, tag in ((baseline, "base"), (candidate, "cand")):
            top.errorbar(x, [r[f"{metric}_{tag}"] * scale for r in rows],
                         yerr=[_nan0(r[f"{metric}_{tag}_ci95"]) * scale for r in rows], capsize=3, ms=5,
                         label=label(name), **policy_style(name))
        top.set_ylabel(ylabel, fontsize=9)
        top.set_title(f"({'abc'[col]}) {ylabel.split(' (')[0].split(':')[0].lower()}: each scheduler", fontsize=9)
        bottom.axhline(0.0, color="0.3", lw=0.8)
        bottom.errorbar(x, [r[f"{metric}_diff"] * scale for r in rows],
                        yerr=[_nan0(r[f"{metric}_diff_ci95"]) * scale for r in rows], capsize=3, ms=5,
                        color="black", marker="o", label="Δ = candidate − baseline")
        unit = "(% points)" if ylabel.endswith("(%)") else (ylabel[ylabel.index("("):] if "(" in ylabel else "")
        bottom.set_ylabel(f"Δ {ylabel.split(' (')[0].split(':')[0].lower()} {unit}".strip(), fontsize=9)
        bottom.set_title(f"({'def'[col]}) paired difference Δ", fontsize=9)
        bottom.set_xlabel(PARAM_LABELS.get(x_key, x_key))
        for ax in (top, bottom):
            if x_key in LOG_PARAMS:
                ax.set_xscale("log")
            if x_key == "server_capacity":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
    handles, labels_ = axes[0][0].get_legend_handles_labels()
    h, l_ = axes[1][0].get_legend_handles_labels()
    note = (f"(a)-(c): each scheduler's mean ± its own 95 % CI (Student t); (d)-(f): Δ = {TEXT_LABELS.get(candidate, candidate)}"
            f" − {TEXT_LABELS.get(baseline, baseline)} per episode, mean ± paired 95 % CI (Student t); "
            f"{episodes} episodes, same keys for both")
    fig.legend(handles + h, labels_ + l_, loc="lower center", ncol=3, fontsize=8, frameon=False, title=note,
               title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, bottom=0.09)
