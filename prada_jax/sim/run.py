"""Episode rollout: one `lax.while_loop` over slots around the slot step (vmapped over grid points and episodes in
`_simulate_grid`), one `jit` per config; the exact candidate cap (SimConfig.max_candidates=None) runs a ladder of
compiled caps and re-runs only the episodes that overflowed (`candidate_ladder`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C
from prada_jax.sim import spread
from prada_jax.sim.draws import slot_draws
from prada_jax.sim.metrics import EpisodeMetrics, finalize
from prada_jax.sim.params import SimConfig, SimParams, SimParamsError, resolve_config, validate_params
from prada_jax.sim.policies import PolicyTable, check_table
from prada_jax.sim.resources import memory_problem, step_time_problem
from prada_jax.sim.schedulers import get as get_scheduler
from prada_jax.sim.state import FREE, LOCAL, QUEUED, SERVE, UPLOAD, SimState, Totals, init_state
from prada_jax.sim.step import apply_slot, observe_slot, schedule, step_slot


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


def _episode_draws(packed, config: SimConfig):
    """`draws(params, key, t) -> SlotDraws` of one episode's slot t."""
    n, k = packed.slm_step_tokens.shape
    # Draw only what this configuration reads: Stage-1 uniforms with stage1_sampling, scheduler uniforms for the
    # schedulers that use them (the words drawn are the same either way; draws.slot_draws).
    sched = get_scheduler(config.scheduler)

    def draws(params, key, t):
        return slot_draws(key, t, params.arrival_rate, n, k, config.max_users, config.max_arrivals_per_slot,
                          stage1=config.stage1_sampling, sched=sched.reads_sched_draws)

    return draws


def _episode_parts(packed, table, config: SimConfig):
    """The slot of one episode in the three parts of `step_slot`, `observe(params, key, state, t) -> SlotObservation`
    (slot t's draws, arrivals, fading, Stage 1), `decide(obs) -> (decision [U], bandwidth [U])` (the registered
    Stage-2 scheduler) and `apply(params, state, obs, decision, bandwidth, t) -> state`, so that a batched rollout
    can skip Stage 2 in a slot where no episode of the batch has a candidate (`_skip_idle_stage2`)."""
    draws = _episode_draws(packed, config)

    # The observation leaves the parts without the table (the same for every episode): a vmapped `observe` would
    # otherwise return a copy of it per episode; `decide` and `apply` put it back.
    def observe(params, key, state: SimState, t):
        obs = observe_slot(state, t, draws(params, key, t), packed, table, params, config)
        return obs.replace(view=obs.view.replace(table=None))

    def with_table(obs):
        return obs.replace(view=obs.view.replace(table=table))

    def decide(obs):
        return schedule(with_table(obs), config)

    def apply(params, state: SimState, obs, decision, bandwidth, t):
        return apply_slot(state, with_table(obs), decision, bandwidth, t, packed, table, params, config)

    return observe, decide, apply


def _episode_step(packed, table, config: SimConfig):
    """`step(params, key, state, t) -> state` of one episode: slot t's draws, then `step_slot`."""
    draws = _episode_draws(packed, config)

    def step(params, key, state: SimState, t):
        return step_slot(state, t, draws(params, key, t), packed, table, params, config)

    return step


def _skip_idle_stage2(observe_b, decide_b, apply_b):
    """A batched slot step `(params, keys, state, t) -> state` that runs Stage 2 only when some episode of the batch
    has a candidate (a `lax.cond` on one unbatched flag). Exact: `apply_slot` reads a decision and a bandwidth only
    where `view.cand` holds, so in a slot without candidates any decision gives the same state. A batch whose
    table nominates nothing (math500's shipped PRADA table) or an idle stretch of a light load then skips Stage 2,
    most of the slot's work."""
    def step_b(params, keys, state, t):
        obs = observe_b(params, keys, state, t)
        cand = obs.view.cand

        def idle():
            return jnp.zeros(cand.shape, jnp.int32), jnp.zeros(cand.shape, jnp.float32)

        decision, bandwidth = jax.lax.cond(jnp.any(cand), lambda: decide_b(obs), idle)
        return apply_b(params, state, obs, decision, bandwidth, t)

    return step_b


