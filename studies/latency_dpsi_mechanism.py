"""Does PRADA's learned D_psi explain its overload behaviour under the roofline model? (docs/latency.md, 7.6)

Runs PRADA at the operating point of prada_jax/configs/roofline_table2.cfg twice on the same episodes: with the
learned D_psi of the roofline-trained table, and with D_psi replaced by the exact batch-1 roofline server time of
each reference step (latency_models.with_reference_server_seconds). Also reports how well a context-only predictor
can do: D_psi's input is the context length (paper section 4.2.5), but a roofline server step is dominated by the
decode of its new tokens.

    python -m studies latency_dpsi_mechanism --datasets=gaokao2023en,gsm8k --episodes=16
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from prada_jax import cli_support, sweep, traces
from prada_jax.learn import mdp as M
from prada_jax.sim import latency_models, metrics, run
from prada_jax.sim.params import make_params

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["gaokao2023en"], "Datasets.")
flags.DEFINE_integer("episodes", 16, "Episodes per variant (the same keys for both).")
METRICS = ("accuracy", "sojourn_ms", "queuing_ms", "offload_fraction", "dropped", "utility")


def spec_for(dataset: str) -> sweep.SweepSpec:
    fv = flags.FlagValues()
    sweep.define_flags(fv)
    fv(["x", f"--flagfile={os.path.join(sweep.CONFIG_DIR, 'roofline_table2.cfg')}", f"--datasets={dataset}",
        "--policies=prada", f"--episodes={FLAGS.episodes}"])
    return sweep.spec_from_flags(fv)


def context_only_error(trace) -> float:
    """Mean relative error of the best context-only predictor (binned mean, 40 quantile bins) of the roofline TL."""
    packed = traces.pack_traces(trace)
    mask = np.asarray(packed.step_mask)
    ctx = np.asarray(M.reference_context(packed))[mask]
    tl = np.asarray(M.reference_step_seconds(packed, latency_model="roofline")[1])[mask]
    bins = np.digitize(ctx, np.quantile(ctx, np.linspace(0, 1, 41)[1:-1]))
    pred = np.array([tl[bins == b].mean() for b in bins])
    return float(np.mean(np.abs(pred / tl - 1.0)))


def main(argv):
    del argv
    for dataset in FLAGS.datasets:
        spec = spec_for(dataset)
        trace = traces.load_trace(spec.trace_path(dataset))
        learned = sweep.learned_table(spec, dataset, trace)
        exact = latency_models.with_reference_server_seconds(learned, trace, make_params(), "roofline")
        mask = np.asarray(trace.step_mask)
        rel = np.abs(np.asarray(learned.server_seconds)[mask] / np.asarray(exact.server_seconds)[mask] - 1.0)
        print(f"{dataset}: learned D_psi vs exact roofline TL: mean relative error {rel.mean():.3f}; best "
              f"context-only predictor: {context_only_error(trace):.3f}")
        config = sweep.sim_config(spec, "prada")
        for name, table in (("learned D_psi", learned), ("exact roofline D_psi", exact)):
            summary = metrics.summarize(run.simulate_grid(traces.pack_traces(trace), table, sweep.params_grid(spec),
                                                          config, spec.episodes, spec.seed))
            cells = [f"{m} {float(np.ravel(summary[m][0])[0]):.4g} ± {float(np.ravel(summary[m][1])[0]):.2g}"
                     for m in METRICS]
            print(f"  prada, {name}: " + "; ".join(cells))


if __name__ == "__main__":
    cli_support.run_main(main, __doc__)  # every CPU core as a device (--cpu_devices), then main
