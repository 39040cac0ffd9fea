"""Published LLM-inference latencies (published_latency.csv) and the per-device fit of the calibrated latency model.

    python -m prada_jax.calibration.fit_published          # prints every row's residual and its leave-one-out
                                                           # residual, writes published_fit.json

Each CSV row is one published measurement: a device (a preset of prada_jax/hardware.py), a model (an architecture
of prada_jax.latency.ARCH_PRESETS), its precision, framework, batch, prompt / context / output lengths, a metric, a
value and its source. A row's predicted value is a sum of forward passes, each

    overhead + max(FLOPs / (peak FLOP/s x compute efficiency), bytes / (peak bytes/s x bandwidth efficiency))

(prada_jax/latency.py), with the overhead of a prefill pass and of a decode pass fitted separately. Metrics:

* decode_ms_per_token, decode_tok_s: one decode iteration of `batch` requests, each at `context_tokens` cached tokens.
* prefill_ms, prefill_tok_s: the prefill of `prompt_tokens` tokens, alone (tok/s = prompt_tokens / time).
* generate_tok_s: batch 1, the prefill of `prompt_tokens` (it yields the first token), then output_tokens - 1 decode
  iterations at growing context; tok/s = output_tokens / total time.
* throughput_out_tok_s: a static batch of `batch` requests: one prefill pass of all prompts, then output_tokens - 1
  batched decode iterations; tok/s = batch x output_tokens / total time.

The fit is least squares on log time per device over log bandwidth efficiency, log compute efficiency, log decode
overhead and log prefill overhead, with efficiencies <= 1 and weak priors that keep a parameter the rows do not
identify at a neutral value: efficiencies towards 0.7 (weight PRIOR_WEIGHT per log unit), the prefill overhead
towards the decode overhead (a device without prefill rows gets its decode overhead), the decode overhead towards
1 ms. Everything here is float64 NumPy/SciPy, outside jit.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from prada_jax import latency
from prada_jax.hardware import EDGE_PRESETS, HARDWARE_PRESETS, SERVER_PRESETS

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED_CSV = os.path.join(HERE, "published_latency.csv")
PUBLISHED_FIT = os.path.join(HERE, "published_fit.json")
FIT_COMMAND = "python -m prada_jax.calibration.fit_published"

COLUMNS = ("device", "model", "arch", "precision", "bytes_per_param", "framework", "framework_version", "batch",
           "prompt_tokens", "context_tokens", "output_tokens", "metric", "value", "unit", "source", "notes")
METRIC_UNITS = {"decode_ms_per_token": "ms", "decode_tok_s": "tok/s", "prefill_ms": "ms", "prefill_tok_s": "tok/s",
                "generate_tok_s": "tok/s", "throughput_out_tok_s": "tok/s"}
# What each metric needs besides batch (0 = not used).
_NEEDS = {"decode_ms_per_token": ("context_tokens",), "decode_tok_s": ("context_tokens",),
          "prefill_ms": ("prompt_tokens",), "prefill_tok_s": ("prompt_tokens",),
          "generate_tok_s": ("prompt_tokens", "output_tokens"),
          "throughput_out_tok_s": ("prompt_tokens", "output_tokens")}

PRIOR_EFFICIENCY = 0.7
PRIOR_OVERHEAD_S = 1e-3
PRIOR_WEIGHT = 0.05  # residual weight of one log unit of prior deviation (a row's weight is 1)


class PublishedDataError(ValueError):
    """A malformed row of the published-latency CSV (the message names the file and line)."""


@dataclasses.dataclass(frozen=True)
class Row:
    line: int
    device: str
    model: str
    arch: str
    bytes_per_param: float
    framework: str
    batch: int
    prompt_tokens: int
    context_tokens: int
    output_tokens: int
    metric: str
    value: float
    source: str


def load_published(path: str = PUBLISHED_CSV) -> list[Row]:
    """The rows of a published-latency CSV; a one-line PublishedDataError naming path:line on any bad field."""
    if not os.path.exists(path):
        raise PublishedDataError(f"{path}: no such published-latency CSV")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise PublishedDataError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
        rows = []
        for line, rec in enumerate(reader, start=2):
            def bad(what):
                return PublishedDataError(f"{path}:{line}: {what}")  # noqa: B023 (called within this iteration)

            if rec["device"] not in HARDWARE_PRESETS:
                raise bad(f"unknown device {rec['device']!r}; known: {sorted(HARDWARE_PRESETS)}")
            if rec["arch"] not in latency.ARCH_PRESETS:
                raise bad(f"unknown arch {rec['arch']!r}; known: {sorted(latency.ARCH_PRESETS)}")
            if rec["metric"] not in METRIC_UNITS:
                raise bad(f"unknown metric {rec['metric']!r}; known: {sorted(METRIC_UNITS)}")
            if rec["unit"] != METRIC_UNITS[rec["metric"]]:
                raise bad(f"metric {rec['metric']} is in {METRIC_UNITS[rec['metric']]}, not {rec['unit']!r}")
            if not rec["source"].strip():
                raise bad("empty source")

            def number(col, kind=float, required=False):
                text = (rec[col] or "").strip()  # noqa: B023 (called within this iteration)
                if not text:
                    if required:
                        raise bad(f"{col} is required for metric {rec['metric']}")  # noqa: B023 (called within this iteration)
                    return kind(0)
                try:
                    value = kind(text)
                except ValueError:
                    raise bad(f"{col} {text!r} is not a number") from None
                if value <= 0:
                    raise bad(f"{col} must be positive, got {text}")
                return value

            needs = _NEEDS[rec["metric"]]
            rows.append(Row(
                line=line, device=rec["device"], model=rec["model"], arch=rec["arch"],
                bytes_per_param=number("bytes_per_param", required=True), framework=rec["framework"],
                batch=number("batch", int, required=True),
                prompt_tokens=number("prompt_tokens", int, "prompt_tokens" in needs),
                context_tokens=number("context_tokens", int, "context_tokens" in needs),
                output_tokens=number("output_tokens", int, "output_tokens" in needs),
                metric=rec["metric"], value=number("value", required=True), source=rec["source"],
            ))
    if not rows:
        raise PublishedDataError(f"{path}: no rows")
    return rows


# ---- the forward passes of a row ----

@dataclasses.dataclass(frozen=True)
class Passes:
    """Forward passes of one row: prefill passes (flops, bytes) and decode passes (flops, bytes), float64 arrays."""

    prefill_flops: np.ndarray
    prefill_bytes: np.ndarray
    decode_flops: np.ndarray
    decode_bytes: np.ndarray


def _np(x):
    return np.asarray(x, np.float64)


def row_passes(row: Row) -> Passes:
    arch = latency.ARCH_PRESETS[row.arch]
    bpp = row.bytes_per_param
    wbytes = float(latency.weight_params_per_forward(arch)) * bpp
    kv = float(latency.kv_bytes_per_token(arch))
    per_token = float(latency.matmul_flops_per_token(arch) + latency.lm_head_flops(arch))
    attn = float(latency.attention_flops_per_key(arch))
    empty = np.zeros(0)

    def prefill(tokens, batch=1):
        f, _ = latency.prefill_work(tokens, 0, arch)
        return np.array([batch * float(f)]), np.array([wbytes + batch * kv * tokens])

    def decode(batch, contexts):
        keys = _np(contexts) + 1.0
        return batch * (per_token + attn * keys), wbytes + batch * kv * keys

    if row.metric in ("decode_ms_per_token", "decode_tok_s"):
        df, db = decode(row.batch, [row.context_tokens])
        return Passes(empty, empty, df, db)
    if row.metric in ("prefill_ms", "prefill_tok_s"):
        pf, pb = prefill(row.prompt_tokens, row.batch)
        return Passes(pf, pb, empty, empty)
    # generate_tok_s / throughput_out_tok_s: prefill, then output - 1 decode iterations at growing context
    pf, pb = prefill(row.prompt_tokens, row.batch)
    df, db = decode(row.batch, row.prompt_tokens + np.arange(1, row.output_tokens))
    return Passes(pf, pb, df, db)


def measured_seconds(row: Row) -> float:
    """The row's measurement as the seconds of the work row_passes describes."""
    v = row.value
    return {
        "decode_ms_per_token": v * 1e-3, "decode_tok_s": 1.0 / v, "prefill_ms": v * 1e-3,
        "prefill_tok_s": row.prompt_tokens / v, "generate_tok_s": row.output_tokens / v,
        "throughput_out_tok_s": row.batch * row.output_tokens / v,
    }[row.metric]


