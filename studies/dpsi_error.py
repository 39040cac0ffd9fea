"""D_psi's held-out error under each latency model, with its context-only input and with (context, step length).

    python -m studies dpsi_error [--datasets=gsm8k,gaokao2023en] [--latency_models=flops,roofline,calibrated]

For every latency model and dataset: D_psi (prada_jax/learn/aux.py) is fitted as prada-train fits it (the same
held-out split, seed, noise and steps) on the server times of that model, once on the context alone (the paper's
input) and once on (context, the step's SLM length); prints the held-out mean and median relative error against
the noise-free server time of the model. Default hardware (H100 server, Jetson AGX Orin edge).
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from absl import app, flags

from prada_jax import data_paths
from prada_jax.learn import aux
from prada_jax.learn import mdp as M
from prada_jax.traces import load_trace, pack_traces

flags.DEFINE_list("datasets", ["gsm8k", "gaokao2023en"], "Datasets (traces/<name>.npz).")
flags.DEFINE_list("latency_models", ["flops", "roofline", "calibrated"], "Registered latency models.")
flags.DEFINE_string("trace_dir", "traces", "Directory of the trace files.")
flags.DEFINE_integer("seed", 0, "Seed (as prada-train's).")
flags.DEFINE_integer("aux_steps", 3000, "Minibatch steps of D_psi.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    trace_dir = data_paths.resolve_data_dir(FLAGS.trace_dir, "traces")
    cfg = aux.AuxConfig(steps=FLAGS.aux_steps)
    print("| dataset | latency model | D_psi input | held-out mean rel. error | median |")
    print("|---|---|---|---|---|")
    for dataset in FLAGS.datasets:
        packed = pack_traces(load_trace(f"{trace_dir}/{dataset}.npz"))
        train = M.split_problems(packed.step_mask.shape[0], 0.2, FLAGS.seed)
        mask = np.asarray(packed.step_mask) & ~train[:, None]
        for model in FLAGS.latency_models:
            truth = np.asarray(aux.server_seconds_truth(packed, latency_model=model))[mask]
            for use_step in (False, True):
                k_delay = jax.random.split(jax.random.PRNGKey(FLAGS.seed), 4)[2]  # prada-train's D_psi key
                fit = aux.fit_delay(packed, train, k_delay, cfg, latency_model=model,
                                    use_step_length=use_step)
                pred = np.asarray(aux.predict_server_seconds(cfg, fit, M.reference_context(packed),
                                                             packed.slm_step_tokens))[mask]
                err = np.abs(pred / truth - 1.0)
                what = "context, step length" if use_step else "context"
                print(f"| {dataset} | {model} | {what} | {100 * err.mean():.1f} % | {100 * np.median(err):.1f} % |")
                sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
