"""One slot (SimConfig.slot_seconds, 1 ms by default) of the multi-user system (docs/design.md "Simulator
 semantics", docs/simulator.md).

Order inside a slot: arrivals -> fading -> Stage 1 -> Stage 2 -> time accounting -> progress.
`step_slot` = `observe_slot` (up to the SlotView Stage 2 sees) + the registered scheduler + `apply_slot`; the
learning environment (prada_jax.env) calls the same two halves around its action. Pure functions of (state, slot
draws); `run.py` loops the step over slots and vmaps it over episodes and grids.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
from flax import struct

from prada_jax import costs
from prada_jax.sim import latency_models, protocols, schedulers
from prada_jax.sim import stage2 as S2
from prada_jax.sim.draws import SlotDraws, materialized, step_uniform
from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.policies import PolicyTable
from prada_jax.sim.state import FREE, LOCAL, QUEUED, READY, SERVE, UPLOAD, SimState


def slots_for(seconds, slot_seconds: float):
    """Number of whole slots a duration occupies (>= 1; the user acts again at the next boundary)."""
    return jnp.clip(jnp.ceil(seconds / slot_seconds), 1.0, 2.0**30).astype(jnp.int32)


def _arrivals(users, draws: SlotDraws, packed, params: SimParams, t, horizon: int):
    """Admit this slot's arrivals into the lowest-index FREE user slots; none after the horizon (drain)."""
    free = users.phase == FREE
    num_arrivals = jnp.where(t < horizon, draws.num_arrivals, 0)
    n_adm = jnp.minimum(num_arrivals, jnp.sum(free))
    free_rank = jnp.cumsum(free) - 1
    new = free & (free_rank < n_adm)
    a = jnp.clip(free_rank, 0, draws.problem.shape[0] - 1)
    prob = draws.problem[a]
    # The mean SNR (log, pow) of the A arrival draws, computed once per arrival and gathered to the U user slots: the
    # same values as gathering the distances first, without a logarithm and a power per user slot in the gather.
    mean_snr = materialized(t, lambda: costs.mean_snr_linear(costs.user_distance(draws.distance_u), params.snr_db,
                                                             params.path_loss_exponent))[a]

    def put(old, value):
        return jnp.where(new.reshape(new.shape + (1,) * (old.ndim - 1)), value, old)

    # Only the fields a READY user reads are reset. on_server, busy_slots, upload_slots, bandwidth, queue_entry,
    # step_proc_s and step_comm_s are written by the Stage-2 decision that starts a step (local, immediate, or
    # queued) before anything reads them, so a new task's row may keep its predecessor's values there.
    users = users.replace(
        phase=put(users.phase, READY), problem=put(users.problem, prob), step=put(users.step, 0),
        context=put(users.context, packed.query_tokens[prob]), slm_cached=put(users.slm_cached, 0),
        server_cached=put(users.server_cached, 0), on_track=put(users.on_track, True),
        wait_slots=put(users.wait_slots, 0),
        proc_s=put(users.proc_s, 0.0), comm_s=put(users.comm_s, 0.0),
        queue_s=put(users.queue_s, 0.0), offloaded=put(users.offloaded, 0), arrival_slot=put(users.arrival_slot, t),
        task_seed=put(users.task_seed, draws.task_seed[a]), mean_snr=put(users.mean_snr, mean_snr),
    )
    return users, num_arrivals, num_arrivals - n_adm


@struct.dataclass
class SlotObservation:
    """Slot t up to the Stage-2 decision: the `SlotView` the scheduler sees (users after this slot's arrivals,
    faded channel, Stage-1 candidates, free resources), the Stage-1 nominees' complement that runs locally
    regardless, and the arrival counts the accounting books."""

    view: schedulers.SlotView
    go_local: jnp.ndarray  # bool [U] READY users Stage 1 keeps local (not Stage-2 candidates)
    num_arrived: jnp.ndarray  # int32 arrivals drawn in this slot
    num_dropped: jnp.ndarray  # int32 arrivals that found no free user slot


def observe_slot(state: SimState, t, draws: SlotDraws, packed, table: PolicyTable, params: SimParams,
                 config: SimConfig) -> SlotObservation:
    """First half of a slot: arrivals -> fading -> Stage 1. Returns what Stage 2 decides on."""
    users = state.users
    u_count = users.phase.shape[0]
    proto = protocols.get(schedulers.get(config.scheduler).protocol)
    users, n_arrived, n_dropped = _arrivals(users, draws, packed, params, t, config.num_slots)
    chex.assert_shape(users.phase, (u_count,))

    gamma = costs.faded_snr(users.mean_snr, draws.fading)
    feasible = gamma >= costs.db_to_linear(params.snr_threshold_db)
    ready = users.phase == READY
    go_local, cand = proto.split_ready(users, ready, table, draws, config)
    view = schedulers.make_view(users, cand, gamma, feasible, draws, table, params, t)
    return SlotObservation(view=view, go_local=go_local, num_arrived=n_arrived, num_dropped=n_dropped)


