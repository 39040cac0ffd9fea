"""Episode rollout: one `lax.while_loop` over slots around the slot step (vmapped over grid points and episodes in
`_simulate_grid`), one `jit` per config."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax.sim.draws import slot_draws
from prada_jax.sim.schedulers import get as get_scheduler
from prada_jax.sim.metrics import EpisodeMetrics, finalize
from prada_jax.sim.params import SimConfig, SimParams, SimParamsError, resolve_config, validate_params
from prada_jax.sim.policies import PolicyTable, check_table
from prada_jax.sim.state import FREE, LOCAL, QUEUED, SERVE, UPLOAD, SimState, Totals, init_state
from prada_jax.sim.step import step_slot


@struct.dataclass
class SlotRecord:
    """Per-slot snapshot for invariant checks (after the slot's progress; `totals.peak_*` hold the resource use
    right after the admissions, before one-slot uploads give their bandwidth back)."""

    inflight: jnp.ndarray  # int32: UPLOAD + SERVE users
    held_bandwidth: jnp.ndarray  # float32: bit/s held by UPLOAD users
    queued: jnp.ndarray  # int32
    local: jnp.ndarray  # int32
    in_system: jnp.ndarray  # int32 counted tasks not FREE
    totals: Totals
    min_latency: jnp.ndarray  # float32: smallest per-user delay (accumulated, and of the current step)
    stray_bandwidth: jnp.ndarray  # bool: a user that is not uploading holds bandwidth
    upload_beyond_busy: jnp.ndarray  # bool: an upload outlasts its request's busy time
    step_out_of_range: jnp.ndarray  # bool: a user in the system points past its problem's last step
    cache_beyond_context: jnp.ndarray  # bool: an SLM or server cache longer than the context
    active: jnp.ndarray  # bool: the slot was simulated (False: after the drain ended early, state frozen)


def counted_in_system(state: SimState, config: SimConfig):
    """Counted tasks (arrived in [warmup, horizon)) still in the system."""
    u = state.users
    return (u.phase != FREE) & (u.arrival_slot >= config.warmup_slots)


def _episode_step(packed, table, config: SimConfig):
    """`step(params, key, state, t) -> state` of one episode: slot t's draws, then `step_slot`."""
    n, k = packed.slm_step_tokens.shape
    # Draw only what this configuration reads: Stage-1 uniforms with stage1_sampling, scheduler uniforms for the
    # schedulers that use them (the words drawn are the same either way; draws.slot_draws).
    sched = get_scheduler(config.scheduler)

    def step(params, key, state: SimState, t):
        draws = slot_draws(key, t, params.arrival_rate, n, k, config.max_users, config.max_arrivals_per_slot,
                           stage1=config.stage1_sampling, sched=sched.reads_sched_draws)
        return step_slot(state, t, draws, packed, table, params, config)

    return step


def _draining(state: SimState, t, config: SimConfig):
    """Whether an episode steps in slot t: always in the horizon, then while a counted task is in the system."""
    return (t < config.num_slots) | ((t < config.num_slots + config.drain_slots)
                                     & jnp.any(counted_in_system(state, config)))


def _freeze(running, new, old):
    """`new` where the episode runs, `old` where it is done; `running` is [*batch], leaves are [*batch, ...]."""
    def pick(a, b):
        return jnp.where(running.reshape(running.shape + (1,) * (a.ndim - running.ndim)), a, b)

    return jax.tree.map(pick, new, old)


def _slot_loop(step, draining, state, config: SimConfig):
    """Horizon: `num_slots` slots with arrivals. Drain: up to `drain_slots` more without arrivals, until every
    counted task has finished (tasks still in the system then are censored, see metrics.finalize).

    One `lax.while_loop` over slots for a batch of episodes (leaves [*batch, ...]; `step(state, t)` and
    `draining(state, t) -> bool [*batch]` act on the batch). The slot index is shared, so the condition ("some
    episode is still draining") is not batched and the horizon slots step every episode with no select; a `lax.cond`
    on the slot index freezes each finished episode only in the drain. Returns (state, t_end [*batch]): the slot
    after each episode's last one."""
    def any_running(carry):
        state, t, _ = carry
        return jnp.any(draining(state, t))

    def advance(carry):
        state, t, t_end = carry
        new = step(state, t)
        running = draining(state, t)
        state = jax.lax.cond(t < config.num_slots, lambda: new, lambda: _freeze(running, new, state))
        return state, t + 1, jnp.where(running, t + 1, t_end)

    t_end = jnp.zeros(jax.eval_shape(draining, state, jnp.int32(0)).shape, jnp.int32)  # [*batch]
    state, _, t_end = jax.lax.while_loop(any_running, advance, (state, jnp.int32(0), t_end))
    return state, t_end


