"""Stage 2 schedulers over a compacted candidate set [C].

`prada_stage2` is Theorem 2 with the closed-form bandwidth (eq. 30), the price mu found by bisection in
log10 space and the queueing delay TQ from a self-consistent list-scheduling estimate. `fifo_stage2` and
`random_stage2` are the baselines' schedulers. Decisions: 0 local, 1 queue, 2 immediate. All functions
are pure and shape-static; docs/simulator.md states every modelling choice made here.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from prada_jax import costs

LOCAL_D, QUEUE_D, IMMEDIATE_D = 0, 1, 2
CASE_COMPETITIVE, CASE_FULL, CASE_ABUNDANT = 1, 2, 3
_BETA_FLOOR = 1e-12  # beta = 0 would make eq. 30 give zero bandwidth; floor it only inside eq. 30
_NEG_INF = -jnp.inf


@struct.dataclass
class Stage2Out:
    decision: jnp.ndarray  # int32 [C]
    bandwidth: jnp.ndarray  # float32 [C] (B*_i for admitted, 0 otherwise)
    log10_mu: jnp.ndarray  # float32 ()
    case: jnp.ndarray  # int32 () Theorem 2 case (1, 2, 3)
    tq: jnp.ndarray  # float32 [C] queueing-delay estimate used
    tq_iters: jnp.ndarray  # int32 () iterations of the TQ fixed point


def rank_desc(key, valid):
    """Rank of each entry by descending key (ties: lower index first); invalid entries rank last.

    Pairwise counting, O(C^2) but branch-free: for C ~ 32 it is ~15x faster than argsort on CPU.
    """
    k = jnp.where(valid, key, _NEG_INF)
    i = jnp.arange(k.shape[0])
    beats = (k[None, :] > k[:, None]) | ((k[None, :] == k[:, None]) & (i[None, :] < i[:, None]))
    return jnp.sum(beats, axis=1).astype(jnp.int32)


def server_free_times(inflight_seconds, free_slots, server_capacity, max_servers: int):
    """Free time of each of the max_servers server slots: 0 for the F free ones, the in-flight requests'
    remaining times (ascending) next, +inf for slots >= M. `inflight_seconds` is [U], +inf if not in flight."""
    k = min(max_servers, inflight_seconds.shape[0])  # fewer user slots than server slots: pad with +inf
    smallest = -jax.lax.top_k(-inflight_seconds, k)[0]  # ascending
    smallest = jnp.concatenate([smallest, jnp.full((max_servers - k,), jnp.inf, smallest.dtype)])
    m = jnp.arange(max_servers)
    g = jnp.where(m < free_slots, 0.0, smallest[jnp.clip(m - free_slots, 0, max_servers - 1)])
    return jnp.where(m < server_capacity, g, jnp.inf)


def queue_position_delays(free_times, mean_duration, num_positions: int):
    """List scheduling of num_positions equal jobs (duration = mean_duration) on servers that free up at
    `free_times`: the j-th job starts at the j-th smallest of {f_m + n * duration}. Returns [num_positions]."""
    entries = free_times[:, None] + jnp.arange(num_positions, dtype=jnp.float32)[None, :] * mean_duration
    return -jax.lax.top_k(-entries.reshape(-1), num_positions)[0]


def queue_delay_estimate(valid, feasible, value_gap, server_seconds, context, snr, inflight_seconds, free_slots,
                         server_capacity, total_bw, beta, channel_wait=None, *, max_servers: int, tq_max_iters: int):
    """TQ_i, the queueing delay candidate i would see if it queued (section 4.2.5), and the iterations used.

    List scheduling of the candidates on the server slots, in a self-consistent priority order (docs/simulator.md,
    Stage 2 item 4); channel-infeasible candidates wait at least `channel_wait`. Shared by the paper's rule
    (`prada_stage2`) and the exact solver (`stage2_exact`), so both see the same estimate.
    """
    n_c = valid.shape[0]
    beta = jnp.asarray(beta, jnp.float32)
    tc_ref = costs.upload_seconds(context, total_bw, snr)
    w0 = value_gap - beta * tc_ref
    n_valid = jnp.maximum(jnp.sum(valid), 1)
    mean_dur = jnp.sum(jnp.where(valid, server_seconds + tc_ref, 0.0)) / n_valid
    free_times = server_free_times(inflight_seconds, free_slots, server_capacity, max_servers)
    tq_pos = queue_position_delays(free_times, mean_dur, n_c)
    # Counterfactual queueing delay: the first F positions would run now; if one of them queued instead it
    # would wait for the head-of-queue start time, tq_pos[F].
    pos = jnp.arange(n_c)
    tq_cf = tq_pos[jnp.clip(jnp.maximum(pos, free_slots), 0, n_c - 1)]

    def tq_body(carry):
        rank, prev, it, _, _ = carry
        s0 = jnp.minimum(beta * tq_cf[rank], w0)
        new = rank_desc(s0, valid)
        converged = jnp.all(new == rank)
        cycled = jnp.all(new == prev) | jnp.all(new == rank0)  # cheap cycle checks (period 2 or through start)
        return new, rank, it + 1, converged, cycled

    rank0 = rank_desc(w0, valid)
    rank, _, tq_iters, converged, _ = jax.lax.while_loop(
        lambda c: (~c[3]) & (~c[4]) & (c[2] < tq_max_iters), tq_body,
        (rank0, rank0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False)),
    )
    # A request's priority rises with its own queueing delay, so the order can cycle instead of settling;
    # then the initial order (Remark 2's gain) is used.
    rank = jnp.where(converged, rank, rank0)
    tq = tq_cf[rank]
    if channel_wait is not None:
        tq = jnp.where(feasible, tq, jnp.maximum(tq, channel_wait))

    return tq, tq_iters


def prada_stage2(valid, feasible, value_gap, server_seconds, context, snr, inflight_seconds, num_candidates,
                 free_slots, server_capacity, available_bw, total_bw, beta, channel_wait=None, *, max_servers: int,
                 bisection_iters: int, tq_max_iters: int, mu_log10_range=(-30.0, 10.0),
                 queue_pays_price: bool = True) -> Stage2Out:
    """Theorem 2 over C compacted candidates.

    valid/feasible/value_gap/server_seconds/context/snr: [C] (snr = faded SNR, or the mean SNR for
    candidates whose channel is below the threshold; those cannot be admitted this slot).
    inflight_seconds: [U] remaining seconds of in-flight requests (+inf elsewhere).
    channel_wait: [C] expected seconds until the channel clears gamma_th (step.channel_wait_seconds; +inf when it
    never does); a candidate infeasible now cannot be served before it, so its queueing estimate is at least that.
    num_candidates: |O_t| (may exceed C); free_slots: F = M - |M_t|; available_bw: B - held bandwidth.
    queue_pays_price: a queued request pays the same bandwidth price mu B* when it is admitted later, so
    w_bar = beta TQ (default). False: eq. 32 literally, w_bar = beta TQ - mu B*, under which queueing is free of
    the bandwidth price and, when TQ < TC(B*), beats immediate admission forever (docs/simulator.md).
    """
    n_c = valid.shape[0]
    chex.assert_shape([feasible, value_gap, server_seconds, context, snr], (n_c,))
    f32 = jnp.float32
    beta = jnp.asarray(beta, f32)
    beta_e = jnp.maximum(beta, _BETA_FLOOR)
    elig = valid & feasible
    case_full = free_slots <= 0
    case_abundant = (~case_full) & (num_candidates <= free_slots)
    case_comp = (~case_full) & (~case_abundant)
    case = jnp.where(case_full, CASE_FULL, jnp.where(case_abundant, CASE_ABUNDANT, CASE_COMPETITIVE))

    tc_ref = costs.upload_seconds(context, total_bw, snr)
    w0 = value_gap - beta * tc_ref  # Remark 2's zero-price gain at the reference bandwidth B
    tq, tq_iters = queue_delay_estimate(valid, feasible, value_gap, server_seconds, context, snr, inflight_seconds,
                                        free_slots, server_capacity, total_bw, beta, channel_wait,
                                        max_servers=max_servers, tq_max_iters=tq_max_iters)

    def at_price(log_mu):
        mu = jnp.power(f32(10.0), log_mu)
        bstar = costs.optimal_bandwidth(context, snr, beta_e, mu)
        w = value_gap - costs.priced_upload_cost(context, snr, beta_e, mu)  # eq. 31 at B*
        wbar = beta * tq - (0.0 if queue_pays_price else 1.0) * mu * bstar  # eq. 32 (see queue_pays_price)
        s = jnp.where(elig, jnp.minimum(w, wbar), _NEG_INF)
        rank_s = rank_desc(s, elig)
        # lambda_s = max(0, (F+1)-th largest s); admitted: the top F with s >= lambda_s.
        lam = jnp.maximum(0.0, jnp.max(jnp.where(rank_s == free_slots, s, _NEG_INF)))
        adm_comp = elig & (rank_s < free_slots) & (s >= lam)
        adm_abund = elig & (w >= 0.0)
        admitted = jnp.where(case_abundant, adm_abund, case_comp & adm_comp)
        return admitted, bstar, w, wbar

    def bisect(_, carry):
        # Smallest price whose admitted set fits in B_av. The admitted set and B* of the last feasible
        # price are carried, so the decision is exactly the one that was checked (no re-evaluation at a
        # knife edge where a request's min(w, wbar) crosses 0).
        lo, hi, adm, bw = carry
        mid = 0.5 * (lo + hi)
        admitted, bstar, _, _ = at_price(mid)
        ok = jnp.sum(jnp.where(admitted, bstar, 0.0)) <= available_bw
        return (jnp.where(ok, lo, mid), jnp.where(ok, mid, hi), jnp.where(ok, admitted, adm),
                jnp.where(ok, bstar, bw))

    init = (f32(mu_log10_range[0]), f32(mu_log10_range[1]), jnp.zeros((n_c,), bool), jnp.zeros((n_c,), f32))
    # Stop once an iteration leaves (lo, hi) unchanged: every later one would repeat it exactly (float32
    # midpoints of the log-price bracket stop moving after ~26 halvings), so the result equals the full loop.
    def keep_going(carry):
        return (carry[4] < bisection_iters) & carry[5]

    def bisect_until_fixed(carry):
        lo, hi, adm, bw, i, _ = carry
        new_lo, new_hi, new_adm, new_bw = bisect(i, (lo, hi, adm, bw))
        return new_lo, new_hi, new_adm, new_bw, i + 1, (new_lo != lo) | (new_hi != hi)

    lo, hi, admitted, bstar, _, _ = jax.lax.while_loop(
        keep_going, bisect_until_fixed, init + (jnp.int32(0), jnp.bool_(True)))
    _, _, w, wbar = at_price(hi)
    # Remark 2 (and channel-infeasible candidates). A request whose channel never clears (tq = +inf) goes local,
    # also at beta = 0 (where beta * inf would be NaN).
    queue_full = (w0 >= beta * tq) & jnp.isfinite(tq)
    queue = valid & ~admitted & jnp.where(case_full | ~feasible, queue_full, case_comp & (w >= wbar))
    decision = jnp.where(admitted, IMMEDIATE_D, jnp.where(queue, QUEUE_D, LOCAL_D)).astype(jnp.int32)
    return Stage2Out(decision=decision, bandwidth=jnp.where(admitted, bstar, 0.0).astype(f32), log10_mu=hi,
                     case=case.astype(jnp.int32), tq=tq, tq_iters=tq_iters)


def equal_share(admitted, available_bw):
    """Bandwidth of the baselines' schedulers: B_av split equally among this slot's admissions."""
    n = jnp.maximum(jnp.sum(admitted), 1)
    return jnp.where(admitted, available_bw / n, 0.0).astype(jnp.float32)


def fifo_stage2(valid, feasible, queue_key, free_slots, available_bw, min_bw):
    """FIFO: every candidate wants the server; free slots go to the oldest (smallest queue_key) candidates
    with a feasible channel, if at least `min_bw` bit/s is available; everyone else queues."""
    can = valid & feasible & (available_bw >= min_bw)
    rank = rank_desc(-queue_key.astype(jnp.float32), can)
    admitted = can & (rank < free_slots)
    decision = jnp.where(admitted, IMMEDIATE_D, jnp.where(valid, QUEUE_D, LOCAL_D)).astype(jnp.int32)
    return decision, equal_share(admitted, available_bw)


def random_stage2(valid, feasible, uniforms, free_slots, available_bw, min_bw):
    """Random scheduler: local / queue / immediate uniformly per candidate; an infeasible immediate
    (no free server slot, channel below threshold or no bandwidth) becomes queue. Slots go by user index."""
    choice = jnp.clip(jnp.floor(uniforms * 3.0).astype(jnp.int32), 0, 2)
    want = valid & (choice == IMMEDIATE_D) & feasible & (available_bw >= min_bw)
    admitted = want & (jnp.cumsum(want) - 1 < free_slots)
    decision = jnp.where(admitted, IMMEDIATE_D, jnp.where(valid & (choice != LOCAL_D), QUEUE_D, LOCAL_D))
    return decision.astype(jnp.int32), equal_share(admitted, available_bw)
