"""Simulator state: per-user-slot arrays [U] and per-episode accumulators (a `flax.struct` pytree)."""

from __future__ import annotations

import chex
import jax.numpy as jnp
from flax import struct

# User-slot phases.
FREE, READY, LOCAL, UPLOAD, SERVE, QUEUED = 0, 1, 2, 3, 4, 5
PHASE_NAMES = ("FREE", "READY", "LOCAL", "UPLOAD", "SERVE", "QUEUED")


@struct.dataclass
class Users:
    """One row per user slot. Times in seconds, counters in slots, lengths in tokens."""

    phase: jnp.ndarray  # int32 [U]
    problem: jnp.ndarray  # int32 [U]
    step: jnp.ndarray  # int32 [U] current step k
    context: jnp.ndarray  # int32 [U] tokens before step k
    slm_cached: jnp.ndarray  # int32 [U] tokens in the SLM's KV cache
    server_cached: jnp.ndarray  # int32 [U] tokens the server has cached (prefix mode)
    on_track: jnp.ndarray  # bool [U]
    on_server: jnp.ndarray  # bool [U] current step runs on the server
    busy_slots: jnp.ndarray  # int32 [U] slots left in LOCAL / (UPLOAD+SERVE)
    upload_slots: jnp.ndarray  # int32 [U] slots left of the upload (bandwidth held while > 0)
    bandwidth: jnp.ndarray  # float32 [U] bit/s held during UPLOAD
    wait_slots: jnp.ndarray  # int32 [U] tau in slots (time spent QUEUED for the current step)
    queue_entry: jnp.ndarray  # int32 [U] slot at which the current request entered the queue (valid while QUEUED)
    proc_s: jnp.ndarray  # float32 [U] processing seconds of the task's finished steps
    comm_s: jnp.ndarray  # float32 [U] communication seconds of the task's finished steps
    step_proc_s: jnp.ndarray  # float32 [U] processing seconds of the step in progress (added when it ends)
    step_comm_s: jnp.ndarray  # float32 [U] communication seconds of the step in progress
    queue_s: jnp.ndarray  # float32 [U]
    offloaded: jnp.ndarray  # int32 [U] steps finished on the server
    arrival_slot: jnp.ndarray  # int32 [U]
    task_seed: jnp.ndarray  # uint32 [U] seed of the task's per-step quality draws (draws.step_uniform)
    mean_snr: jnp.ndarray  # float32 [U] linear mean SNR


@struct.dataclass
class Totals:
    """Per-episode accumulators. Task counts and per-task sums cover *counted* tasks (arrived in
    [warmup, horizon)); they are added when a task finishes (unfinished ones are added by `metrics.finalize`).
    Resource sums cover work admitted, or slots, in the measurement window [warmup, horizon)."""

    arrived: jnp.ndarray  # int32 counted arrivals (admitted + dropped)
    dropped: jnp.ndarray  # int32 counted arrivals that found no free user slot
    completed: jnp.ndarray  # int32
    correct: jnp.ndarray  # int32
    processing_s: jnp.ndarray  # float32 sums over completed tasks (exact durations of the work)
    communication_s: jnp.ndarray
    queuing_s: jnp.ndarray  # whole slots spent QUEUED x slot length
    sojourn_s: jnp.ndarray  # wall-clock slots in the system x slot length
    offloaded_steps: jnp.ndarray  # int32 steps finished on the server LLM
    executed_steps: jnp.ndarray  # int32 steps finished
    server_work_s: jnp.ndarray  # float32: sum of upload + LLM compute seconds of admissions in the window
    server_compute_s: jnp.ndarray  # float32: sum of LLM compute seconds of admissions in the window
    bandwidth_used_bit: jnp.ndarray  # float32: sum of B_i x TC_i of uploads admitted in the window
    server_slot_busy_s: jnp.ndarray  # float32: sum over window slots of reserved server slots x slot length
    bandwidth_reserved_bit: jnp.ndarray  # float32: sum over window slots of held bandwidth x slot length
    # Largest resource use seen right after any slot's admissions (every slot, not only the window): the invariant
    # checks read these, because a one-slot upload has already returned its bandwidth when the slot ends.
    peak_held_bandwidth: jnp.ndarray  # float32: bit/s held by uploads
    peak_in_service: jnp.ndarray  # int32: requests holding a server slot (uploading or served)
    # Stage-2 candidates (every slot): slots with more than the cap C (their youngest were left out of the
    # decision; 0 for schedulers that do not compact) and the largest count seen.
    candidate_overflow_slots: jnp.ndarray  # int32
    max_candidates_seen: jnp.ndarray  # int32


@struct.dataclass
class SimState:
    users: Users
    totals: Totals


def init_state(num_users: int, max_steps: int) -> SimState:
    """All user slots FREE, all accumulators zero."""
    zi = jnp.zeros((num_users,), jnp.int32)
    zf = jnp.zeros((num_users,), jnp.float32)
    users = Users(
        phase=zi, problem=zi, step=zi, context=zi, slm_cached=zi, server_cached=zi,
        on_track=jnp.zeros((num_users,), bool), on_server=jnp.zeros((num_users,), bool),
        busy_slots=zi, upload_slots=zi, bandwidth=zf, wait_slots=zi, queue_entry=zi,
        proc_s=zf, comm_s=zf, step_proc_s=zf, step_comm_s=zf, queue_s=zf, offloaded=zi, arrival_slot=zi,
        task_seed=jnp.zeros((num_users,), jnp.uint32), mean_snr=zf,
    )
    i0, f0 = jnp.int32(0), jnp.float32(0.0)
    totals = Totals(
        arrived=i0, dropped=i0, completed=i0, correct=i0, processing_s=f0, communication_s=f0,
        queuing_s=f0, sojourn_s=f0, offloaded_steps=i0, executed_steps=i0, server_work_s=f0,
        server_compute_s=f0, bandwidth_used_bit=f0, server_slot_busy_s=f0, bandwidth_reserved_bit=f0,
        peak_held_bandwidth=f0, peak_in_service=i0, candidate_overflow_slots=i0, max_candidates_seen=i0,
    )
    state = SimState(users=users, totals=totals)
    chex.assert_shape(state.users.task_seed, (num_users,))
    return state