def schedule(obs: SlotObservation, config: SimConfig):
    """Stage 2 for this slot through the registered scheduler. Returns (decision [U] int32, bandwidth [U])."""
    return schedulers.get(config.scheduler).decide(obs.view, config)


def step_slot(state: SimState, t, draws: SlotDraws, packed, table: PolicyTable, params: SimParams,
              config: SimConfig) -> SimState:
    """Advance one slot: observe, the registered Stage-2 scheduler, apply."""
    obs = observe_slot(state, t, draws, packed, table, params, config)
    decision, bw = schedule(obs, config)
    return apply_slot(state, obs, decision, bw, t, packed, table, params, config)


def apply_slot(state: SimState, obs: SlotObservation, decision, bw, t, packed, table: PolicyTable,
               params: SimParams, config: SimConfig) -> SimState:
    """Second half of a slot: Stage-2 decisions ([U] int32, bandwidth [U]) -> time accounting -> progress.

    `decision`/`bw` must be legal for `obs.view` (every registered scheduler's are; prada_jax.env projects an
    arbitrary action onto a legal one first)."""
    totals = state.totals
    view = obs.view
    users, gamma = view.users, view.gamma
    go_local, cand, n_arrived, n_dropped = obs.go_local, view.cand, obs.num_arrived, obs.num_dropped
    dt = config.slot_seconds
    in_window = (t >= config.warmup_slots) & (t < config.num_slots)  # measurement window
    proto = protocols.get(schedulers.get(config.scheduler).protocol)
    drafts = proto.local_steps_are_drafts  # a static bool: folded into the masks below
    p, k = users.problem, users.step
    n_cand = jnp.sum(cand).astype(jnp.int32)
    overflow = (n_cand > config.max_candidates) & schedulers.get(config.scheduler).compacts  # static flag

    # Apply decisions.
    slm_tok = packed.slm_step_tokens[p, k]
    llm_tok = packed.llm_step_tokens[p, k]
    local = go_local | (cand & (decision == S2.LOCAL_D))
    immediate = cand & (decision == S2.IMMEDIATE_D)
    queued = cand & (decision == S2.QUEUE_D)
    lat = latency_models.get(config.latency_model)
    ts = lat.local_step(users.context, users.slm_cached, slm_tok, params)
    safe_bw = jnp.where(immediate, bw, 1.0)
    # Requests in service after this slot's admissions (server slots held); a request's server time is fixed at
    # its admission from them (latency_models.ServerLoad; ignored by the "flops" model).
    in_service = (users.phase == UPLOAD) | (users.phase == SERVE) | immediate
    load = latency_models.server_load(in_service, users.context)
    upload_tokens, tl, serve_on_llm = proto.server_request(users, slm_tok, llm_tok, table, params, lat, load)
    tc = costs.upload_seconds(upload_tokens, safe_bw, gamma)
    tc = jnp.where(immediate, tc, 0.0)
    tl = jnp.where(immediate, tl, 0.0)
    ts = jnp.where(local, ts, 0.0)
    newly_queued = queued & (users.phase != QUEUED)
    users = users.replace(
        phase=jnp.where(local, LOCAL, jnp.where(immediate, UPLOAD, jnp.where(queued, QUEUED, users.phase))),
        on_server=jnp.where(local, False, jnp.where(immediate, serve_on_llm, users.on_server)),
        busy_slots=jnp.where(local, slots_for(ts, dt), jnp.where(immediate, slots_for(tc + tl, dt), users.busy_slots)),
        upload_slots=jnp.where(immediate, slots_for(tc, dt), users.upload_slots),
        bandwidth=jnp.where(immediate, bw, users.bandwidth),
        wait_slots=jnp.where(queued, users.wait_slots + 1, jnp.where(local | immediate, 0, users.wait_slots)),
        queue_entry=jnp.where(newly_queued, t, users.queue_entry),
        # The work of a step is booked when the step ends, so a censored task holds only finished work
        # (its delays are then lower bounds of the final ones, like its elapsed time).
        step_proc_s=jnp.where(local | immediate, ts + tl, users.step_proc_s),
        step_comm_s=jnp.where(local | immediate, tc, users.step_comm_s),
        queue_s=users.queue_s + jnp.where(queued, dt, 0.0),
    )

    # Resource accounting of this slot (work admitted in, and slots of, the measurement window).
    occupied = (users.phase == UPLOAD) | (users.phase == SERVE)
    held_bw = jnp.sum(jnp.where(users.phase == UPLOAD, users.bandwidth, 0.0))
    w = jnp.where(in_window, 1.0, 0.0)
    totals = totals.replace(
        arrived=totals.arrived + jnp.where(in_window, n_arrived, 0),
        dropped=totals.dropped + jnp.where(in_window, n_dropped, 0),
        server_work_s=totals.server_work_s + w * jnp.sum(tc + tl),
        server_compute_s=totals.server_compute_s + w * jnp.sum(tl),
        bandwidth_used_bit=totals.bandwidth_used_bit + w * jnp.sum(jnp.where(immediate, bw * tc, 0.0)),
        server_slot_busy_s=totals.server_slot_busy_s + w * jnp.sum(occupied) * dt,
        bandwidth_reserved_bit=totals.bandwidth_reserved_bit + w * held_bw * dt,
        peak_held_bandwidth=jnp.maximum(totals.peak_held_bandwidth, held_bw),
        peak_in_service=jnp.maximum(totals.peak_in_service, jnp.sum(occupied).astype(jnp.int32)),
        candidate_overflow_slots=totals.candidate_overflow_slots + overflow.astype(jnp.int32),
        max_candidates_seen=jnp.maximum(totals.max_candidates_seen, n_cand),
    )

    # Progress by one slot.
    busy = (users.phase == LOCAL) | occupied
    busy_slots = jnp.where(busy, users.busy_slots - 1, users.busy_slots)
    upload_slots = jnp.where(users.phase == UPLOAD, users.upload_slots - 1, users.upload_slots)
    upload_done = (users.phase == UPLOAD) & (upload_slots <= 0)
    phase = jnp.where(upload_done, SERVE, users.phase)
    bandwidth = jnp.where(upload_done, 0.0, users.bandwidth)
    done = busy & (busy_slots <= 0)
    # Draft-verify protocols: a finished local draft becomes a server request; the step ends after the server part.
    draft_done = done & (users.phase == LOCAL) & drafts
    done = done & ~draft_done
    on_llm = users.on_server
    p_ok = jnp.where(on_llm, packed.llm_step_success[p, k], packed.slm_step_success[p, k])
    u_k = step_uniform(users.task_seed, k)
    step_ok = u_k < p_ok
    new_ctx = users.context + jnp.where(on_llm, llm_tok, slm_tok)
    # After an LLM step the SLM keeps its old cache (it ingests the LLM tokens on its next local step);
    # in RSD a rejected draft leaves only the old context valid in the SLM's cache.
    slm_after_llm = jnp.where(drafts, users.context, users.slm_cached)
    on_track = jnp.where(done, users.on_track & step_ok, users.on_track)
    offloaded = users.offloaded + (done & on_llm)
    ended = done | draft_done  # a step (or a draft) ended: book its work
    proc_s = users.proc_s + jnp.where(ended, users.step_proc_s, 0.0)
    comm_s = users.comm_s + jnp.where(ended, users.step_comm_s, 0.0)
    finished = done & (k + 1 >= packed.num_steps[p])
    counted = finished & (users.arrival_slot >= config.warmup_slots)
    sojourn = (t + 1 - users.arrival_slot).astype(jnp.float32) * dt

    def total(x):
        return jnp.sum(jnp.where(counted, x, 0))

    totals = totals.replace(
        completed=totals.completed + jnp.sum(counted),
        correct=totals.correct + jnp.sum(counted & on_track),
        processing_s=totals.processing_s + total(proc_s),
        communication_s=totals.communication_s + total(comm_s),
        queuing_s=totals.queuing_s + total(users.queue_s),
        sojourn_s=totals.sojourn_s + total(sojourn),
        offloaded_steps=totals.offloaded_steps + total(offloaded),
        executed_steps=totals.executed_steps + total(packed.num_steps[p]),
    )
    phase_after = jnp.where(draft_done, QUEUED, jnp.where(done, jnp.where(finished, FREE, READY), phase))
    users = users.replace(
        phase=phase_after,
        busy_slots=busy_slots,
        upload_slots=upload_slots,
        bandwidth=bandwidth,
        on_track=on_track,
        offloaded=offloaded,
        proc_s=proc_s,
        comm_s=comm_s,
        step=jnp.where(done, k + 1, k),
        context=jnp.where(done, new_ctx, users.context),
        slm_cached=jnp.where(done, jnp.where(on_llm, slm_after_llm, new_ctx), users.slm_cached),
        server_cached=jnp.where(done & on_llm, new_ctx, users.server_cached),
    )
    users = users.replace(  # a finished draft enters the queue at the next slot
        queue_entry=jnp.where(draft_done, t + 1, users.queue_entry),
        wait_slots=jnp.where(draft_done, 0, users.wait_slots),
    )
    return SimState(users=users, totals=totals)
