"""`prada-multiuser-v0`: the multi-user PRADA system as a gymnax environment, one env step = one slot.

An episode is one simulator episode (docs/simulator.md): `num_slots` slots with arrivals, then the drain until every
counted task has finished or `drain_slots` have passed. Each step runs the simulator's own two halves of a slot
(prada_jax.sim.step): `observe_slot` produced the observation of slot t (arrivals, fading, Stage 1); the action (one
decision per candidate row) goes through the feasibility projection (prada_jax.sim.candidate_table.project) and then
`apply_slot` (accounting, progress); `observe_slot` of slot t + 1 gives the next observation. The random draws of
slot t are `slot_draws(episode_key, t)` with the reset key as the episode key, so an episode reset with the key
`simulate_grid` gives episode e (`sim.episode_keys`) sees the same arrivals, channels and task outcomes.

Reward: the increment of the running utility U_t of the episode's counted tasks (accuracy - beta x (processing +
communication + queuing) per task, finished and unfinished alike, as `metrics.finalize` counts them at the
drain's end). Its sum over the episode is exactly the utility the scheduler study reports; an unfinished task
at the end counts as entered, never correct, with the delay it accumulated, so leaving work unfinished never pays.
`info["task_reward"]` is the unnormalised increment (correct - beta x delay, summed over tasks), the training
signal of prada_jax.env.ppo.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax.env.gymnax_api import Box, Environment, MultiDiscrete
from prada_jax.sim import candidate_table as T
from prada_jax.sim import metrics as MET
from prada_jax.sim import protocols, schedulers
from prada_jax.sim.draws import ARRIVAL_TAIL_TOLERANCE, arrival_tail_mass, slot_draws
from prada_jax.sim.params import (
    SimConfig,
    SimParams,
    SimParamsError,
    make_params,
    resolve_config,
    validate_params,
)
from prada_jax.sim.policies import PolicyTable, check_table
from prada_jax.sim.run import _draining
from prada_jax.sim.state import SimState, init_state
from prada_jax.sim.step import SlotObservation, apply_slot, observe_slot


class EnvParamsError(SimParamsError):
    """An environment parameter is out of range."""


@struct.dataclass
class EnvParams:
    """Traced environment parameters. `sim` is the system; with `randomize`, every reset draws bandwidth
    (log-uniform), server capacity (uniform integers), arrival rate (uniform, per slot) and beta (log-uniform)
    from the ranges, and keeps the other leaves of `sim`."""

    sim: SimParams
    max_steps_in_episode: int  # num_slots + drain_slots: the drain always ends an episode by then (truncation)
    randomize: bool = False
    bandwidth_range: jnp.ndarray = struct.field(default_factory=lambda: jnp.array([1e5, 1e9], jnp.float32))
    capacity_range: jnp.ndarray = struct.field(default_factory=lambda: jnp.array([1, 16], jnp.int32))
    arrival_rate_range: jnp.ndarray = struct.field(default_factory=lambda: jnp.array([0.5, 6.0], jnp.float32))
    beta_range: jnp.ndarray = struct.field(default_factory=lambda: jnp.array([0.1, 1000.0], jnp.float32))


@struct.dataclass
class EnvState:
    time: jnp.ndarray  # int32: the slot t whose observation is pending
    sim: SimState  # the simulator state before slot t
    pending: SlotObservation  # observe_slot of slot t (its view without the policy table and params)
    table: T.CandidateTable  # the candidate table of slot t (the observation and what the projection needs)
    sim_params: SimParams  # this episode's system (drawn at reset with `randomize`)
    episode_key: jax.Array


def _strip(obs: SlotObservation) -> SlotObservation:
    return obs.replace(view=obs.view.replace(table=None, params=None))


class PradaMultiUser(Environment):
    """gymnax environment over the slot simulator; the trace, Stage-1 table and SimConfig are static."""

    def __init__(self, packed, table: PolicyTable, config: SimConfig):
        check_table(table, packed.slm_step_tokens.shape[0], packed.slm_step_tokens.shape[1])
        if config.scheduler != "prada" or schedulers.get(config.scheduler).protocol != protocols.OFFLOAD:
            raise EnvParamsError(f"SimConfig.scheduler must be 'prada' (the offload protocol and its draws); got "
                                 f"{config.scheduler!r}")
        if config.max_arrivals_per_slot is None:
            raise EnvParamsError("SimConfig.max_arrivals_per_slot must be set (make() resolves it from the ranges)")
        self.packed, self.policy_table, self.config = packed, table, config

    # gymnax hashes `self` as a static jit argument: identity, like gymnax's own environments.
    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(sim=make_params(), max_steps_in_episode=self.config.num_slots + self.config.drain_slots)

    @property
    def name(self) -> str:
        return "prada-multiuser-v0"

    @property
    def num_actions(self) -> int:
        return T.NUM_DECISIONS

    @property
    def num_candidates(self) -> int:
        return self.config.max_candidates

    def action_space(self, params: EnvParams | None = None) -> MultiDiscrete:
        """One of local (0) / queue (1) / immediate (2) per candidate row."""
        return MultiDiscrete(T.NUM_DECISIONS, (self.config.max_candidates,))

    def observation_space(self, params: EnvParams | None = None) -> Box:
        return Box(-jnp.inf, jnp.inf, (self.config.max_candidates, T.NUM_FEATURES), jnp.float32)

    # --- the two halves -------------------------------------------------------------------------------------

    def _observe(self, sim: SimState, t, sim_params: SimParams, episode_key):
        c = self.config
        n, k = self.packed.slm_step_tokens.shape
        draws = slot_draws(episode_key, t, sim_params.arrival_rate, n, k, c.max_users, c.max_arrivals_per_slot,
                           stage1=c.stage1_sampling, sched=schedulers.get(c.scheduler).reads_sched_draws)
        pending = observe_slot(sim, t, draws, self.packed, self.policy_table, sim_params, c)
        table = T.candidate_table(pending.view, c, sim_params.arrival_rate)
        return _strip(pending), table

    def view(self, state: EnvState) -> schedulers.SlotView:
        """The pending slot's SlotView (what a registered scheduler would decide on)."""
        return state.pending.view.replace(table=self.policy_table, params=state.sim_params)

    def sample_sim_params(self, key, params: EnvParams) -> SimParams:
        """This episode's system: `params.sim`, with the four randomised leaves drawn when `params.randomize`."""
        kb, km, kl, kbeta = jax.random.split(key, 4)

        def log_uniform(k, r):
            lo, hi = jnp.log(r[0]), jnp.log(r[1])
            return jnp.exp(jax.random.uniform(k, (), jnp.float32, lo, hi))

        drawn = params.sim.replace(
            bandwidth_bps=log_uniform(kb, params.bandwidth_range),
            server_capacity=jax.random.randint(km, (), params.capacity_range[0], params.capacity_range[1] + 1),
            arrival_rate=jax.random.uniform(kl, (), jnp.float32, params.arrival_rate_range[0],
                                            params.arrival_rate_range[1]),
            beta=log_uniform(kbeta, params.beta_range),
        )
        return jax.tree.map(lambda a, b: jnp.where(params.randomize, a, b), drawn, params.sim)

    def reset_env(self, key, params: EnvParams):
        sim_params = self.sample_sim_params(jax.random.fold_in(key, 0x5EED), params)
        sim = init_state(self.config.max_users, self.packed.slm_step_tokens.shape[1])
        t = jnp.int32(0)
        pending, table = self._observe(sim, t, sim_params, key)
        state = EnvState(time=t, sim=sim, pending=pending, table=table, sim_params=sim_params, episode_key=key)
        return table.obs, state

    def step_env(self, key, state: EnvState, action, params: EnvParams):
        """Slot `state.time` with `action` (projected onto a legal decision), then the next slot's observation.
        `key` is unused: the slot's draws come from the episode key (common random numbers across policies)."""
        del key
        decision_c, bandwidth_c = T.project(self.view(state), state.table, action)
        return self.apply_decisions(state, decision_c, bandwidth_c)

    def apply_decisions(self, state: EnvState, decision_c, bandwidth_c):
        """Slot `state.time` with legal per-candidate decisions and bandwidths ([C])."""
        view = self.view(state)
        decision, bandwidth = schedulers.scatter(view, state.table.cands, decision_c, bandwidth_c)
        return self._advance(state, decision, bandwidth)

    def _advance(self, state: EnvState, decision, bandwidth):
        c, t = self.config, state.time
        pending = state.pending.replace(view=self.view(state))
        sim = apply_slot(state.sim, pending, decision, bandwidth, t, self.packed, self.policy_table,
                         state.sim_params, c)
        t1 = t + 1
        before = utility_parts(state.sim, t, state.sim_params, c)
        after = utility_parts(sim, t1, state.sim_params, c)
        reward = running_utility(*after) - running_utility(*before)
        task_reward = (after[0] - after[1]) - (before[0] - before[1])
        done = ~_draining(sim, t1, c)
        next_pending, next_table = self._observe(sim, t1, state.sim_params, state.episode_key)
        new = EnvState(time=t1, sim=sim, pending=next_pending, table=next_table, sim_params=state.sim_params,
                       episode_key=state.episode_key)
        info = {"task_reward": task_reward, "entered": after[2],
                "metrics": MET.finalize(sim, t1, state.sim_params, c)}
        return next_table.obs, new, reward.astype(jnp.float32), done, info

    def is_truncated(self, state: EnvState, params: EnvParams):
        return state.time >= params.max_steps_in_episode

    def is_terminated(self, state: EnvState, params: EnvParams):
        return ~_draining(state.sim, state.time, self.config)


