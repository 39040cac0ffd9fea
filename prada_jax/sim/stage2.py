"""Stage 2 schedulers over a compacted candidate set [C].

`prada_stage2` is Theorem 2 with the closed-form bandwidth (eq. 30), the price mu = s^2 found by a binary search
over the sorted breakpoints in s (static ceil(log2(C + 2)) steps), a closed form in the final segment and a
static number of segment halvings, and the queueing delay TQ from a list-scheduling estimate whose priority order
is re-ranked a static `tq_iterations` times. `fifo_stage2` and `random_stage2` are the baselines' schedulers.
Decisions: 0 local, 1 queue, 2 immediate. All functions are pure and shape-static; docs/simulator.md states every
modelling choice made here.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import costs

LOCAL_D, QUEUE_D, IMMEDIATE_D = 0, 1, 2
CASE_COMPETITIVE, CASE_FULL, CASE_ABUNDANT = 1, 2, 3
_BETA_FLOOR = 1e-12  # beta = 0 would make eq. 30 give zero bandwidth; floor it only inside eq. 30
_NEG_INF = -jnp.inf
PRICE_ROUNDING = 1e-6  # the closed-form s = P / B_av is raised by this fraction so that float32 rounding keeps it feasible


@struct.dataclass
class Stage2Out:
    decision: jnp.ndarray  # int32 [C]
    bandwidth: jnp.ndarray  # float32 [C] (B*_i for admitted, 0 otherwise)
    log10_mu: jnp.ndarray  # float32 ()
    case: jnp.ndarray  # int32 () Theorem 2 case (1, 2, 3)
    tq: jnp.ndarray  # float32 [C] queueing-delay estimate used
    tq_converged: jnp.ndarray  # bool () the TQ priority order reached a fixed point


def computed_once(x):
    """`x` (float), computed by a kernel of its own: XLA fuses a cheap producer into every consumer, so a key that a
    pairwise kernel reads C times per element would be recomputed for each of the C^2 pairs (with its gathers and
    scores). A reduction is not fused into a consumer that reads each element many times, and the max of `x` and
    -inf is `x` bit for bit (an identity XLA does not simplify away): about 15 % less CPU time per slot."""
    return jnp.max(jnp.stack([x, jnp.full_like(x, -jnp.inf)]), axis=0)


def rank_desc(key, valid):
    """Rank of each entry by descending key (ties: lower index first); invalid entries rank last.

    Pairwise counting, O(C^2) but branch-free: for C ~ 32 it is ~15x faster than argsort on CPU.
    """
    k = computed_once(jnp.where(valid, key, _NEG_INF))
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


def _position_entries(num_servers: int, num_positions: int):
    """(m, n) pairs with (m + 1)(n + 1) <= num_positions, m < num_servers: the only entries f_m + n d that can be
    among the num_positions smallest when f is ascending and d >= 0 (static numpy index arrays)."""
    m, n = np.meshgrid(np.arange(num_servers), np.arange(num_positions), indexing="ij")
    keep = (m + 1) * (n + 1) <= num_positions
    return m[keep].astype(np.int32), n[keep].astype(np.float32)


def queue_position_delays(free_times, mean_duration, num_positions: int):
    """List scheduling of num_positions equal jobs (duration = mean_duration) on servers that free up at
    `free_times`: the j-th job starts at the j-th smallest of {f_m + n * duration}. Returns [num_positions].

    `free_times` must be ascending (server_free_times is) and mean_duration >= 0. Then the entries at or below
    (m, n) (m' <= m, n' <= n) are all <= f_m + n d, so an entry with (m + 1)(n + 1) > num_positions has at least
    num_positions smaller-or-equal entries among those kept: the top_k runs over ~C log C entries instead of
    max_servers x C (103 instead of 512 for 16 x 32), with the same values."""
    m, n = _position_entries(free_times.shape[0], num_positions)
    entries = free_times[m] + n * mean_duration
    return -jax.lax.top_k(-entries, num_positions)[0]


def queue_delay_estimate(valid, feasible, value_gap, server_seconds, context, snr, inflight_seconds, free_slots,
                         server_capacity, total_bw, beta, channel_wait=None, *, max_servers: int, tq_iterations: int):
    """TQ_i, the queueing delay candidate i would see if it queued (section 4.2.5), and whether its order converged.

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
    # Positions 0 .. max(C, max_servers + 1) - 1: every index max(j, F) below is in range (F <= M <= max_servers),
    # so a candidate's estimate does not depend on the cap C as long as its slot does not overflow.
    n_pos = max(n_c, max_servers + 1)
    tq_pos = queue_position_delays(free_times, mean_dur, n_pos)
    # Counterfactual queueing delay: the first F positions would run now; if one of them queued instead it
    # would wait for the head-of-queue start time, tq_pos[F].
    pos = jnp.arange(n_c)
    tq_cf = tq_pos[jnp.clip(jnp.maximum(pos, free_slots), 0, n_pos - 1)]

    def tq_body(_, carry):
        rank, converged = carry
        new = rank_desc(jnp.minimum(beta * tq_cf[rank], w0), valid)
        return new, converged | jnp.all(new == rank)  # a fixed point stays fixed

    rank0 = rank_desc(w0, valid)
    # A static number of re-rankings (no data-dependent loop in the slot body): the order either reaches a fixed
    # point within `tq_iterations` (docs/simulator.md measures how fast) or cycles, and a cycle never converges.
    rank, converged = jax.lax.fori_loop(0, tq_iterations, tq_body, (rank0, jnp.bool_(False)), unroll=True)
    # A request's priority rises with its own queueing delay, so the order can cycle instead of settling;
    # then the initial order (Remark 2's gain) is used.
    rank = jnp.where(converged, rank, rank0)
    tq = tq_cf[rank]
    if channel_wait is not None:
        tq = jnp.where(feasible, tq, jnp.maximum(tq, channel_wait))

    return tq, converged