def _draining(state: SimState, t, config: SimConfig):
    """Whether an episode steps in slot t: always in the horizon, then while a counted task is in the system."""
    return (t < config.num_slots) | ((t < config.num_slots + config.drain_slots)
                                     & jnp.any(counted_in_system(state, config)))


def _freeze(running, new, old):
    """`new` where the episode runs, `old` where it is done; `running` is [*batch], leaves are [*batch, ...]."""
    def pick(a, b):
        return jnp.where(running.reshape(running.shape + (1,) * (a.ndim - running.ndim)), a, b)

    return jax.tree.map(pick, new, old)


def _slot_loop(step, draining, state, config: SimConfig, stop_on_overflow: bool = False):
    """Horizon: `num_slots` slots with arrivals. Drain: up to `drain_slots` more without arrivals, until every
    counted task has finished (tasks still in the system then are censored, see metrics.finalize).

    One `lax.while_loop` over slots for a batch of episodes (leaves [*batch, ...]; `step(state, t)` and
    `draining(state, t) -> bool [*batch]` act on the batch). The slot index is shared, so the condition ("some
    episode is still draining") is not batched and the horizon slots step every episode with no select; a `lax.cond`
    on the slot index freezes each finished episode only in the drain. Returns (state, t_end [*batch]): the slot
    after each episode's last one.

    stop_on_overflow: the loop also ends once every episode still running has overflowed its candidate cap (the
    exact cap re-runs those at a larger cap, so the rest of their slots would be wasted)."""
    def any_running(carry):
        state, t, _ = carry
        running = draining(state, t)
        if stop_on_overflow:
            running = running & (state.totals.candidate_overflow_slots == 0)
        return jnp.any(running)

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


@functools.partial(jax.jit, static_argnames=("config", "stop_on_overflow"))
def _simulate(packed, table, params, config, key, stop_on_overflow=False):
    step = _episode_step(packed, table, config)
    state0 = init_state(config.max_users, packed.slm_step_tokens.shape[1])
    state, t_end = _slot_loop(lambda state, t: step(params, key, state, t),
                              lambda state, t: _draining(state, t, config), state0, config, stop_on_overflow)
    return finalize(state, t_end, params, config)


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate_recorded(packed, table, params, config, key):
    return _rollout_recorded(packed, table, params, config, key)


def _batched_rollout(packed, table, params, config: SimConfig, keys, grid: bool, stop_on_overflow: bool = False):
    """Final metrics of a batch of episodes: one slot loop over the whole batch, the slot step vmapped inside it.

    grid=True: params leaves [G] x keys [E] -> leaves [G, E] (every episode at every grid point). grid=False: one
    episode per (params[n], keys[n]) pair -> leaves [N] (the exact cap's re-runs of overflowed episodes).
    stop_on_overflow: see `_slot_loop` (a rung of the exact cap below the last).
    The loop sits outside the vmaps, not inside a vmapped per-episode rollout: vmap's rule for a while_loop
    re-batches the whole slot step once per round of its fixpoint over which carry leaves vary, and again per vmap
    level. Stepping the batch inside one loop traces the step once: trace + lower about 3.0 s -> 1.9 s at E = 1,024,
    U = 64, the same program and numbers (docs/performance.md)."""
    observe, decide, apply = _episode_parts(packed, table, config)
    def draining(state, t):
        return _draining(state, t, config)
    def final(state, t_end, p):
        return finalize(state, t_end, p, config)
    if grid:
        # in_axes: inner vmap over the episodes (keys, states), outer over the grid points (params, states).
        observe_b = jax.vmap(jax.vmap(observe, in_axes=(None, 0, 0, None)), in_axes=(0, None, 0, None))
        decide_b = jax.vmap(jax.vmap(decide))
        apply_b = jax.vmap(jax.vmap(apply, in_axes=(None, 0, 0, 0, 0, None)), in_axes=(0, 0, 0, 0, 0, None))
        draining_b = jax.vmap(jax.vmap(draining, in_axes=(0, None)), in_axes=(0, None))
        finalize_b = jax.vmap(jax.vmap(final, in_axes=(0, 0, None)))
        batch = (params.bandwidth_bps.shape[0], keys.shape[0])
    else:
        observe_b = jax.vmap(observe, in_axes=(0, 0, 0, None))
        decide_b = jax.vmap(decide)
        apply_b = jax.vmap(apply, in_axes=(0, 0, 0, 0, 0, None))
        draining_b = jax.vmap(draining, in_axes=(0, None))
        finalize_b = jax.vmap(final)
        batch = (keys.shape[0],)
    step_b = _skip_idle_stage2(observe_b, decide_b, apply_b)
    state0 = jax.tree.map(lambda x: jnp.broadcast_to(x, batch + x.shape),
                          init_state(config.max_users, packed.slm_step_tokens.shape[1]))
    state, t_end = _slot_loop(lambda state, t: step_b(params, keys, state, t), draining_b, state0, config,
                              stop_on_overflow)
    return finalize_b(state, t_end, params)