def utility_parts(sim: SimState, t_end, sim_params: SimParams, config: SimConfig):
    """(correct, beta x delay, entered) of the counted tasks so far, as `metrics.finalize` would count them if the
    episode ended before slot `t_end` (finished tasks, and the ones in the system with their delays so far)."""
    m = MET.finalize(sim, t_end, sim_params, config)
    entered = (m.completed + m.unfinished).astype(jnp.float32)
    delay = m.processing_s + m.communication_s + m.queuing_s
    return m.correct.astype(jnp.float32), sim_params.beta * delay, entered


def running_utility(correct, beta_delay, entered):
    """accuracy - beta x delay per counted task (0 before any counted task arrived)."""
    return jnp.where(entered > 0, (correct - beta_delay) / jnp.maximum(entered, 1.0), 0.0)


def validate_env_params(params: EnvParams, config: SimConfig) -> EnvParams:
    """Check concrete values; raise EnvParamsError (one line, naming the parameter)."""
    validate_params(params.sim, config)
    if np.ndim(params.sim.bandwidth_bps) != 0:
        raise EnvParamsError("EnvParams.sim must hold scalars (vmap the environment over a batch of EnvParams)")
    steps = params.max_steps_in_episode
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise EnvParamsError(f"EnvParams.max_steps_in_episode must be a positive integer, got {steps!r}")

    def rng(name, positive=True, integer=False):
        r = np.asarray(getattr(params, name))
        if r.shape != (2,) or not np.all(np.isfinite(r)) or r[0] > r[1] or (positive and r[0] <= 0):
            raise EnvParamsError(f"EnvParams.{name} must be [low, high] with {'0 < ' if positive else ''}low <= high,"
                                 f" got {r.tolist()}")
        if integer and not np.issubdtype(r.dtype, np.integer):
            raise EnvParamsError(f"EnvParams.{name} must hold integers, got {r.dtype}")
        return r

    rng("bandwidth_range")
    cap = rng("capacity_range", integer=True)
    if bool(params.randomize) and cap[1] > config.max_servers:
        raise EnvParamsError(f"EnvParams.capacity_range high {cap[1]} exceeds SimConfig.max_servers "
                             f"{config.max_servers}")
    lam = rng("arrival_rate_range")
    rng("beta_range")
    if bool(params.randomize):
        if arrival_tail_mass(lam[1], config.max_arrivals_per_slot) > ARRIVAL_TAIL_TOLERANCE:
            raise EnvParamsError(f"EnvParams.arrival_rate_range high {lam[1]:g} needs a larger "
                                 f"SimConfig.max_arrivals_per_slot than {config.max_arrivals_per_slot}")
    return params


