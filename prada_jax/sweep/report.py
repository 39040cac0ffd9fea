"""The compact summary table printed at the end of a sweep: one line per (dataset, policy, grid point)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from prada_jax.sim import registry

# (metric, header, scale): accuracy and offloaded steps in percent, delays in ms per task.
SUMMARY_COLUMNS = (
    ("accuracy", "accuracy %", 100.0),
    ("end_to_end_ms", "end-to-end ms", 1.0),
    ("processing_ms", "proc ms", 1.0),
    ("communication_ms", "comm ms", 1.0),
    ("queuing_ms", "queue ms", 1.0),
    ("offload_fraction", "offload %", 100.0),
)


def value_label(value: float) -> str:
    """A swept value as a label: `%g` (3, 0.5, 4e+07) when that reads back as the same number, else its shortest
    exact form (1.0000001, as in results.csv), so that distinct values never share a label."""
    short = f"{value:g}"
    if float(short) == value:
        return short
    return str(value) if isinstance(value, int) else repr(float(value))


def point_label(row: dict[str, Any]) -> str:
    """'bandwidth_bps=1e+06', 'server_capacity=3, bandwidth_bps=4e+07' (a --grid row) or '-' (nothing swept)."""
    param = row.get("sweep_param")
    if param == "grid":
        return ", ".join(f"{k}={value_label(row[k])}" for k in row if k in registry.PARAMS)
    if param in (None, "none") or row.get("sweep_value") is None:
        return "-"
    return f"{param}={value_label(row['sweep_value'])}"


def _cell(row: dict, metric: str, scale: float) -> str:
    mean, ci = row.get(f"{metric}_mean"), row.get(f"{metric}_ci95")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean * scale:.{1 if scale != 1.0 else 2}f}"
    if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
        text += f" ± {ci * scale:.{1 if scale != 1.0 else 2}f}"
    return text


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of result rows: dataset, policy, grid point, then mean ± 95 % CI of accuracy, the delays
    and the offloaded fraction; '*' marks an overloaded point (arrivals dropped or tasks unfinished), '†' one whose
    fixed candidate cap overflowed."""
    rows = list(rows)
    if not rows:
        return "(no results)\n"
    head = ["dataset", "policy", "point"] + [h for _, h, _ in SUMMARY_COLUMNS]
    body = []
    overloaded = truncated = False
    for r in rows:
        over = (r.get("overloaded_mean") or 0) > 0
        cut = (r.get("candidate_overflow_mean") or 0) > 0  # only with a fixed max_candidates (exact by default)
        overloaded |= over
        truncated |= cut
        body.append([str(r["dataset"]), str(r["policy"]) + (" *" if over else "") + (" †" if cut else ""),
                     point_label(r)] + [_cell(r, m, s) for m, _, s in SUMMARY_COLUMNS])
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]

    def fmt(line):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()

    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    episodes = sorted({int(r["episodes"]) for r in rows if r.get("episodes") is not None})
    lines.append(f"mean ± 95 % CI (Student t) over {'/'.join(map(str, episodes))} episodes"
                 + ("; * overloaded (arrivals dropped or tasks unfinished)" if overloaded else "")
                 + ("; † candidates beyond the fixed cap max_candidates were left out of Stage 2" if truncated else ""))
    return "\n".join(lines) + "\n"