@functools.partial(jax.jit, static_argnames=("config", "stop_on_overflow"))
def _simulate_grid(packed, table, params_grid, config, keys, stop_on_overflow=False):
    """Grid points x episodes at one fixed cap: leaves [G, E] (`_batched_rollout`)."""
    return _batched_rollout(packed, table, params_grid, config, keys, True, stop_on_overflow)


@functools.partial(jax.jit, static_argnames=("config", "stop_on_overflow"))
def _simulate_pairs(packed, table, params, config, keys, stop_on_overflow=False):
    """Episode n at grid point params[n] with key keys[n], at one fixed cap: leaves [N] (`_batched_rollout`)."""
    return _batched_rollout(packed, table, params, config, keys, False, stop_on_overflow)


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
    problem = step_time_problem(packed, params, config)
    if problem:
        raise SimParamsError(problem)
    return config


def candidate_ladder(config: SimConfig) -> tuple[int, ...]:
    """Caps run in turn: the fixed cap when SimConfig.max_candidates is an int; otherwise
    SimConfig.candidate_cap_start (C.CANDIDATE_LADDER_START), twice that, ... and finally U (no slot can overflow U).
    A scheduler that does not compact runs once."""
    if config.max_candidates is not None:
        return (config.max_candidates,)
    u = config.max_users
    if not get_scheduler(config.scheduler).compacts:
        return (min(config.candidate_cap_start, u),)
    caps, c = [], config.candidate_cap_start
    while c < u:
        caps.append(c)
        c *= 2
    return tuple(caps) + (u,)


def with_cap(config: SimConfig, cap: int) -> SimConfig:
    """`config` at the fixed cap `cap` (what one compiled program runs)."""
    return dataclasses.replace(config, max_candidates=int(cap))


RERUN_MIN_BATCH = 8  # re-runs are padded to a power of two >= this (per device), so few batch sizes compile


def rerun_batch(count: int, devices: int = 1) -> int:
    """Padded size of a re-run of `count` episodes: a power of two >= RERUN_MIN_BATCH per device."""
    size = max(RERUN_MIN_BATCH, 1 << max(0, int(count) - 1).bit_length())
    return size * devices


def _pairs_at(packed, table, params_grid, config: SimConfig, keys, g_idx, e_idx, stop_on_overflow: bool = False):
    """Metrics (NumPy leaves [N]) of the episodes (g_idx[n], e_idx[n]) at the fixed cap of `config`."""
    n = len(g_idx)
    devices = spread.grid_devices()
    size = rerun_batch(n, devices)
    pad = np.concatenate([np.arange(n), np.full(size - n, n - 1)])  # copies of the last pair
    params = jax.tree.map(lambda leaf: np.asarray(leaf)[np.asarray(g_idx)[pad]], params_grid)
    pair_keys = np.asarray(keys)[np.asarray(e_idx)[pad]]
    if devices > 1:
        out = spread.run_pairs(_simulate_pairs, packed, table, params, config, pair_keys, stop_on_overflow)
    else:
        out = _simulate_pairs(packed, table, params, config, pair_keys, stop_on_overflow)
    return jax.tree.map(lambda leaf: np.asarray(leaf)[:n], out)


