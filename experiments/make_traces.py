"""Generate the calibrated synthetic traces (traces/<dataset>.npz) from the committed fitted statistics.

    python -m experiments.make_traces --datasets=gsm8k,math500,gaokao2023en,mmlu_stem --seed=0 --out_dir=traces

Needs no data beyond prada_jax/calibration/fitted_stats.json. Same flags -> byte-identical files.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from prada_jax import constants as C
from prada_jax import synth
from prada_jax.calibration import refit
from prada_jax.traces import save_trace

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", list(C.DATASETS), f"Datasets to generate, from {C.DATASETS}.")
flags.DEFINE_integer("seed", 0, "Generator seed (shipped traces use 0).")
flags.DEFINE_string("out_dir", "traces", "Output folder for <dataset>.npz.")
flags.DEFINE_integer("num_problems", None, "Override the number of problems (default: benchmark size).")
flags.DEFINE_integer("feature_dim", synth.DEFAULT_FEATURE_DIM, "Feature width F.")
flags.DEFINE_string("stats", refit.STATS_PATH, "Fitted statistics JSON.")


def main(argv):
    del argv
    unknown = [d for d in FLAGS.datasets if d not in C.DATASETS]
    if unknown:
        sys.exit(f"make_traces: --datasets: unknown {unknown}; choose from {C.DATASETS}")
    try:
        stats = refit.load_stats(FLAGS.stats)
    except refit.DataError as exc:
        sys.exit(f"make_traces: --stats: {exc}")
    total = 0
    for dataset in FLAGS.datasets:
        try:
            trace = synth.generate_trace(dataset, FLAGS.seed, FLAGS.num_problems, FLAGS.feature_dim, stats)
        except synth.SynthError as exc:
            sys.exit(f"make_traces: {dataset}: {exc}")
        path = os.path.join(FLAGS.out_dir, f"{dataset}.npz")
        save_trace(path, trace)
        size = os.path.getsize(path)
        total += size
        g = trace.metadata["generator"]
        mask = trace.step_mask
        print(f"{path}: N={trace.num_problems} K={trace.max_steps} F={trace.feature_dim} {size / 1e6:.2f} MB | "
              f"acc SLM {trace.expected_accuracy('slm'):.4f} LLM {trace.expected_accuracy('llm'):.4f} | "
              f"steps {trace.num_steps.mean():.2f} SLM tok {trace.slm_step_tokens[mask].mean():.1f} "
              f"LLM tok {trace.llm_step_tokens[mask].mean():.1f} query {trace.query_tokens.mean():.1f} | "
              f"PRM AUROC {g['prm_step_error_auroc']['prm_after_slm']:.3f} gain corr {g['prm_gain_correlation']:.3f}")
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    app.run(main)
