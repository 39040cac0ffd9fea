"""Slot-level multi-user simulator of PRADA (JAX, vectorised over episodes and parameter grids)."""

from prada_jax.sim import registry
from prada_jax.sim.metrics import EpisodeMetrics, summarize, summarize_grid
from prada_jax.sim.params import (
                                  SimConfig,
                                  SimParams,
                                  SimParamsError,
                                  make_params,
                                  param_grid,
                                  stack_params,
                                  validate_params,
)
from prada_jax.sim.policies import (
                                  PolicyTable,
                                  all_llm_table,
                                  all_slm_table,
                                  prm_threshold_table,
                                  random_table,
                                  router_table,
                                  table_from_value_gap,
)
from prada_jax.sim.registry import (
                                  PARAMS,
                                  POLICIES,
                                  RegistryError,
                                  get_param,
                                  get_policy,
                                  register_param,
                                  register_policy,
                                  register_table,
)
from prada_jax.sim.run import (
                                  check_episodes_and_seed,
                                  check_inputs,
                                  episode_keys,
                                  simulate,
                                  simulate_grid,
                                  simulate_recorded,
)
from prada_jax.sim.schedulers import SCHEDULERS, Scheduler
from prada_jax.sim.schedulers import register as register_scheduler

__all__ = [
    "EpisodeMetrics", "summarize", "summarize_grid", "registry", "PARAMS", "POLICIES", "RegistryError", "get_param",
    "get_policy", "register_param", "register_policy", "register_table", "SCHEDULERS", "Scheduler", "register_scheduler", "SimConfig", "SimParams", "SimParamsError", "make_params",
    "param_grid", "stack_params", "validate_params", "PolicyTable", "all_llm_table", "all_slm_table",
    "prm_threshold_table", "random_table", "router_table", "table_from_value_gap", "episode_keys", "simulate",
    "simulate_grid", "simulate_recorded", "check_inputs", "check_episodes_and_seed",
]
