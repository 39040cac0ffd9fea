"""The price search of Theorem 2 (stage2.prada_stage2) on random candidate sets, against float64 references.

* `bisection_price`: the log10-space bisection that the simulator used before the breakpoint search (40 halvings
  of [1e-30, 1e10], keeping the last feasible midpoint), in float64.
* `scan_price`: the smallest feasible price on a dense log grid refined by bisection between its first feasible
  point and the infeasible one below it (float64): the reference for the smallest feasible price.
The new price must fit the bandwidth, never be above the old bisection's, and equal the smallest feasible price
where demand is monotone in the price (the abundant case). In the competitive case demand can rise with the price
(docs/simulator.md); the test counts how often the search stops at a boundary above the global minimum.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from prada_jax.sim import stage2 as S2

C, MAX_SERVERS, TOTAL_BW = 12, 8, 4e7
_RULE = jax.jit(jax.vmap(functools.partial(S2.prada_stage2, max_servers=MAX_SERVERS, tq_iterations=4),
                         in_axes=(0,) * 13))


def _instances(n, seed, competitive):
    rng = np.random.default_rng(seed)
    n_valid = rng.integers(1, C + 1, n)
    valid = np.arange(C)[None, :] < n_valid[:, None]
    feasible = rng.uniform(size=(n, C)) < 0.9
    gap = rng.uniform(-0.1, 1.0, (n, C)).astype(np.float32)
    ctx = rng.integers(100, 1501, (n, C)).astype(np.int32)
    snr = (10 ** (rng.uniform(-5, 25, (n, C)) / 10)).astype(np.float32)
    beta = (10 ** rng.uniform(0, 2, n)).astype(np.float32)
    avail = (10 ** rng.uniform(4, 7.5, n)).astype(np.float32)
    server_s = rng.uniform(0.002, 0.02, (n, C)).astype(np.float32)
    inflight = np.where(rng.uniform(size=(n, C)) < 0.3, rng.uniform(0.001, 0.02, (n, C)), np.inf).astype(np.float32)
    if competitive:
        free = np.maximum(1, n_valid // 3)
        n_valid = np.maximum(n_valid, 2)
        valid = np.arange(C)[None, :] < n_valid[:, None]
    else:
        n_valid = np.minimum(n_valid, MAX_SERVERS)
        valid = np.arange(C)[None, :] < n_valid[:, None]
        free = n_valid.copy()
    capacity = np.minimum(free + rng.integers(0, 3, n), MAX_SERVERS)
    args = (valid, feasible, gap, server_s, ctx, snr, inflight, n_valid.astype(np.int32), free.astype(np.int32),
            capacity.astype(np.int32), avail, np.full(n, TOTAL_BW, np.float32), beta)
    return args


def _demand_fn(valid, feasible, gap, ctx, snr, tq, beta, free, abundant):
    """Bandwidth demand of Theorem 2's admitted set at each price of an array of prices mu (float64, vectorised
    over the prices so that the dense scan below stays cheap)."""
    elig = valid & feasible
    b = np.sqrt(max(beta, 1e-12) * 32.0 * ctx.astype(np.float64) / np.log2(1.0 + snr.astype(np.float64)))
    q = beta * tq.astype(np.float64)

    def demand(mu):
        s = np.sqrt(np.asarray(mu, np.float64))[:, None]  # [P, 1]
        w = gap - 2.0 * b * s  # [P, C]
        if abundant:
            adm = elig & (w >= 0.0)
        else:
            sc = np.where(elig, np.minimum(w, q), -np.inf)
            order = np.argsort(-sc, axis=1, kind="stable")  # descending score, lower index first on ties
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(sc.shape[1])[None, :], axis=1)
            adm = elig & (rank < free) & (sc >= 0.0)
        return np.where(adm.any(axis=1), np.sum(np.where(adm, b, 0.0), axis=1) / s[:, 0], 0.0)

    return demand


def _fits(demand, log10_mu, available):
    return demand(np.array([10.0 ** log10_mu]))[0] <= available


def bisection_price(demand, available, iters=40, lo=-30.0, hi=10.0):
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _fits(demand, mid, available):
            hi = mid
        else:
            lo = mid
    return hi


def scan_price(demand, available, lo=-30.0, hi=10.0, points=4001):
    grid = np.linspace(lo, hi, points)
    ok = demand(10.0 ** grid) <= available
    first = int(np.argmax(ok))
    if first == 0:
        return lo
    a, b = grid[first - 1], grid[first]
    for _ in range(50):
        m = 0.5 * (a + b)
        a, b = (a, m) if _fits(demand, m, available) else (m, b)
    return b


@pytest.mark.parametrize("competitive", [False, True])
def test_price_is_feasible_and_not_above_the_old_bisection(competitive):
    args = _instances(300, seed=3 + competitive, competitive=competitive)
    out = jax.device_get(_RULE(*args))
    valid, feasible, gap, _, ctx, snr, _, _, free, _, avail, _, beta = args
    above_old = above_min = 0
    excess = 0.0
    for i in range(len(beta)):
        assert float(out.bandwidth[i].sum()) <= avail[i] * (1 + 1e-5)  # feasible
        admitted = out.decision[i] == S2.IMMEDIATE_D
        assert np.all(out.bandwidth[i][~admitted] == 0) and np.all(out.bandwidth[i][admitted] > 0)
        case = int(out.case[i])
        assert case == (S2.CASE_COMPETITIVE if competitive else S2.CASE_ABUNDANT)
        demand = _demand_fn(valid[i], feasible[i], gap[i], ctx[i], snr[i], out.tq[i], float(beta[i]), int(free[i]),
                        abundant=not competitive)
        if not admitted.any() and not np.isfinite(out.log10_mu[i]):
            continue  # nothing admissible: no price needed
        new = float(out.log10_mu[i])
        old = bisection_price(demand, float(avail[i]))
        smallest = scan_price(demand, float(avail[i]))
        above_old += new > old + 1e-4
        above_min += new > smallest + 1e-4
        excess = max(excess, new - old)
        assert new >= smallest - 1e-4, (i, new, smallest)  # nothing below the smallest feasible price fits
    if competitive:
        # The top F can change inside the final breakpoint segment (two scores cross); the segment halvings then
        # land within a small factor of the old bisection's price (which stops at a boundary too, sometimes above
        # the global minimum when demand is not monotone). Measured: 17 of 300 above it, by <= 0.03 decades.
        assert above_old <= 30 and excess <= 0.05, (above_old, above_min, excess)
    else:
        assert above_old == 0 and above_min == 0, (above_old, above_min)
