"""Learning environments over the simulator (gymnax API; docs/learned_scheduler.md).

    from prada_jax import env as penv
    env, env_params = penv.make("prada-multiuser-v0", dataset="gsm8k")
    obs, state = env.reset(key, env_params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, env_params)
"""

from __future__ import annotations

import os

from prada_jax import data_paths, traces
from prada_jax.env.multiuser import EnvParams, EnvParamsError, EnvState, PradaMultiUser, build
from prada_jax.learn.tables import load_table
from prada_jax.sim.params import SimConfig, make_params

ENV_IDS = ("prada-multiuser-v0",)
# Defaults of make(): a shorter episode and fewer user slots than the paper's sweeps (C = 16 candidate rows).
DEFAULT_ENV_CONFIG = dict(num_slots=400, warmup_slots=50, drain_slots=600, max_users=64, max_candidates=16,
                          max_servers=20)


def load_dataset(dataset: str, traces_dir: str = "traces", ckpt_dir: str = "checkpoints"):
    """(packed traces, learned Stage-1 table) of a shipped dataset."""
    traces_dir = data_paths.resolve_data_dir(traces_dir, "traces")
    ckpt_dir = data_paths.resolve_data_dir(ckpt_dir, "checkpoints")
    trace = traces.load_trace(os.path.join(traces_dir, f"{dataset}.npz"))
    table = load_table(os.path.join(ckpt_dir, dataset, "policy_table.npz"), shape=(trace.num_problems, trace.max_steps))
    return traces.pack_traces(trace), table


def make(env_id: str, dataset: str = "gsm8k", *, traces_dir: str = "traces", ckpt_dir: str = "checkpoints",
         config=None, sim_params=None, **env_params):
    """`(env, env_params)` like gymnax.make. `config`: a SimConfig or a dict of SimConfig fields over
    DEFAULT_ENV_CONFIG; `sim_params`: SimParams or a dict of make_params fields; `env_params`: EnvParams fields
    (randomize=True, bandwidth_range=(lo, hi), capacity_range, arrival_rate_range, beta_range)."""
    if env_id not in ENV_IDS:
        raise EnvParamsError(f"unknown environment {env_id!r}; registered: {list(ENV_IDS)}")
    packed, table = load_dataset(dataset, traces_dir, ckpt_dir)
    if not isinstance(config, SimConfig):
        config = SimConfig(**{**DEFAULT_ENV_CONFIG, **(config or {})})
    if not hasattr(sim_params, "bandwidth_bps"):
        sim_params = make_params(**(sim_params or {}))
    return build(packed, table, config, sim_params, **env_params)


__all__ = ["ENV_IDS", "EnvParams", "EnvParamsError", "EnvState", "PradaMultiUser", "build", "load_dataset", "make"]
