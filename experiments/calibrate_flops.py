"""Calibrate FlopsSLM so that All-SLM processing delay on the shipped gsm8k trace is 3.1 ms/task, and fit the
per-dataset prompt overhead that gives the other Table 2 datasets their All-SLM delay at that FlopsSLM.

    python -m experiments.calibrate_flops --trace_dir=traces
    python -m experiments.calibrate_flops --write_prompt_overhead   # then: make_traces --datasets=<changed ones>

Prompt overhead: extra query tokens beyond question + chat template (few-shot exemplars or answer-format
instructions the paper's runs used and did not state). With nothing offloaded, All-SLM delay depends only on the
trace lengths and FlopsSLM, so once FlopsSLM is pinned by gsm8k each other dataset's All-SLM row pins its
overhead (`calibration.fit_prompt_overhead`, integer bisection; range 0..2048 tokens). The fit uses the trace's
query lengths without the overhead it was generated with (its metadata records it).

All-SLM path (prada_jax.costs.local_step_seconds): the SLM prefills the query on step 0, then decodes each
step on top of its KV cache. Prints the calibrated FlopsSLM, the value in constants.FLOPS_SLM, and the
predicted All-SLM delay for every shipped dataset next to the paper's Table 2 (gsm8k / gaokao2023en /
mmlu_stem: 3.1 / 5.8 / 5.6 ms). Update constants.FLOPS_SLM when the calibrated value differs.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

from prada_jax import calibration
from prada_jax import constants as C
from prada_jax.traces import TraceError, load_trace

FLAGS = flags.FLAGS
flags.DEFINE_string("trace_dir", "traces", "Folder holding <dataset>.npz traces.")
flags.DEFINE_list("datasets", list(C.DATASETS), "Datasets to report.")
flags.DEFINE_integer("significant_digits", 3, "Round the calibrated FlopsSLM to this many significant digits.")
flags.DEFINE_bool("write_prompt_overhead", False, "Write the fitted prompt overheads to "
                  "prada_jax/calibration/prompt_overhead.json (regenerate the traces of the datasets that changed).")


def mean_flops(trace) -> float:
    return float(np.mean(calibration.all_slm_flops_per_problem(trace.query_tokens, trace.slm_step_tokens, trace.num_steps)))


def main(argv):
    del argv
    ref = calibration.FLOPS_CALIBRATION_DATASET
    try:
        traces = {d: load_trace(os.path.join(FLAGS.trace_dir, f"{d}.npz")) for d in dict.fromkeys([ref, *FLAGS.datasets])}
    except TraceError as exc:
        sys.exit(f"calibrate_flops: --trace_dir: {exc}")
    flops = {d: mean_flops(t) for d, t in traces.items()}
    exact = calibration.calibrate_flops_slm(flops[ref], calibration.PAPER_ALL_SLM_DELAY_MS[ref])
    rounded = float(f"{exact:.{FLAGS.significant_digits - 1}e}")
    print(f"calibrated FlopsSLM = {exact:.4e} FLOP/s (rounded {rounded:.{FLAGS.significant_digits - 1}e}); "
          f"constants.FLOPS_SLM = {C.FLOPS_SLM:.{FLAGS.significant_digits - 1}e}"
          + ("" if rounded == C.FLOPS_SLM else "  -> UPDATE constants.FLOPS_SLM"))
    print(f"{'dataset':14s} {'GFLOP/task':>10s} {'ms (calibrated)':>16s} {'ms (constants)':>15s} {'paper ms':>9s}")
    for d in FLAGS.datasets:
        paper = calibration.PAPER_ALL_SLM_DELAY_MS.get(d)
        print(f"{d:14s} {flops[d] / 1e9:10.2f} {calibration.predicted_delay_ms(flops[d], rounded):16.2f} "
              f"{calibration.predicted_delay_ms(flops[d]):15.2f} {paper if paper is not None else '-':>9}")
    fitted = {}
    for d, target in calibration.PAPER_ALL_SLM_DELAY_MS.items():
        if d == ref or d not in traces:
            continue
        fitted[d] = calibration.fit_trace_prompt_overhead(traces[d], C.FLOPS_SLM, target)
        now = calibration.prompt_overhead(d)
        print(f"prompt overhead {d}: fitted {fitted[d]} tokens (paper All-SLM {target} ms at constants.FLOPS_SLM); "
              f"prompt_overhead.json has {now}" + ("" if now == fitted[d] else "  -> rerun with --write_prompt_overhead"))
    if FLAGS.write_prompt_overhead:
        record = {"prompt_overhead_tokens": {ref: 0, **fitted},
                  "fitted_by": "experiments/calibrate_flops.py --write_prompt_overhead",
                  "flops_slm": C.FLOPS_SLM, "target_all_slm_delay_ms": calibration.PAPER_ALL_SLM_DELAY_MS,
                  "meaning": "extra query tokens beyond question + chat template (docs/reproduction.md, section 1)"}
        with open(calibration.PROMPT_OVERHEAD_PATH, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
            handle.write("\n")
        print(f"wrote {calibration.PROMPT_OVERHEAD_PATH}")


if __name__ == "__main__":
    app.run(main)