def seconds_from_passes(passes: Passes, peaks, eff_b, eff_c, ovh_decode, ovh_prefill) -> float:
    f_eff, b_eff = peaks.peak_flops * eff_c, peaks.memory_bandwidth * eff_b
    pre = np.sum(ovh_prefill + np.maximum(passes.prefill_flops / f_eff, passes.prefill_bytes / b_eff))
    dec = np.sum(ovh_decode + np.maximum(passes.decode_flops / f_eff, passes.decode_bytes / b_eff))
    return float(pre + dec)


def bound_seconds(row: Row) -> float:
    """The pure roofline bound of the row (efficiencies 1, no overhead) on its device's peaks."""
    return seconds_from_passes(row_passes(row), HARDWARE_PRESETS[row.device], 1.0, 1.0, 0.0, 0.0)


def compute_bound_share(row: Row, device_fit: dict) -> float:
    """Fraction of the row's passes that sit on the compute side of the fitted ridge."""
    p = row_passes(row)
    peaks = HARDWARE_PRESETS[row.device]
    f_eff = peaks.peak_flops * device_fit["compute_efficiency"]
    b_eff = peaks.memory_bandwidth * device_fit["bandwidth_efficiency"]
    flops = np.concatenate([p.prefill_flops, p.decode_flops])
    nbytes = np.concatenate([p.prefill_bytes, p.decode_bytes])
    return float(np.mean(flops / f_eff > nbytes / b_eff))


