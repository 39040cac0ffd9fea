"""Does the fitted low SNR move the Fig-8 accuracy step above 1e7 bit/s? (docs/reproduction.md, claim F8)

    python -m studies bandwidth_mechanism

gsm8k, PRADA at the fitted preset (prada_jax/calibration/paper_fit.json) over the paper_bandwidth.cfg values of B,
once at the fitted (mean SNR, gamma_th) and once with both raised by the same +19 dB (same fraction of slots
below gamma_th, ~80x the spectral efficiency). 8 episodes x 1000 ms.
"""

import json
import os

from prada_jax import constants as C
from prada_jax import sim, traces
from prada_jax.sim import metrics as M
from prada_jax.sweep import runner
from prada_jax.sweep.spec import make_spec

fit = json.load(open(os.path.join("prada_jax", "calibration", "paper_fit.json")))["fitted"]
beta = fit["beta"]
B = [1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 4e7, 1e8, 2e8, 5e8, 1e9]
SHIFTS = [0.0, 19.0]
spec = make_spec(datasets=["gsm8k"], policies=["prada"], episodes=8, horizon_ms=1000, warmup_ms=200, max_users=128,
                 ckpt_dir=os.path.join("results", "fit", f"ckpt_beta{beta:g}"), table_beta=beta)
trace = traces.load_trace(spec.trace_path("gsm8k"))
table, ps = runner.policy_setup(spec, "prada", "gsm8k", trace, C.FLOPS_LLM)
config = runner.sim_config(spec, ps.scheduler)
points = [(d, b) for d in SHIFTS for b in B]
grid = sim.stack_params([sim.make_params(beta=beta, snr_db=fit["snr_db"] + d, snr_threshold_db=fit["snr_threshold_db"] + d,
                                         path_loss_exponent=fit["path_loss_exponent"], bandwidth_bps=b)
                         for d, b in points])
s = M.summarize(sim.simulate_grid(traces.pack_traces(trace), table, grid, config, 8, 0))
for g, (d, b) in enumerate(points):
    print(f"SNR {fit['snr_db'] + d:+5.1f} dB, gamma_th {fit['snr_threshold_db'] + d:+5.1f} dB, B={b:.0e}: " + "  ".join(
        f"{k}={s[k][0][g] * (100 if k in ('accuracy', 'offload_fraction') else 1):.2f}" for k in
        ("accuracy", "communication_ms", "queuing_ms", "offload_fraction")))