def _search_steps(n: int) -> int:
    """Halvings that reduce an index range of n + 1 (indices 0..n plus an infeasible sentinel) to one."""
    return max(1, (n + 1).bit_length())


def prada_stage2(valid, feasible, value_gap, server_seconds, context, snr, inflight_seconds, num_candidates,
                 free_slots, server_capacity, available_bw, total_bw, beta, channel_wait=None, *, max_servers: int,
                 tq_iterations: int, segment_halvings: int = 6, queue_pays_price: bool = True) -> Stage2Out:
    """Theorem 2 over C compacted candidates.

    valid/feasible/value_gap/server_seconds/context/snr: [C] (snr = faded SNR, or the mean SNR for
    candidates whose channel is below the threshold; those cannot be admitted this slot).
    inflight_seconds: [U] remaining seconds of in-flight requests (+inf elsewhere).
    channel_wait: [C] expected seconds until the channel clears gamma_th (schedulers.channel_wait_seconds; +inf when it
    never does); a candidate infeasible now cannot be served before it, so its queueing estimate is at least that.
    num_candidates: |O_t| (may exceed C); free_slots: F = M - |M_t|; available_bw: B - held bandwidth.
    queue_pays_price: a queued request pays the same bandwidth price mu B* when it is admitted later, so
    w_bar = beta TQ (default). False: eq. 32 literally, w_bar = beta TQ - mu B*, under which queueing is free of
    the bandwidth price and, when TQ < TC(B*), beats immediate admission forever (docs/simulator.md).

    The price is searched in s = sqrt(mu), where everything is linear or reciprocal (docs/simulator.md, "Price"):
    w_i(s) = dQ_i - 2 b_i s and B*_i = b_i / s with b_i = sqrt(beta c_i). A candidate can be admitted only while
    its score is >= 0, i.e. for s <= t_i (its breakpoint), so the admissible set changes only at the sorted
    breakpoints. A binary search over them (a static ceil(log2(C + 2)) steps) finds the segment; inside it the
    admitted set's demand P / s meets B_av at s = P / B_av (closed form; exact when the set does not change
    inside the segment), and `segment_halvings` log-halvings look for a lower feasible price where the
    competitive top F changes inside the segment.
    """
    n_c = valid.shape[0]
    chex.assert_shape([feasible, value_gap, server_seconds, context, snr], (n_c,))
    f32 = jnp.float32
    beta = jnp.asarray(beta, f32)
    beta_e = jnp.maximum(beta, _BETA_FLOOR)
    available_bw = jnp.asarray(available_bw, f32)
    elig = valid & feasible
    case_full = free_slots <= 0
    case_abundant = (~case_full) & (num_candidates <= free_slots)
    case_comp = (~case_full) & (~case_abundant)
    case = jnp.where(case_full, CASE_FULL, jnp.where(case_abundant, CASE_ABUNDANT, CASE_COMPETITIVE))

    tc_ref = costs.upload_seconds(context, total_bw, snr)
    w0 = value_gap - beta * tc_ref  # Remark 2's zero-price gain at the reference bandwidth B
    tq, tq_converged = queue_delay_estimate(valid, feasible, value_gap, server_seconds, context, snr, inflight_seconds,
                                        free_slots, server_capacity, total_bw, beta, channel_wait,
                                        max_servers=max_servers, tq_iterations=tq_iterations)

    # Eq. 30 at mu = 1 gives b_i, so B*_i = b_i / s; eq. 31's priced cost is 2 b_i s (costs.priced_upload_cost).
    b = costs.optimal_bandwidth(context, snr, beta_e, 1.0)
    q = beta * tq  # w_bar at zero price
    wbar_slope = 0.0 if queue_pays_price else 1.0  # eq. 32 literally: w_bar = q - mu B* = q - b s

    def scores(s):
        w = value_gap - 2.0 * b * s  # eq. 31 at B*: dQ - beta TC(B*) - mu B*
        wbar = q - wbar_slope * b * s
        return w, wbar

    # Breakpoints: the largest s at which each candidate's score is still >= 0 (0: never admissible).
    uses_wbar = case_comp & (not queue_pays_price)
    safe_b = jnp.where(b > 0.0, b, 1.0)
    t_w = value_gap / (2.0 * safe_b)
    t = jnp.where(uses_wbar, jnp.minimum(t_w, q / safe_b), t_w)
    has_t = elig & (b > 0.0) & (t > 0.0)
    t = jnp.where(has_t, t, 0.0)
    n_t = jnp.sum(has_t).astype(jnp.int32)
    t_rank = rank_desc(t, has_t)  # 0 = largest breakpoint (ties: lower index first)
    t_sorted = jnp.zeros((n_c,), f32).at[t_rank].set(t)  # descending; zeros after the n_t real ones

    def admitted_at(s, allowed):
        """Theorem 2's admitted set at price s^2 when `allowed` are the candidates with score >= 0 there, and
        its summed b (= demand * s). Abundant: all of them; competitive: the top F by min(w, w_bar)."""
        w, wbar = scores(s)
        rank_s = rank_desc(jnp.minimum(w, wbar), allowed)
        adm = jnp.where(case_abundant, allowed, case_comp & allowed & (rank_s < free_slots))
        return adm, jnp.sum(jnp.where(adm, b, 0.0))

    def fits(demand_b, s):
        return demand_b <= available_bw * s  # sum_i b_i / s <= B_av

    # Binary search for j*: the last breakpoint (1-based, descending) at which the admitted set fits. At the
    # j-th breakpoint exactly the first j candidates in breakpoint order are admissible (the rank, not the sign
    # of a rounded score, decides). j = 0 (s above every breakpoint) always fits; n_t + 1 is a sentinel.
    # The admitted set at lo is carried along: after the search it is the set at s_right (empty when j* = 0),
    # which fits; carrying it saves an evaluation and gives the same values as evaluating it again.
    def search(_, carry):
        lo, hi, adm_lo, demand_lo = carry
        mid = (lo + hi) // 2
        s_mid = t_sorted[jnp.clip(mid - 1, 0, n_c - 1)]
        adm_mid, demand = admitted_at(s_mid, has_t & (t_rank < mid))
        ok = fits(demand, s_mid) | (mid == lo)
        take = ok & (mid != lo)
        return (jnp.where(ok, mid, lo), jnp.where(ok, hi, mid), jnp.where(take, adm_mid, adm_lo),
                jnp.where(take, demand, demand_lo))

    init = (jnp.int32(0), n_t + 1, jnp.zeros((n_c,), bool), jnp.float32(0.0))
    j_star, _, adm, demand = jax.lax.fori_loop(0, _search_steps(n_c), search, init, unroll=True)
    s_right = jnp.where(j_star > 0, t_sorted[jnp.clip(j_star - 1, 0, n_c - 1)], jnp.inf)
    s_left = jnp.where(j_star < n_t, t_sorted[jnp.clip(j_star, 0, n_c - 1)], 0.0)
    allowed = has_t & (t_rank < j_star)  # the admissible candidates on (s_left, s_right]
    s_best = s_right

    def closed_form(s_best, adm, demand):
        # A fixed set's demand P / s reaches B_av at s = P / B_av; the segment's left end bounds it below.
        s_try = jnp.maximum(demand / jnp.maximum(available_bw, 1e-30) * (1.0 + PRICE_ROUNDING), s_left)
        adm_try, demand_try = admitted_at(jnp.where(s_try > 0.0, s_try, 1.0), allowed)
        better = (s_try < s_best) & fits(demand_try, s_try)
        return (jnp.where(better, s_try, s_best), jnp.where(better, adm_try, adm),
                jnp.where(better, demand_try, demand))

    # Exact when the admitted set is the same on the whole segment (always in the abundant case, and in the
    # competitive case when at most F candidates are admissible).
    s_best, adm, demand = closed_form(s_best, adm, demand)
    # Competitive case: the top F can change inside the segment (two scores cross), so the closed form can miss
    # a feasible stretch below s_best. Halve the log-segment a static number of times, keeping the last price
    # that fits, then solve the final set in closed form again.
    min_b = jnp.min(jnp.where(allowed, b, jnp.inf))  # at least one admitted request needs s >= b_i / B_av
    seg_lo = jnp.maximum(s_left, jnp.where(jnp.isfinite(min_b), min_b / jnp.maximum(available_bw, 1e-30), 0.0))

    def halve(_, carry):
        lo, s_best, adm, demand = carry
        mid = jnp.sqrt(jnp.maximum(lo, 1e-30) * s_best)
        adm_mid, demand_mid = admitted_at(mid, allowed)
        ok = fits(demand_mid, mid) & (mid < s_best) & jnp.isfinite(s_best)
        return (jnp.where(ok, lo, mid), jnp.where(ok, mid, s_best), jnp.where(ok, adm_mid, adm),
                jnp.where(ok, demand_mid, demand))

    _, s_best, adm, demand = jax.lax.fori_loop(0, segment_halvings, halve, (seg_lo, s_best, adm, demand), unroll=True)
    s_best, adm, demand = closed_form(s_best, adm, demand)
    s_best = jnp.where(jnp.isfinite(s_best), s_best, 0.0)  # nobody admissible: price 0
    bstar = jnp.where(adm, b / jnp.where(adm, s_best, 1.0), 0.0)
    w, wbar = scores(s_best)
    # Remark 2 (and channel-infeasible candidates). A request whose channel never clears (tq = +inf) goes local,
    # also at beta = 0 (where beta * inf would be NaN).
    queue_full = (w0 >= beta * tq) & jnp.isfinite(tq)
    queue = valid & ~adm & jnp.where(case_full | ~feasible, queue_full, case_comp & (w >= wbar))
    decision = jnp.where(adm, IMMEDIATE_D, jnp.where(queue, QUEUE_D, LOCAL_D)).astype(jnp.int32)
    log10_mu = 2.0 * jnp.log10(s_best)  # -inf when nothing needs a price
    return Stage2Out(decision=decision, bandwidth=bstar.astype(f32), log10_mu=log10_mu.astype(f32),
                     case=case.astype(jnp.int32), tq=tq, tq_converged=tq_converged)


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
