"""Per-slot Stage-2 problem (28) solved with the optimal bandwidth split and a certified upper bound.

For a fixed admitted set A the optimal split is B_i = B_av sqrt(c_i) / sum_A sqrt(c_j), so problem (28) becomes
    max_{A subset eligible, |A| <= F}  f(A) = sum_A d_i - k (sum_A s_i)^2      (+ sum_valid max(0, q_i)),
with d_i = g_i - max(0, q_i), s_i = sqrt(c_i), c_i = 32 L_i / log2(1 + gamma_i), k = beta / B_av.
That problem contains subset sum (docs/exact_stage2.md), so no polynomial method is exact for every input.
`exact_stage2` returns the best of O(C) structured candidate sets improved by add/drop/swap local search, plus
an upper bound (tangent/Lagrangian bounds, strengthened with the binary diagonal) that certifies the result
(`optimal`) whenever it closes the gap.
Decisions: 0 local, 1 queue, 2 immediate (as in stage2.py). Pure, shape-static, jit- and vmap-friendly.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from prada_jax import costs
from prada_jax.sim.stage2 import IMMEDIATE_D, LOCAL_D, QUEUE_D, rank_desc

# Bandwidths are scaled by this factor so that float32 rounding never lets sum_A B_i exceed B_av.
BUDGET_SAFETY = 1.0 - 2.0 ** -20
# Relative tolerance under which the primal value and the upper bound count as equal (float32 arithmetic).
CERTIFY_RTOL = 1e-5
_NEG_INF = -jnp.inf
# Weights theta of the diagonal term in the strengthened bounds (see mixed_bound); 0 is the golden-section one.
MIXED_THETAS = (0.5, 1.0)


@struct.dataclass
class ExactStage2Out:
    decision: jnp.ndarray  # int32 [C]: 0 local, 1 queue, 2 immediate
    bandwidth: jnp.ndarray  # float32 [C]: B_av sqrt(c_i) / sum_A sqrt(c_j) for admitted, 0 otherwise
    objective: jnp.ndarray  # float32 (): f(A) + sum_valid max(0, q_i), relative to all-local
    upper_bound: jnp.ndarray  # float32 (): certified bound on the optimum of the same objective
    optimal: jnp.ndarray  # bool (): objective meets upper_bound within CERTIFY_RTOL (proof of optimality)


def set_value(mask, gain, root_cost, k):
    """f(A) = sum_A d_i - k (sum_A s_i)^2 for masks [..., C]."""
    total_gain = jnp.sum(jnp.where(mask, gain, 0.0), axis=-1)
    total_root = jnp.sum(jnp.where(mask, root_cost, 0.0), axis=-1)
    return total_gain - k * total_root * total_root


def lagrangian_set(lam, gain, root_cost, k, admissible, free_slots):
    """Maximiser of the linearised problem at tangent point lam: top-F positive of d_i - 2 k lam s_i.
    Returns (mask [C], U(lam) = its linear value + k lam^2, an upper bound on max f)."""
    score = jnp.where(admissible, gain - 2.0 * k * lam * root_cost, _NEG_INF)
    rank = rank_desc(score, admissible)
    mask = admissible & (rank < free_slots) & (score > 0.0)
    return mask, jnp.sum(jnp.where(mask, score, 0.0)) + k * lam * lam


def mixed_bound(theta, lam, gain, root_cost, k, admissible, free_slots):
    """U(theta, lam) >= max f for theta in [0, 1], lam >= 0: for binary x, S^2 >= sum x_i s_i^2 (cross terms
    are >= 0) and S^2 >= 2 lam S - lam^2 (tangent), so S^2 >= theta sum x_i s_i^2 + (1 - theta)(2 lam S - lam^2).
    theta = 0 is the Lagrangian bound; theta = 1 is exact for a single candidate."""
    score = jnp.where(admissible, gain - theta * k * root_cost * root_cost
                      - (1.0 - theta) * 2.0 * k * lam * root_cost, _NEG_INF)
    rank = rank_desc(score, admissible)
    take = admissible & (rank < free_slots) & (score > 0.0)
    return jnp.sum(jnp.where(take, score, 0.0)) + (1.0 - theta) * k * lam * lam


def _local_search(mask, gain, root_cost, k, admissible, free_slots, rounds: int):
    """`rounds` best-improvement steps over all single add / drop / swap moves that keep |A| <= F."""
    n_c = gain.shape[0]
    eye = jnp.eye(n_c, dtype=bool)

    def step(_, mask):
        total_gain = jnp.sum(jnp.where(mask, gain, 0.0))
        total_root = jnp.sum(jnp.where(mask, root_cost, 0.0))
        current = total_gain - k * total_root * total_root
        size = jnp.sum(mask)
        outside = admissible & ~mask
        add_gain, add_root = total_gain + gain, total_root + root_cost
        add_val = jnp.where(outside & (size < free_slots), add_gain - k * add_root * add_root, _NEG_INF)
        drop_gain, drop_root = total_gain - gain, total_root - root_cost
        drop_val = jnp.where(mask, drop_gain - k * drop_root * drop_root, _NEG_INF)
        # swap[i, j]: i leaves, j enters.
        sw_gain = total_gain - gain[:, None] + gain[None, :]
        sw_root = total_root - root_cost[:, None] + root_cost[None, :]
        sw_val = jnp.where(mask[:, None] & outside[None, :], sw_gain - k * sw_root * sw_root, _NEG_INF)
        best_add, best_drop, best_sw = jnp.max(add_val), jnp.max(drop_val), jnp.max(sw_val)
        best = jnp.maximum(best_add, jnp.maximum(best_drop, best_sw))
        improves = best > current + CERTIFY_RTOL * 0.1 * jnp.maximum(jnp.abs(current), 1e-30)
        flat = jnp.argmax(sw_val.reshape(-1))
        sw_out, sw_in = flat // n_c, flat % n_c
        moved = jnp.where(
            best_add >= best, mask | eye[jnp.argmax(add_val)],
            jnp.where(best_drop >= best, mask & ~eye[jnp.argmax(drop_val)],
                      (mask & ~eye[sw_out]) | eye[sw_in]))
        return jnp.where(improves, moved, mask)

    return jax.lax.fori_loop(0, rounds, step, mask)


def exact_stage2(valid, feasible, value_gap, context, snr, tq, free_slots, available_bw, total_bw, beta, *,
                 max_servers: int, local_search_rounds: int = 4, bound_iters: int = 20) -> ExactStage2Out:
    """Stage 2 over C compacted candidates with the optimal bandwidth split (B_i proportional to sqrt c_i).

    valid/feasible/value_gap/context/snr/tq: [C]; tq is the queueing-delay estimate (input, as in prada_stage2).
    free_slots: F (0 <= F <= max_servers); available_bw: B_av; total_bw: the reference bandwidth B of the queue
    option's nominal upload (Remark 2); beta >= 0. Candidates outside `valid` are padding.
    """
    n_c = valid.shape[0]
    chex.assert_shape([feasible, value_gap, context, snr, tq], (n_c,))
    f32 = jnp.float32
    beta = jnp.asarray(beta, f32)
    available_bw = jnp.asarray(available_bw, f32)
    free_slots = jnp.clip(jnp.asarray(free_slots, jnp.int32), 0, max_servers)
    upload_cost = costs.upload_bits(context) / costs.spectral_efficiency(jnp.asarray(snr, f32))  # c_i
    root_cost = jnp.sqrt(upload_cost)
    queue_value = jnp.asarray(value_gap, f32) - beta * jnp.asarray(tq, f32) - beta * upload_cost / total_bw
    queue_floor = jnp.where(valid & (queue_value > 0.0), queue_value, 0.0)  # max(0, q_i) over valid
    gain = jnp.where(valid, value_gap - queue_floor, 0.0)  # d_i: gain of immediate over the best fallback
    admissible = valid & feasible & jnp.isfinite(root_cost) & (available_bw > 0.0) & (free_slots > 0)
    k = jnp.where(available_bw > 0.0, beta / jnp.maximum(available_bw, jnp.finfo(f32).tiny), 0.0)
    baseline = jnp.sum(queue_floor)

    # Candidate sets: prefixes of the ratio order d_i / s_i (exact Lagrangian family when F >= |admissible|),
    # and the Lagrangian maximisers at the tangent points lam = S(prefix_m).
    ratio_ok = admissible & (gain > 0.0)
    ratio_rank = rank_desc(gain / root_cost, ratio_ok)
    sizes = jnp.arange(n_c + 1)
    prefixes = ratio_ok[None, :] & (ratio_rank[None, :] < jnp.minimum(sizes, free_slots)[:, None])
    prefix_roots = jnp.sum(jnp.where(prefixes, root_cost, 0.0), axis=1)
    lag_masks, lag_bounds = jax.vmap(
        lambda lam: lagrangian_set(lam, gain, root_cost, k, admissible, free_slots))(prefix_roots)
    candidates = jnp.concatenate([prefixes, lag_masks], axis=0)
    start = candidates[jnp.argmax(set_value(candidates, gain, root_cost, k))]
    admitted = _local_search(start, gain, root_cost, k, admissible, free_slots, local_search_rounds)
    value = set_value(admitted, gain, root_cost, k)

    # Upper bound: U(lam) is convex in lam and U(lam) >= max f for every lam >= 0; any evaluation is valid.
    # Golden-section search on [0, sum of admissible s_i] sharpens the minimum found at the tangent points.
    def bound_at(lam):
        return lagrangian_set(lam, gain, root_cost, k, admissible, free_slots)[1]

    inv_phi = f32(0.6180339887)
    hi0 = jnp.sum(jnp.where(admissible, root_cost, 0.0))

    def golden(_, carry):
        lo, hi, best = carry
        a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        ua, ub = bound_at(a), bound_at(b)
        best = jnp.minimum(best, jnp.minimum(ua, ub))
        return jnp.where(ua <= ub, lo, a), jnp.where(ua <= ub, b, hi), best

    _, _, bound = jax.lax.fori_loop(0, bound_iters, golden, (f32(0.0), hi0, jnp.minimum(jnp.min(lag_bounds),
                                                                                        bound_at(hi0))))
    # Diagonal-strengthened bounds (theta > 0) at the tangent points: exact on lone candidates.
    for theta in MIXED_THETAS:
        bound = jnp.minimum(bound, jnp.min(jax.vmap(
            lambda lam, theta=theta: mixed_bound(theta, lam, gain, root_cost, k, admissible, free_slots))(prefix_roots)))
    bound = jnp.maximum(bound, value)  # float32 rounding must not put the bound below an achieved value
    optimal = bound - value <= CERTIFY_RTOL * jnp.maximum(jnp.abs(value) + baseline, 1e-30)

    total_root = jnp.sum(jnp.where(admitted, root_cost, 0.0))
    bandwidth = jnp.where(admitted, available_bw * root_cost / jnp.maximum(total_root, jnp.finfo(f32).tiny)
                          * BUDGET_SAFETY, 0.0)
    decision = jnp.where(admitted, IMMEDIATE_D, jnp.where(valid & (queue_value > 0.0), QUEUE_D, LOCAL_D))
    return ExactStage2Out(decision=decision.astype(jnp.int32), bandwidth=bandwidth.astype(f32),
                          objective=(value + baseline).astype(f32), upper_bound=(bound + baseline).astype(f32),
                          optimal=optimal)
