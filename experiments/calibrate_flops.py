"""Calibrate FlopsSLM so that All-SLM processing delay on the shipped gsm8k trace is 3.1 ms/task.

    python -m experiments.calibrate_flops --trace_dir=traces

All-SLM path (prada_jax.costs.local_step_seconds): the SLM prefills the query on step 0, then decodes each
step on top of its KV cache. Prints the calibrated FlopsSLM, the value in constants.FLOPS_SLM, and the
predicted All-SLM delay for every shipped dataset next to the paper's Table 2 (gsm8k / gaokao2023en /
mmlu_stem: 3.1 / 5.8 / 5.6 ms). Update constants.FLOPS_SLM when the calibrated value differs.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

from prada_jax import constants as C
from prada_jax import calibration
from prada_jax.traces import TraceError, load_trace

FLAGS = flags.FLAGS
flags.DEFINE_string("trace_dir", "traces", "Folder holding <dataset>.npz traces.")
flags.DEFINE_list("datasets", list(C.DATASETS), "Datasets to report.")
flags.DEFINE_integer("significant_digits", 3, "Round the calibrated FlopsSLM to this many significant digits.")


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


if __name__ == "__main__":
    app.run(main)