# ---- the fit ----

def _unpack(x):
    eff_b, eff_c, ovh_d, ovh_p = np.exp(x)
    return eff_b, eff_c, ovh_d, ovh_p


def fit_device(rows: list[Row]) -> dict:
    """Fitted {bandwidth_efficiency, compute_efficiency, decode_overhead_s, prefill_overhead_s} of one device."""
    from scipy.optimize import least_squares

    devices = {r.device for r in rows}
    if len(devices) != 1:
        raise ValueError(f"fit_device: rows of one device expected, got {sorted(devices)}")
    peaks = HARDWARE_PRESETS[rows[0].device]
    passes = [row_passes(r) for r in rows]
    measured = np.array([measured_seconds(r) for r in rows])

    def residuals(x):
        eff_b, eff_c, ovh_d, ovh_p = _unpack(x)
        pred = np.array([seconds_from_passes(p, peaks, eff_b, eff_c, ovh_d, ovh_p) for p in passes])
        prior = PRIOR_WEIGHT * np.array([x[0] - np.log(PRIOR_EFFICIENCY), x[1] - np.log(PRIOR_EFFICIENCY),
                                         x[2] - np.log(PRIOR_OVERHEAD_S), x[3] - x[2]])
        return np.concatenate([np.log(pred) - np.log(measured), prior])

    lo = np.log([1e-3, 1e-3, 1e-7, 1e-7])
    hi = np.log([1.0, 1.0, 10.0, 10.0])
    best = None
    for start in ([0.7, 0.7, 1e-3, 1e-3], [0.4, 0.3, 5e-3, 5e-3], [0.9, 0.9, 1e-4, 1e-4]):
        result = least_squares(residuals, np.log(start), bounds=(lo, hi), method="trf")
        if best is None or result.cost < best.cost:
            best = result
    eff_b, eff_c, ovh_d, ovh_p = _unpack(best.x)
    return {"bandwidth_efficiency": float(eff_b), "compute_efficiency": float(eff_c),
            "decode_overhead_s": float(ovh_d), "prefill_overhead_s": float(ovh_p),
            "effective_bandwidth": float(peaks.memory_bandwidth * eff_b),
            "effective_flops": float(peaks.peak_flops * eff_c), "rows": len(rows)}


