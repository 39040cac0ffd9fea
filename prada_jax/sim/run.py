"""Episode rollout: one `lax.while_loop` over slots, `vmap` over episodes and grid points, one `jit` per config."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from prada_jax.sim.draws import slot_draws
from prada_jax.sim.schedulers import get as get_scheduler
from prada_jax.sim.metrics import EpisodeMetrics, finalize
from prada_jax.sim.params import SimConfig, SimParams, resolve_config, validate_params
from prada_jax.sim.policies import PolicyTable, check_table
from prada_jax.sim.state import FREE, LOCAL, QUEUED, SERVE, UPLOAD, SimState, Totals, init_state
from prada_jax.sim.step import step_slot


@struct.dataclass
class SlotRecord:
    """Per-slot snapshot for invariant checks (after the slot's progress)."""

    inflight: jnp.ndarray  # int32: UPLOAD + SERVE users
    held_bandwidth: jnp.ndarray  # float32: bit/s held by UPLOAD users
    queued: jnp.ndarray  # int32
    local: jnp.ndarray  # int32
    in_system: jnp.ndarray  # int32 counted tasks not FREE
    totals: Totals
    min_latency: jnp.ndarray  # float32: smallest per-user latency accumulator
    active: jnp.ndarray  # bool: the slot was simulated (False: after the drain ended early, state frozen)


def counted_in_system(state: SimState, config: SimConfig):
    """Counted tasks (arrived in [warmup, horizon)) still in the system."""
    u = state.users
    return (u.phase != FREE) & (u.arrival_slot >= config.warmup_slots)


# Names of _simulate_grid's vmapped axes. The slot loop stops when no episode of the batch is still draining (a psum
# over these axes), so its condition is not batched: the horizon slots need no per-episode select, and the slot
# step appears once in the program (a scan for the horizon plus a while_loop for the drain compiled it twice).
# Distinct from the device mesh axes (prada_jax.sharding), so no collective ever crosses devices.
GRID_BATCH_AXIS, EPISODE_BATCH_AXIS = "sim_grid_batch", "sim_episode_batch"


def _rollout(packed, table, params, config: SimConfig, key, record: bool, batch_axes: tuple = ()):
    """Horizon: `num_slots` slots with arrivals. Drain: up to `drain_slots` more without arrivals, until every
    counted task has finished (tasks still in the system then are censored, see metrics.finalize).

    batch_axes: names of the vmapped axes this call runs under (none for one episode); the loop runs until no
    episode of the batch is draining, and each episode stops at its own t_end either way."""
    n, k = packed.slm_step_tokens.shape
    # Draw only what this configuration reads: Stage-1 uniforms with stage1_sampling, scheduler uniforms for the
    # schedulers that use them (the words drawn are the same either way; draws.slot_draws).
    sched = get_scheduler(config.scheduler)

    def step(state: SimState, t):
        draws = slot_draws(key, t, params.arrival_rate, n, k, config.max_users, config.max_arrivals_per_slot,
                           stage1=config.stage1_sampling, sched=sched.reads_sched_draws)
        return step_slot(state, t, draws, packed, table, params, config)

    def draining(state: SimState, t):
        return (t < config.num_slots) | ((t < config.num_slots + config.drain_slots)
                                         & jnp.any(counted_in_system(state, config)))

    init = (init_state(config.max_users, k), jnp.int32(0))
    if not record:
        def any_running(carry):
            state, t, _ = carry
            return jax.lax.psum(draining(state, t).astype(jnp.int32), batch_axes) > 0

        def advance(carry):
            state, t, t_end = carry
            new = step(state, t)
            running = draining(state, t)
            # In the horizon every episode steps; in the drain an episode whose counted tasks finished stays frozen.
            state = jax.lax.cond(t < config.num_slots, lambda: new,
                                 lambda: jax.tree.map(lambda a, b: jnp.where(running, a, b), new, state))
            return state, t + 1, jnp.where(running, t + 1, t_end)

        state, _, t_end = jax.lax.while_loop(any_running, advance, (init[0], jnp.int32(0), jnp.int32(0)))
        return finalize(state, t_end, params, config), None

    def body(carry, t):
        state, t_end = carry
        active = draining(state, t)
        new = step(state, t)
        state = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
        u = state.users
        rec = SlotRecord(
            inflight=jnp.sum((u.phase == UPLOAD) | (u.phase == SERVE)).astype(jnp.int32),
            held_bandwidth=jnp.sum(jnp.where(u.phase == UPLOAD, u.bandwidth, 0.0)),
            queued=jnp.sum(u.phase == QUEUED).astype(jnp.int32),
            local=jnp.sum(u.phase == LOCAL).astype(jnp.int32),
            in_system=jnp.sum(counted_in_system(state, config)).astype(jnp.int32),
            totals=state.totals,
            min_latency=jnp.minimum(jnp.min(u.proc_s), jnp.minimum(jnp.min(u.comm_s), jnp.min(u.queue_s))),
            active=active,
        )
        return (state, jnp.where(active, t + 1, t_end)), rec

    (state, t_end), recs = jax.lax.scan(body, init, jnp.arange(config.num_slots + config.drain_slots))
    return finalize(state, t_end, params, config), recs


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate(packed, table, params, config, key):
    return _rollout(packed, table, params, config, key, record=False)[0]


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate_recorded(packed, table, params, config, key):
    return _rollout(packed, table, params, config, key, record=True)


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate_grid(packed, table, params_grid, config, keys):
    axes = (GRID_BATCH_AXIS, EPISODE_BATCH_AXIS)
    one = lambda p, key: _rollout(packed, table, p, config, key, record=False, batch_axes=axes)[0]
    return jax.vmap(lambda p: jax.vmap(lambda key: one(p, key), axis_name=EPISODE_BATCH_AXIS)(keys),
                    axis_name=GRID_BATCH_AXIS)(params_grid)


def _check(packed, table, params, config) -> SimConfig:
    """Validate everything; return the config with max_arrivals_per_slot resolved (see resolve_config)."""
    config = resolve_config(params, config)
    validate_params(params, config)
    check_table(table, packed.slm_step_tokens.shape[0], packed.slm_step_tokens.shape[1])
    return config


def simulate(packed, table: PolicyTable, params: SimParams, config: SimConfig, key) -> EpisodeMetrics:
    """One episode with scalar params; `key` is the episode key (draws of slot t use fold_in(key, t))."""
    config = _check(packed, table, params, config)
    return _simulate(packed, table, params, config, key)


def simulate_recorded(packed, table: PolicyTable, params: SimParams, config: SimConfig, key):
    """One episode plus a SlotRecord per slot (leaves [T]); for invariant tests and debugging."""
    config = _check(packed, table, params, config)
    return _simulate_recorded(packed, table, params, config, key)


def episode_keys(episodes: int, seed: int):
    """Episode keys of simulate_grid: the same E keys at every grid point (common random numbers)."""
    return jax.random.split(jax.random.PRNGKey(seed), episodes)


def simulate_grid(packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, episodes: int,
                  seed: int) -> EpisodeMetrics:
    """vmap over grid points (params leaves [G]) and episodes; result leaves are [G, E]. One compile per
    (config, trace shape, G, E).

    With several local devices (one process) the grid points and episodes are spread over them
    (prada_jax.sharding; the same numbers, since each episode runs on one device with its own key)."""
    config = _check(packed, table, params_grid, config)
    if jnp.ndim(params_grid.bandwidth_bps) != 1:
        raise ValueError("simulate_grid needs params with a leading grid axis [G]; use param_grid/stack_params")
    from prada_jax import sharding  # sharding builds on this module

    if sharding.spreads_over_devices():
        metrics = sharding.simulate_grid_sharded(packed, table, params_grid, config, episodes, seed)
        return jax.tree.map(jnp.asarray, metrics)  # device arrays, as from the single-device path
    return _simulate_grid(packed, table, params_grid, config, episode_keys(episodes, seed))