def build(packed, table: PolicyTable, config: SimConfig, sim_params: SimParams, **ranges):
    """(env, env_params) with validated params; `ranges` are EnvParams fields (randomize=..., *_range=[lo, hi])."""
    arrays = {k: jnp.asarray(v, jnp.int32 if k == "capacity_range" else jnp.float32)
              for k, v in ranges.items() if k.endswith("_range")}
    randomize = bool(ranges.get("randomize", False))
    unknown = set(ranges) - set(arrays) - {"randomize"}
    if unknown:
        raise EnvParamsError(f"unknown EnvParams fields {sorted(unknown)}")
    params = EnvParams(sim=sim_params, max_steps_in_episode=config.num_slots + config.drain_slots,
                       randomize=randomize, **arrays)
    top_rate = max(float(np.asarray(sim_params.arrival_rate)),
                   float(np.asarray(params.arrival_rate_range)[1]) if randomize else 0.0)
    probe = sim_params.replace(arrival_rate=jnp.float32(top_rate))
    config = resolve_config(probe, config)
    validate_env_params(params, config)
    if randomize:
        validate_params(probe.replace(server_capacity=jnp.int32(np.asarray(params.capacity_range)[1])), config)
    return PradaMultiUser(packed, table, config), params


__all__ = ["EnvParams", "EnvParamsError", "EnvState", "PradaMultiUser", "build", "running_utility",
           "utility_parts", "validate_env_params"]