def exact_cap(run_first, run_pairs, config: SimConfig):
    """The exact candidate cap: `run_first(config_at_cap, stop_on_overflow)` runs every episode (leaves [*batch]) at
    the ladder's first cap; each further cap re-runs, with `run_pairs(config_at_cap, indices, stop_on_overflow)`
    (leaves [N]), only the episodes whose last run overflowed (`indices`: a tuple of index arrays into the batch).
    An episode depends only on its key and grid point, so every result equals that of a cap it never overflowed;
    the last cap, U, cannot overflow. Every cap but the last may stop its slot loop once all the episodes still
    running have overflowed (their results are replaced anyway). With a fixed cap (max_candidates an int) it is
    one full run. Returns NumPy leaves [*batch]."""
    ladder = candidate_ladder(config)
    last = len(ladder) - 1
    metrics = jax.tree.map(np.array, run_first(with_cap(config, ladder[0]), last > 0))  # writable host copies
    for rung, cap in enumerate(ladder[1:], start=1):
        over = np.nonzero(metrics.candidate_overflow_slots > 0)
        if over[0].size == 0:
            break
        part = run_pairs(with_cap(config, cap), over, rung < last)
        for leaf, new in zip(jax.tree.leaves(metrics), jax.tree.leaves(part)):
            leaf[over] = new
    return metrics


def check_episodes_and_seed(episodes, seed) -> tuple[int, int]:
    """(episodes, seed) as ints, or SimParamsError naming the argument: episodes an integer >= 1, seed an integer
    in [0, 2**32) (jax.random.PRNGKey keeps 32 bits: 2**32 would give the episodes of seed 0); never truncated."""
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
    return _one_episode(lambda cfg, stop: _simulate(packed, table, params, cfg, key, stop), config)


def simulate_recorded(packed, table: PolicyTable, params: SimParams, config: SimConfig, key):
    """One episode plus a SlotRecord per slot (leaves [T]); for invariant tests and debugging."""
    _check_single(params)
    config = _check(packed, table, params, config)
    for cap in candidate_ladder(config):
        out = _simulate_recorded(packed, table, params, with_cap(config, cap), key)
        if int(out[0].candidate_overflow_slots) == 0:
            break
    return out


def _one_episode(run, config: SimConfig) -> EpisodeMetrics:
    """`run(config_at_cap, stop_on_overflow)` of one episode up the ladder until a cap does not overflow."""
    ladder = candidate_ladder(config)
    for rung, cap in enumerate(ladder):
        out = run(with_cap(config, cap), rung < len(ladder) - 1)
        if int(out.candidate_overflow_slots) == 0:
            break
    return out


def episode_keys(episodes: int, seed: int):
    """Episode keys of simulate_grid: the same E keys at every grid point (common random numbers)."""
    episodes, seed = check_episodes_and_seed(episodes, seed)
    return jax.random.split(jax.random.PRNGKey(seed), episodes)


def simulate_grid(packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, episodes: int,
                  seed: int) -> EpisodeMetrics:
    """vmap over grid points (params leaves [G]) and episodes; result leaves are [G, E]. One compile per
    (config, trace shape, G, E) and cap.

    With several local devices (one process) the grid points and episodes are spread over them
    (prada_jax.sharding; the same numbers, since each episode runs on one device with its own key).
    With SimConfig.max_candidates=None (the default) the cap is exact: `exact_cap` runs every episode at a small
    cap and re-runs only those that overflowed it at the next size."""
    episodes, seed = check_episodes_and_seed(episodes, seed)
    if not isinstance(params_grid, SimParams) or jnp.ndim(params_grid.bandwidth_bps) != 1:
        raise SimParamsError("simulate_grid needs params with a leading grid axis [G]; use param_grid/stack_params")
    config = _check(packed, table, params_grid, config)
    problem = memory_problem(config.max_users, packed.slm_step_tokens.shape[1], config.max_arrivals_per_slot,
                             params_grid.bandwidth_bps.shape[0], episodes)
    if problem:
        raise SimParamsError(f"simulate_grid: episodes={episodes} {problem}; use fewer episodes or grid points")
    keys = episode_keys(episodes, seed)
    spreads = spread.spreads_over_devices()

    def first(cfg, stop):
        if spreads:  # over the local devices, as prada_jax.sharding.simulate_grid_sharded
            fn, args, trim = spread.grid_program(_simulate_grid, packed, table, params_grid, cfg, keys,
                                                 stop_on_overflow=stop)
            return trim(fn(*args))
        return _simulate_grid(packed, table, params_grid, cfg, keys, stop)

    def pairs(cfg, over, stop):
        return _pairs_at(packed, table, params_grid, cfg, keys, *over, stop)

    metrics = exact_cap(first, pairs, config)
    return jax.tree.map(jnp.asarray, metrics)  # device arrays, as before
