"""Fit the calibrated latency model to the published measurements and print every row's residual.

    python -m prada_jax.calibration.fit_published [--data=<csv>] [--output=<json>] [--no_write]

Prints, per device, the fitted efficiencies and overheads, and per row: the measurement, the pure roofline bound
(efficiencies 1, no overhead) as measured / bound, the fitted residual and the leave-one-out residual (the device
refitted without that row). Writes prada_jax/calibration/published_fit.json, which --latency_model=calibrated
reads (prada_jax/sim/latency_models.py).
"""

from __future__ import annotations

import argparse
import sys

from prada_jax.calibration import published as P


def format_report(fit: dict) -> str:
    out = ["device                 bw eff  compute eff  decode ovh  prefill ovh  rows  compute identified"]
    for d, f in fit["devices"].items():
        out.append(f"{d:22s} {f['bandwidth_efficiency']:6.3f} {f['compute_efficiency']:12.3f} "
                   f"{1e3 * f['decode_overhead_s']:8.2f} ms {1e3 * f['prefill_overhead_s']:9.2f} ms {f['rows']:5d}  "
                   f"{'yes' if f['compute_identified'] else 'no (prior 0.7)'}")
    for side, f in fit["fallback"].items():
        out.append(f"fallback {side:13s} {f['bandwidth_efficiency']:6.3f} {f['compute_efficiency']:12.3f} "
                   f"{1e3 * f['decode_overhead_s']:8.2f} ms {1e3 * f['prefill_overhead_s']:9.2f} ms  "
                   f"(geometric mean of {', '.join(f['from'])})")
    out.append("")
    out.append("line device                 model                      framework     batch metric                "
               "value  meas/bound  fit resid  LOO resid")
    worst_fit = worst_loo = 0.0
    for t in fit["rows"]:
        loo = t["loo_residual"]
        worst_fit = max(worst_fit, abs(t["fit_residual"]))
        worst_loo = max(worst_loo, abs(loo) if loo is not None else 0.0)
        out.append(f"{t['line']:4d} {t['device']:22s} {t['model'][:26]:26s} {t['framework'][:12]:12s} {t['batch']:6d} "
                   f"{t['metric']:20s} {t['value']:8.2f} {t['measured_s'] / t['bound_s']:10.2f} "
                   f"{100 * t['fit_residual']:+9.1f}% " + (f"{100 * loo:+9.1f}%" if loo is not None else "      n/a"))
    out.append(f"\nlargest |fit residual| {100 * worst_fit:.1f} %, largest |leave-one-out residual| "
               f"{100 * worst_loo:.1f} % over {len(fit['rows'])} rows")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=P.PUBLISHED_CSV)
    parser.add_argument("--output", default=P.PUBLISHED_FIT)
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    try:
        rows = P.load_published(args.data)
    except P.PublishedDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fit = P.fit_all(rows)
    print(format_report(fit))
    if not args.no_write:
        P.write_fit(fit, args.data, args.output)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