def _rollout_recorded(packed, table, params, config: SimConfig, key):
    """One episode as a `lax.scan` over every horizon and drain slot, with a SlotRecord per slot (frozen after the
    episode's end, `active` False)."""
    step = _episode_step(packed, table, config)

    def body(carry, t):
        state, t_end = carry
        active = _draining(state, t, config)
        state = _freeze(active, step(params, key, state, t), state)
        u = state.users
        rec = SlotRecord(
            inflight=jnp.sum((u.phase == UPLOAD) | (u.phase == SERVE)).astype(jnp.int32),
            held_bandwidth=jnp.sum(jnp.where(u.phase == UPLOAD, u.bandwidth, 0.0)),
            queued=jnp.sum(u.phase == QUEUED).astype(jnp.int32),
            local=jnp.sum(u.phase == LOCAL).astype(jnp.int32),
            in_system=jnp.sum(counted_in_system(state, config)).astype(jnp.int32),
            totals=state.totals,
            min_latency=jnp.min(jnp.stack([u.proc_s, u.comm_s, u.queue_s, u.step_proc_s, u.step_comm_s])),
            stray_bandwidth=jnp.any((u.phase != UPLOAD) & (u.bandwidth != 0.0)),
            upload_beyond_busy=jnp.any((u.phase == UPLOAD) & (u.upload_slots > u.busy_slots)),
            step_out_of_range=jnp.any((u.phase != FREE) & ((u.step < 0) | (u.step >= packed.num_steps[u.problem]))),
            cache_beyond_context=jnp.any((u.slm_cached > u.context) | (u.server_cached > u.context)),
            active=active,
        )
        return (state, jnp.where(active, t + 1, t_end)), rec

    init = (init_state(config.max_users, packed.slm_step_tokens.shape[1]), jnp.int32(0))
    (state, t_end), recs = jax.lax.scan(body, init, jnp.arange(config.num_slots + config.drain_slots))
    return finalize(state, t_end, params, config), recs


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate(packed, table, params, config, key):
    step = _episode_step(packed, table, config)
    state0 = init_state(config.max_users, packed.slm_step_tokens.shape[1])
    state, t_end = _slot_loop(lambda state, t: step(params, key, state, t),
                              lambda state, t: _draining(state, t, config), state0, config)
    return finalize(state, t_end, params, config)


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate_recorded(packed, table, params, config, key):
    return _rollout_recorded(packed, table, params, config, key)


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate_grid(packed, table, params_grid, config, keys):
    """Grid points x episodes: one slot loop over the whole [G, E] batch, the slot step vmapped inside it.

    The loop sits outside the vmaps, not inside a vmapped per-episode rollout: vmap's rule for a while_loop
    re-batches the whole slot step once per round of its fixpoint over which carry leaves vary, and again per vmap
    level. Stepping the batch inside one loop traces the step once: trace + lower about 3.0 s -> 1.9 s at E = 1,024,
    U = 64, the same program and numbers (docs/performance.md)."""
    step = _episode_step(packed, table, config)
    # in_axes: inner vmap over the episodes (keys, states), outer over the grid points (params, states).
    step_b = jax.vmap(jax.vmap(step, in_axes=(None, 0, 0, None)), in_axes=(0, None, 0, None))
    draining_b = jax.vmap(jax.vmap(lambda state, t: _draining(state, t, config), in_axes=(0, None)), in_axes=(0, None))
    finalize_b = jax.vmap(jax.vmap(lambda state, t_end, p: finalize(state, t_end, p, config), in_axes=(0, 0, None)))
    batch = (params_grid.bandwidth_bps.shape[0], keys.shape[0])  # [G] leaves (simulate_grid checks)
    state0 = jax.tree.map(lambda x: jnp.broadcast_to(x, batch + x.shape),
                          init_state(config.max_users, packed.slm_step_tokens.shape[1]))
    state, t_end = _slot_loop(lambda state, t: step_b(params_grid, keys, state, t), draining_b, state0, config)
    return finalize_b(state, t_end, params_grid)


