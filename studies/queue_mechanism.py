"""Why PRADA's queuing delay does not vanish with M at the fitted preset (docs/reproduction.md, claim F6).

    python -m studies queue_mechanism

gsm8k, PRADA, fitted preset (prada_jax/calibration/paper_fit.json); M in {1, 9, 20} x gamma_th in {fitted, -30 dB}
(-30 dB: practically no slot is below the threshold), 8 episodes x 1000 ms. If the queuing left at large M is
waiting for a channel above gamma_th, it disappears at gamma_th = -30 dB.
"""

import itertools
import json
import os

from prada_jax import constants as C
from prada_jax import sim, traces
from prada_jax.sim import metrics as M
from prada_jax.sweep import runner
from prada_jax.sweep.spec import make_spec

fit = json.load(open(os.path.join("prada_jax", "calibration", "paper_fit.json")))["fitted"]
beta = fit["beta"]
spec = make_spec(datasets=["gsm8k"], policies=["prada"], episodes=8, horizon_ms=1000, warmup_ms=200, max_users=128,
                 ckpt_dir=os.path.join("results", "fit", f"ckpt_beta{beta:g}"), table_beta=beta,
                 params={"server_capacity": 20})
trace = traces.load_trace(spec.trace_path("gsm8k"))
table, ps = runner.policy_setup(spec, "prada", "gsm8k", trace, C.FLOPS_LLM)
config = runner.sim_config(spec, ps.scheduler)
points = list(itertools.product([1, 9, 20], [fit["snr_threshold_db"], -30.0]))
grid = sim.stack_params([sim.make_params(beta=beta, snr_db=fit["snr_db"], path_loss_exponent=fit["path_loss_exponent"],
                                         server_capacity=m, snr_threshold_db=th) for m, th in points])
s = M.summarize(sim.simulate_grid(traces.pack_traces(trace), table, grid, config, 8, 0))
for g, (m, th) in enumerate(points):
    print(f"M={m:2d} gamma_th={th:6.1f} dB: " + "  ".join(
        f"{k}={s[k][0][g] * (100 if k == 'accuracy' else 1):.2f}" for k in
        ("accuracy", "processing_ms", "communication_ms", "queuing_ms", "offload_fraction", "server_utilisation")))
