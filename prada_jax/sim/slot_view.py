"""What a Stage-2 scheduler sees in a slot (`SlotView`, built by `make_view`) and the pieces the registered
schedulers share: the C oldest candidates with the inputs of section 4.2 (`candidates`), Theorem 2 over them
(`theorem2`) and `scatter` of per-candidate decisions back to the users.

Below prada_jax/sim/schedulers.py, which registers the schedulers by name: a scheduler defined in its own module
(the learned one, prada_jax/sim/learned_scheduler.py) builds on these pieces and is registered there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from prada_jax import costs
from prada_jax.sim import stage2 as S2
from prada_jax.sim.draws import SlotDraws
from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.policies import PolicyTable
from prada_jax.sim.state import QUEUED, SERVE, UPLOAD, Users


@struct.dataclass
class SlotView:
    """What Stage 2 sees in slot t: the users, this slot's candidates and channel, and the free resources."""

    users: Users
    cand: jnp.ndarray  # bool [U] candidates (nominated READY users and QUEUED users)
    gamma: jnp.ndarray  # float32 [U] faded SNR of this slot
    feasible: jnp.ndarray  # bool [U] gamma >= gamma_th
    draws: SlotDraws
    table: PolicyTable
    params: SimParams
    t: jnp.ndarray  # int32 slot index
    inflight: jnp.ndarray  # bool [U] UPLOAD or SERVE
    free_slots: jnp.ndarray  # int32 F = M - in flight
    available_bw: jnp.ndarray  # float32 B minus the bandwidth held by uploads in progress


def make_view(users: Users, cand, gamma, feasible, draws, table, params: SimParams, t) -> SlotView:
    inflight = (users.phase == UPLOAD) | (users.phase == SERVE)
    held = jnp.sum(jnp.where(users.phase == UPLOAD, users.bandwidth, 0.0))
    return SlotView(users=users, cand=cand, gamma=gamma, feasible=feasible, draws=draws, table=table, params=params,
                    t=jnp.asarray(t, jnp.int32), inflight=inflight,
                    free_slots=jnp.maximum(params.server_capacity - jnp.sum(inflight), 0),
                    available_bw=jnp.maximum(params.bandwidth_bps - held, 0.0))


def channel_wait_seconds(mean_snr, params: SimParams, slot_seconds: float):
    """Expected wait for a slot whose faded SNR clears gamma_th: slot length / P(feasible), with
    P(feasible) = exp(-gamma_th / mean SNR) under Rayleigh block fading (+inf when it is 0)."""
    p_feasible = jnp.exp(-costs.db_to_linear(params.snr_threshold_db) / jnp.maximum(mean_snr, 1e-30))
    return jnp.where(p_feasible > 0, slot_seconds / jnp.maximum(p_feasible, 1e-30), jnp.inf)


def compact(cand, wait_slots, num: int, max_wait: int):
    """Indices of at most `num` candidates, oldest (longest waiting) first, ties by lower user index.

    The integer scores are ranked as float32 when that is exact (< 2**24; `max_wait` bounds wait_slots): XLA:CPU
    lowers an int32 top_k to a full sort but a float32 one to its fast TopK kernel; the indices are identical.
    """
    u = cand.shape[0]
    score = jnp.where(cand, wait_slots * u + (u - 1 - jnp.arange(u, dtype=jnp.int32)), -1)
    if (max_wait + 1) * u < 2**24:
        score = score.astype(jnp.float32)
    _, idx = jax.lax.top_k(score, num)
    return idx, cand[idx]


@struct.dataclass
class Candidates:
    """The C candidates a compacted scheduler considers (oldest first), with the inputs of section 4.2."""

    idx: jnp.ndarray  # int32 [C] user index
    valid: jnp.ndarray  # bool [C]
    feasible: jnp.ndarray  # bool [C]
    value_gap: jnp.ndarray  # float32 [C] eq. 33
    server_seconds: jnp.ndarray  # float32 [C] D_psi
    context: jnp.ndarray  # int32 [C] tokens to upload
    snr: jnp.ndarray  # float32 [C] faded SNR, or the mean SNR where the channel is below the threshold
    channel_wait: jnp.ndarray  # float32 [C] expected wait for a usable channel


def candidates(view: SlotView, config: SimConfig) -> Candidates:
    u = view.users
    idx, valid = compact(view.cand, u.wait_slots, config.max_candidates, config.num_slots + config.drain_slots)
    p, k = u.problem[idx], u.step[idx]
    return Candidates(
        idx=idx, valid=valid, feasible=view.feasible[idx],
        value_gap=costs.value_gap(view.table.advantage[p, k], view.table.nominate_prob[p, k]),
        server_seconds=view.table.server_seconds[p, k], context=u.context[idx],
        snr=jnp.where(view.feasible[idx], view.gamma[idx], u.mean_snr[idx]),
        channel_wait=channel_wait_seconds(u.mean_snr[idx], view.params, config.slot_seconds),
    )


def inflight_seconds(view: SlotView, config: SimConfig):
    """[U] remaining seconds of in-flight requests (when their server slot is released), +inf elsewhere."""
    return jnp.where(view.inflight, view.users.busy_slots * config.slot_seconds, jnp.inf)


def scatter(view: SlotView, c: Candidates, decision_c, bandwidth_c):
    """[C] decisions back to [U]. Candidates beyond the C considered: queued requests keep waiting; new nominees,
    which Stage 2 could not consider, run locally (a nomination is no commitment, section 4.1.1)."""
    u_count = view.cand.shape[0]
    decision = jnp.where(view.users.phase == QUEUED, S2.QUEUE_D, S2.LOCAL_D).astype(jnp.int32)
    decision = decision.at[c.idx].set(jnp.where(c.valid, decision_c, decision[c.idx]))
    bandwidth = jnp.zeros((u_count,), jnp.float32).at[c.idx].set(jnp.where(c.valid, bandwidth_c, 0.0))
    return decision, bandwidth


def theorem2(view: SlotView, config: SimConfig, c: Candidates) -> S2.Stage2Out:
    """Theorem 2's per-candidate output ([C] decisions, eq.-30 bandwidth, price) over the candidates `c`."""
    return S2.prada_stage2(
        valid=c.valid, feasible=c.feasible, value_gap=c.value_gap, server_seconds=c.server_seconds,
        context=c.context, snr=c.snr, inflight_seconds=inflight_seconds(view, config), channel_wait=c.channel_wait,
        num_candidates=jnp.sum(view.cand), free_slots=view.free_slots, server_capacity=view.params.server_capacity,
        available_bw=view.available_bw, total_bw=view.params.bandwidth_bps, beta=view.params.beta,
        max_servers=config.max_servers, tq_iterations=config.tq_iterations, segment_halvings=config.price_segment_halvings,
        queue_pays_price=config.queue_pays_price,
    )