def check_inputs(packed, table, params, config) -> SimConfig:
    """Every check an entry point runs before any work (params against the registry's rules and `config`, the
    table, step times float32 can add up); SimParamsError naming the parameter otherwise. Returns the config with
    max_arrivals_per_slot resolved (see resolve_config). Other entry points into the slot step (an environment
    API) call this too, so that every door is as strict as the CLI."""
    return _check(packed, table, params, config)


def _check(packed, table, params, config) -> SimConfig:
    """Validate everything; return the config with max_arrivals_per_slot resolved (see resolve_config)."""
    validate_params(params, config)  # before resolve_config: an absurd arrival rate is named, not sent to scipy
    config = resolve_config(params, config)
    check_table(table, packed.slm_step_tokens.shape[0], packed.slm_step_tokens.shape[1], packed.step_mask)
    from prada_jax.sim.resources import step_time_problem

    problem = step_time_problem(packed, params, config)
    if problem:
        raise SimParamsError(problem)
    return config


def check_episodes_and_seed(episodes, seed) -> tuple[int, int]:
    """(episodes, seed) as ints, or SimParamsError naming the argument: episodes an integer >= 1, seed an integer
    in [0, 2**32) (jax.random.PRNGKey keeps 32 bits: 2**32 would give the episodes of seed 0); never truncated."""
    from prada_jax import constants as C

    def as_int(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SimParamsError(f"{name} must be an integer, got {value!r}")
        return int(value)

    episodes, seed = as_int("episodes", episodes), as_int("seed", seed)
    if episodes < 1:
        raise SimParamsError(f"episodes must be >= 1, got {episodes}")
    if C.seed_problem(seed):
        raise SimParamsError(f"seed: {C.seed_problem(seed)}")
    return episodes, seed


def _check_single(params: SimParams) -> None:
    if not isinstance(params, SimParams) or jnp.ndim(params.bandwidth_bps) != 0:
        raise SimParamsError("simulate needs scalar params (one point, make_params); use simulate_grid for a grid")


def simulate(packed, table: PolicyTable, params: SimParams, config: SimConfig, key) -> EpisodeMetrics:
    """One episode with scalar params; `key` is the episode key (draws of slot t use fold_in(key, t))."""
    _check_single(params)
    config = _check(packed, table, params, config)
    return _simulate(packed, table, params, config, key)


def simulate_recorded(packed, table: PolicyTable, params: SimParams, config: SimConfig, key):
    """One episode plus a SlotRecord per slot (leaves [T]); for invariant tests and debugging."""
    _check_single(params)
    config = _check(packed, table, params, config)
    return _simulate_recorded(packed, table, params, config, key)


def episode_keys(episodes: int, seed: int):
    """Episode keys of simulate_grid: the same E keys at every grid point (common random numbers)."""
    episodes, seed = check_episodes_and_seed(episodes, seed)
    return jax.random.split(jax.random.PRNGKey(seed), episodes)


def simulate_grid(packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, episodes: int,
                  seed: int) -> EpisodeMetrics:
    """vmap over grid points (params leaves [G]) and episodes; result leaves are [G, E]. One compile per
    (config, trace shape, G, E).

    With several local devices (one process) the grid points and episodes are spread over them
    (prada_jax.sharding; the same numbers, since each episode runs on one device with its own key)."""
    episodes, seed = check_episodes_and_seed(episodes, seed)
    if not isinstance(params_grid, SimParams) or jnp.ndim(params_grid.bandwidth_bps) != 1:
        raise SimParamsError("simulate_grid needs params with a leading grid axis [G]; use param_grid/stack_params")
    config = _check(packed, table, params_grid, config)
    from prada_jax.sim.resources import memory_problem

    problem = memory_problem(config.max_users, packed.slm_step_tokens.shape[1], config.max_arrivals_per_slot,
                             params_grid.bandwidth_bps.shape[0], episodes)
    if problem:
        raise SimParamsError(f"simulate_grid: episodes={episodes} {problem}; use fewer episodes or grid points")
    from prada_jax import sharding  # sharding builds on this module

    if sharding.spreads_over_devices():
        metrics = sharding.simulate_grid_sharded(packed, table, params_grid, config, episodes, seed)
        return jax.tree.map(jnp.asarray, metrics)  # device arrays, as from the single-device path
    return _simulate_grid(packed, table, params_grid, config, episode_keys(episodes, seed))
