"""Float64 NumPy twin of prada_jax.sim.stage2_exact and a brute-force enumerator of problem (28).

Own code (plain loops over Python lists); shares no function with the JAX module. Objectives are relative to
all-local and include sum_valid max(0, q_i), the same convention as ExactStage2Out.objective.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

BITS_PER_TOKEN = 32.0


def slot_data(valid, feasible, value_gap, context, snr, tq, free_slots, available_bw, total_bw, beta):
    """Per-candidate gain d_i, root cost s_i, queue value q_i, admissible mask, k, F and the baseline."""
    n = len(valid)
    c = [BITS_PER_TOKEN * float(context[i]) / math.log2(1.0 + float(snr[i])) if float(snr[i]) > 0 else math.inf
         for i in range(n)]
    q = [float(value_gap[i]) - beta * float(tq[i]) - beta * c[i] / total_bw for i in range(n)]
    floor = [max(0.0, q[i]) if valid[i] else 0.0 for i in range(n)]
    d = [float(value_gap[i]) - floor[i] if valid[i] else 0.0 for i in range(n)]
    s = [math.sqrt(ci) for ci in c]
    ok = [bool(valid[i]) and bool(feasible[i]) and math.isfinite(s[i]) and available_bw > 0 and free_slots > 0
          for i in range(n)]
    k = beta / available_bw if available_bw > 0 else 0.0
    return dict(d=d, s=s, q=q, ok=ok, k=k, F=int(free_slots), base=sum(floor), valid=list(map(bool, valid)))


def value_of(admitted, data):
    """f(A) + baseline for an admitted index collection."""
    gain = sum(data["d"][i] for i in admitted)
    root = sum(data["s"][i] for i in admitted)
    return gain - data["k"] * root * root + data["base"]


def objective_of_decision(decision, bandwidth, data, value_gap, beta, tq, total_bw):
    """Objective of an arbitrary decision/bandwidth vector (any scheduler), relative to all-local:
    immediate i: g_i - beta c_i / B_i; queue: q_i; local: 0. Infeasible decisions return -inf."""
    total = 0.0
    for i, a in enumerate(decision):
        if not data["valid"][i] or a == 0:
            continue
        if a == 1:
            total += data["q"][i]
        elif bandwidth[i] > 0 and data["ok"][i]:
            total += float(value_gap[i]) - beta * data["s"][i] ** 2 / float(bandwidth[i])
        else:
            return -math.inf
    return total


def brute_force(data):
    """Exhaustive optimum over all admissible subsets with |A| <= F: (value, best index tuple)."""
    idx = [i for i, ok in enumerate(data["ok"]) if ok]
    best, best_set = value_of((), data), ()
    for r in range(1, min(data["F"], len(idx)) + 1):
        for subset in itertools.combinations(idx, r):
            v = value_of(subset, data)
            if v > best:
                best, best_set = v, subset
    return best, best_set


def lagrangian_bound(lam, data):
    """U(lam) = sum of the top-F positive (d_i - 2 k lam s_i) + k lam^2 + baseline, and that set."""
    scores = sorted(((data["d"][i] - 2.0 * data["k"] * lam * data["s"][i], i)
                     for i, ok in enumerate(data["ok"]) if ok), key=lambda t: (-t[0], t[1]))
    chosen = [i for sc, i in scores[: data["F"]] if sc > 0]
    return sum(sc for sc, _ in scores[: data["F"]] if sc > 0) + data["k"] * lam * lam + data["base"], chosen


def mixed_bound(theta, lam, data):
    """Bound from k S^2 >= theta k sum_A s_i^2 + (1 - theta) k (2 lam S - lam^2), valid for binary sets."""
    k = data["k"]
    scores = sorted((data["d"][i] - theta * k * data["s"][i] ** 2 - (1 - theta) * 2 * k * lam * data["s"][i]
                     for i, ok in enumerate(data["ok"]) if ok), reverse=True)
    return sum(sc for sc in scores[: data["F"]] if sc > 0) + (1 - theta) * k * lam * lam + data["base"]


def twin_solve(data, rounds=4, bound_iters=20):
    """The JAX solver's algorithm in float64: best of ratio prefixes and Lagrangian sets, local search,
    Lagrangian upper bound. Returns (admitted set, objective, upper bound)."""
    n, F = len(data["d"]), data["F"]
    pos = [i for i in range(n) if data["ok"][i] and data["d"][i] > 0]
    order = sorted(pos, key=lambda i: (-data["d"][i] / data["s"][i], i))
    prefixes = [order[: min(m, F)] for m in range(n + 1)]
    tangents = [sum(data["s"][i] for i in p) for p in prefixes]
    candidates = prefixes + [lagrangian_bound(lam, data)[1] for lam in tangents]
    current = set(max(candidates, key=lambda A: value_of(A, data)))
    for _ in range(rounds):
        cur_v = value_of(current, data)
        moves = []
        outside = [j for j in range(n) if data["ok"][j] and j not in current]
        if len(current) < F:
            moves += [current | {j} for j in outside]
        moves += [current - {i} for i in current]
        moves += [(current - {i}) | {j} for i in current for j in outside]
        if not moves:
            break
        best = max(moves, key=lambda A: value_of(A, data))
        if value_of(best, data) > cur_v + 1e-12 * max(abs(cur_v), 1.0):
            current = best
        else:
            break
    bound = min(lagrangian_bound(lam, data)[0] for lam in tangents)
    lo, hi = 0.0, sum(data["s"][i] for i in range(n) if data["ok"][i])
    bound = min(bound, lagrangian_bound(hi, data)[0])
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(bound_iters):
        a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        ua, ub = lagrangian_bound(a, data)[0], lagrangian_bound(b, data)[0]
        bound = min(bound, ua, ub)
        lo, hi = (lo, b) if ua <= ub else (a, hi)
    for theta in (0.5, 1.0):
        bound = min(bound, min(mixed_bound(theta, lam, data) for lam in tangents))
    return sorted(current), value_of(current, data), max(bound, value_of(current, data))


def decisions_for(admitted, data, available_bw):
    """Decision [C] (2 admitted, 1 queue if q_i > 0, else 0) and the sqrt(c) bandwidth split."""
    n = len(data["d"])
    root = sum(data["s"][i] for i in admitted)
    decision = np.zeros(n, np.int32)
    bandwidth = np.zeros(n)
    for i in range(n):
        if i in admitted:
            decision[i], bandwidth[i] = 2, available_bw * data["s"][i] / root
        elif data["valid"][i] and data["q"][i] > 0:
            decision[i] = 1
    return decision, bandwidth