def predicted_seconds(row: Row, device_fit: dict) -> float:
    return seconds_from_passes(row_passes(row), HARDWARE_PRESETS[row.device], device_fit["bandwidth_efficiency"],
                               device_fit["compute_efficiency"], device_fit["decode_overhead_s"],
                               device_fit["prefill_overhead_s"])


_FIT_KEYS = ("bandwidth_efficiency", "compute_efficiency", "decode_overhead_s", "prefill_overhead_s")


def _mean_fit(fits: list[dict]) -> dict:
    """Geometric mean of the efficiencies and overheads of some device fits (the calibration of a device without
    published rows)."""
    return {k: float(np.exp(np.mean([np.log(f[k]) for f in fits]))) for k in _FIT_KEYS}


def fit_all(rows: list[Row]) -> dict:
    """Per-device fits, per-row fitted and leave-one-out residuals, and the fallback calibration of each side.

    Residuals are predicted / measured time - 1 (the time of the row's work; a tok/s row's rate residual is the
    inverse). Leave-one-out: the device is refitted without the row, then the row is predicted."""
    by_device: dict[str, list[Row]] = {}
    for r in rows:
        by_device.setdefault(r.device, []).append(r)
    devices = {d: fit_device(rs) for d, rs in by_device.items()}
    table = []
    for d, rs in by_device.items():
        for i, r in enumerate(rs):
            loo = fit_device(rs[:i] + rs[i + 1:]) if len(rs) > 1 else None
            meas = measured_seconds(r)
            table.append({
                "line": r.line, "device": d, "model": r.model, "framework": r.framework, "batch": r.batch,
                "metric": r.metric, "value": r.value, "measured_s": meas, "bound_s": bound_seconds(r),
                "fit_residual": predicted_seconds(r, devices[d]) / meas - 1.0,
                "loo_residual": (predicted_seconds(r, loo) / meas - 1.0) if loo else None,
                "compute_bound_share": compute_bound_share(r, devices[d]),
            })
    for d, fit in devices.items():
        fit["compute_identified"] = any(t["compute_bound_share"] > 0 for t in table if t["device"] == d)
    fallback = {}
    for side, presets in (("server", SERVER_PRESETS), ("edge", EDGE_PRESETS)):
        fitted = [devices[p] for p in presets if p in devices]
        if fitted:
            fallback[side] = {**_mean_fit(fitted), "from": [p for p in presets if p in devices]}
    return {"devices": devices, "fallback": fallback, "rows": table}


def write_fit(fit: dict, csv_path: str = PUBLISHED_CSV, out: str = PUBLISHED_FIT) -> None:
    record = {
        "command": FIT_COMMAND, "data": os.path.relpath(csv_path, os.path.dirname(out)),
        "model": "per forward pass: overhead + max(FLOPs / (peak FLOP/s x compute_efficiency), "
                 "bytes / (peak bytes/s x bandwidth_efficiency)); decode and prefill overheads separate",
        "devices": fit["devices"], "fallback": fit["fallback"],
        "residuals": [{k: t[k] for k in ("line", "device", "model", "metric", "value", "fit_residual",
                                         "loo_residual")} for t in fit["rows"]],
    }
    with open(out, "w") as f:
        json.dump(record, f, indent=1, sort_keys=False)
        f.write("\n")


def load_fit(path: str = PUBLISHED_FIT) -> dict:
    """The shipped fit (devices and per-side fallback); a one-line error naming the file if it is unreadable."""
    try:
        with open(path) as f:
            record = json.load(f)
        for d, fit in list(record["devices"].items()) + list(record["fallback"].items()):
            for k in _FIT_KEYS:
                if not float(fit[k]) > 0:
                    raise ValueError(f"{d}.{k} must be positive")
        return record
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PublishedDataError(f"{path}: not a calibrated-latency fit ({FIT_COMMAND} writes one): {e}") from None
