"""Fit the roofline's effective rates to a table written by experiments/measure_latency.py.

    python -m experiments.fit_latency --table=prada_jax/calibration/latency_cpu_tiny.json
    python -m experiments.fit_latency --table=... --hardware=h100-sxm --output=fit.json

Least squares on log time of t = overhead + max(FLOPs / F_eff, bytes / B_eff), the FLOPs and bytes of each
point counted by prada_jax.latency from the table's own config and dtype. With --hardware the effective
rates are also given as efficiencies of that preset's peaks; without it (a CPU, say) only the rates.
Prints every point's measured and fitted time and which bound it sits on.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import app, flags

from prada_jax import hardware as H
from prada_jax import latency as L

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (importing this module defines none)."""
    flags.DEFINE_string("table", "", "JSON table from experiments/measure_latency.py (required).")
    flags.DEFINE_string("hardware", "", f"Preset whose peaks define the efficiencies; one of {sorted(H.HARDWARE_PRESETS)}.")
    flags.DEFINE_bool("fit_overhead", True, "Fit a fixed per-forward-pass overhead as well.")
    flags.DEFINE_string("output", "", "Optional JSON file for the fit.")


def fit_table(table: dict, hardware_name: str = "", fit_overhead: bool = True) -> dict:
    """The fit of one table as a JSON-ready dict (rates, efficiencies if a preset is given, residuals)."""
    prov = table["provenance"]
    arch = L.arch_from_hf_config(table["config"], name=table.get("preset", "measured"),
                                 bytes_per_param=prov["bytes_per_element"])
    flops, bytes_moved, seconds = L.table_work(table, arch)
    fit = L.fit_effective_rates(flops, bytes_moved, seconds, fit_overhead)
    fitted = np.exp(np.log(seconds) + fit.log_residuals)
    kinds = [("prefill", r["context"], 1) for r in table["prefill"]] + [
        ("decode", r["context"], r["batch"]) for r in table["decode"]]
    compute_bound = flops / fit.effective_flops > bytes_moved / fit.effective_bandwidth
    out = {
        "table": {"device_name": prov["device_name"], "device": prov["device"], "dtype": prov["dtype"],
                  "date_utc": prov["date_utc"], "preset": table.get("preset")},
        "effective_flops": fit.effective_flops,
        "effective_bandwidth": fit.effective_bandwidth,
        "overhead_seconds": fit.overhead_seconds,
        "rms_log_residual": fit.rms_log_residual,
        "compute_bound_points": int(np.sum(compute_bound)),
        "memory_bound_points": int(np.sum(~compute_bound)),
        "points": [
            {"kind": k, "context": m, "batch": b, "measured_s": float(s), "fitted_s": float(f),
             "bound": "compute" if cb else "memory"}
            for (k, m, b), s, f, cb in zip(kinds, seconds, fitted, compute_bound)
        ],
    }
    if hardware_name:
        hw = L.fitted_hardware(fit, H.hardware_preset(hardware_name))
        out["hardware"] = hardware_name
        out["compute_efficiency"] = float(hw.compute_efficiency)
        out["bandwidth_efficiency"] = float(hw.bandwidth_efficiency)
    return out


def main(argv):
    del argv
    if not FLAGS.table:
        sys.exit("fit_latency: --table is required (a JSON table from experiments/measure_latency.py)")
    try:
        with open(FLAGS.table) as f:
            table = json.load(f)
        result = fit_table(table, FLAGS.hardware, FLAGS.fit_overhead)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        sys.exit(f"fit_latency: --table={FLAGS.table}: cannot read a measure_latency table ({exc!r})")
    except ValueError as exc:
        sys.exit(f"fit_latency: {exc}")
    t = result["table"]
    print(f"{FLAGS.table}: {t['device_name']} ({t['device']}, {t['dtype']}), measured {t['date_utc']}")
    print(f"effective FLOP/s {result['effective_flops']:.3e}  bytes/s {result['effective_bandwidth']:.3e}  "
          f"overhead {result['overhead_seconds'] * 1e3:.3f} ms  rms log residual {result['rms_log_residual']:.3f}")
    if "compute_efficiency" in result:
        print(f"efficiencies vs {result['hardware']}: compute {result['compute_efficiency']:.3f}, "
              f"bandwidth {result['bandwidth_efficiency']:.3f}")
    print(f"{result['compute_bound_points']} compute-bound and {result['memory_bound_points']} memory-bound points")
    for p in result["points"]:
        print(f"  {p['kind']:7s} context {p['context']:6d} batch {p['batch']:3d}: measured {p['measured_s'] * 1e3:9.3f} ms"
              f"  fitted {p['fitted_s'] * 1e3:9.3f} ms  ({p['bound']})")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
