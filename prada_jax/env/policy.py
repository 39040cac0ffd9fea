"""The learned Stage-2 scheduler's network and weights, which the environment trains (prada_jax.env.ppo): defined
in prada_jax/sim/learned_scheduler.py (the simulator registers that scheduler, so it lives below it) and
importable from here as before."""

from prada_jax.sim.learned_scheduler import (  # noqa: F401  (re-exported)
    HIDDEN,
    PRIOR_SCALE,
    WEIGHTS_FILE,
    CandidatePolicy,
    decide_learned,
    flatten_params,
    greedy_action,
    load_weights,
    masked_mean,
    save_weights,
    unflatten_params,
    weights_path,
)
