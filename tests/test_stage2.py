"""Theorem 2 scheduler on hand-built candidate sets: each case, the price bisection, the TQ estimate."""

from __future__ import annotations

import functools
import heapq

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prada_jax import costs
from prada_jax.sim import stage2 as S2

MAX_SERVERS = 4
C = 4
B = 4e7
_STAGE2 = jax.jit(functools.partial(S2.prada_stage2, max_servers=MAX_SERVERS, tq_iterations=80))


def run(gaps, feasible=None, valid=None, free_slots=1, capacity=2, inflight=(), available=B, beta=10.0,
        ctx=(200, 200, 200, 200), snr=(100.0, 100.0, 100.0, 100.0), server_s=(0.005,) * 4, num_candidates=None):
    valid = np.ones(C, bool) if valid is None else np.asarray(valid)
    feasible = np.ones(C, bool) if feasible is None else np.asarray(feasible)
    inflight_s = np.full(8, np.inf, np.float32)
    inflight_s[: len(inflight)] = inflight
    return _STAGE2(jnp.asarray(valid), jnp.asarray(feasible), jnp.asarray(gaps, jnp.float32),
              jnp.asarray(server_s, jnp.float32), jnp.asarray(ctx, jnp.int32), jnp.asarray(snr, jnp.float32),
              jnp.asarray(inflight_s), jnp.int32(valid.sum() if num_candidates is None else num_candidates),
              jnp.int32(free_slots), jnp.int32(capacity), jnp.float32(available), jnp.float32(B), jnp.float32(beta))


def test_case3_abundant_admits_iff_gain_positive():
    out = run([0.5, -0.1, 0.3, 0.0], valid=[True, True, True, False], free_slots=3, capacity=3)
    assert int(out.case) == S2.CASE_ABUNDANT
    np.testing.assert_array_equal(np.asarray(out.decision)[:3], [2, 0, 2])
    assert float(out.bandwidth.sum()) <= B * (1 + 1e-6)
    assert np.all(np.asarray(out.bandwidth)[[1, 3]] == 0)


def test_case2_full_server_queues_or_falls_back():
    # No free slot; in-flight requests release at 3 and 6 ms. A 0.5 gain is worth a 3 ms wait at beta=10,
    # a 0.01 gain is not.
    out = run([0.5, 0.01, 0.0, 0.0], valid=[True, True, False, False], free_slots=0, capacity=2,
              inflight=(0.006, 0.003))
    assert int(out.case) == S2.CASE_FULL
    np.testing.assert_array_equal(np.asarray(out.decision)[:2], [1, 0])
    np.testing.assert_allclose(float(out.tq[0]), 0.003, rtol=1e-5)  # head of queue waits for the first release
    assert float(out.bandwidth.sum()) == 0.0


def _priorities(out, gaps, ctx=200, snr=100.0, beta=10.0):
    mu = 10.0 ** float(out.log10_mu)
    sq = np.sqrt(beta * mu * 32.0 * ctx / np.log2(1.0 + snr))
    w = np.asarray(gaps) - 2.0 * sq
    wbar = beta * np.asarray(out.tq, np.float64)  # queue_pays_price (default): a queued request pays mu B* later
    return w, wbar


def test_case1_competitive_admits_at_most_free_slots_by_priority():
    gaps = [0.9, 0.8, 0.7, 0.6]
    out = run(gaps, free_slots=1, capacity=2, inflight=(0.004,))
    assert int(out.case) == S2.CASE_COMPETITIVE
    dec = np.asarray(out.decision)
    assert (dec == 2).sum() == 1
    assert np.all(dec[dec != 2] == 1)  # valuable requests wait rather than run locally
    # Theorem 2: the admitted request has the largest min(w, wbar), and it is >= lambda_s >= 0.
    w, wbar = _priorities(out, gaps)
    s = np.minimum(w, wbar)
    assert s[dec == 2][0] >= s.max() - 1e-6 and s[dec == 2][0] >= 0
    assert float(out.bandwidth.sum()) <= B * (1 + 1e-6)


def test_case1_low_value_goes_local():
    out = run([0.9, 0.8, 1e-4, 1e-4], free_slots=1, capacity=2, inflight=(0.004,))
    dec = np.asarray(out.decision)
    assert dec[0] == 2 and dec[1] == 1
    assert np.all(dec[2:] == 0)


def test_infeasible_channel_is_never_admitted():
    out = run([5.0, 0.1, 0.0, 0.0], feasible=[False, True, True, True], valid=[True, True, False, False],
              free_slots=3, capacity=3)
    dec = np.asarray(out.decision)
    assert dec[0] == 1  # high value, bad channel now: wait for a better slot
    assert dec[1] == 2


def test_bisection_is_feasible_and_tight_with_closed_form_price():
    # Abundant server, huge gains: everyone is admitted at any relevant price, so the bandwidth constraint
    # binds and mu* = beta (sum_i sqrt(c_i))^2 / B_av^2 with c_i = 32 L_i / log2(1 + gamma_i) (eq. 30).
    ctx = np.array([100, 300, 500, 50])
    snr = np.array([3.0, 30.0, 300.0, 10.0])
    avail, beta = 1e6, 10.0
    out = run([1e3] * 4, free_slots=4, capacity=4, available=avail, ctx=ctx, snr=snr, beta=beta)
    bw = np.asarray(out.bandwidth, np.float64)
    assert np.all(np.asarray(out.decision) == 2)
    assert bw.sum() <= avail * (1 + 1e-6)
    np.testing.assert_allclose(bw.sum(), avail, rtol=1e-4)
    c = 32.0 * ctx / np.log2(1.0 + snr)
    mu_star = beta * np.sqrt(c).sum() ** 2 / avail**2
    np.testing.assert_allclose(float(out.log10_mu), np.log10(mu_star), atol=1e-4)
    np.testing.assert_allclose(bw / bw.sum(), np.sqrt(c) / np.sqrt(c).sum(), rtol=1e-4)  # B* ∝ sqrt(c_i)


@pytest.mark.parametrize("avail", [2e4, 3e5, 5e6])
def test_bisection_never_exceeds_available_bandwidth(avail):
    rng = np.random.default_rng(int(avail))
    for _ in range(5):
        gaps = rng.uniform(-0.1, 0.5, C)
        out = run(gaps, free_slots=int(rng.integers(1, 4)), capacity=4, available=avail,
                  ctx=rng.integers(20, 800, C), snr=rng.uniform(1.0, 300.0, C))
        assert float(np.asarray(out.bandwidth, np.float64).sum()) <= avail * (1 + 1e-5)
        dec = np.asarray(out.decision)
        assert np.all((np.asarray(out.bandwidth) > 0) == (dec == 2))


def test_beta_zero_is_finite():
    out = run([0.5, 0.2, 0.1, 0.0], free_slots=1, capacity=2, inflight=(0.002,), beta=0.0)
    assert np.all(np.isfinite(np.asarray(out.bandwidth)))
    assert np.all(np.isfinite(np.asarray(out.tq)))


def test_queue_position_delays_match_list_scheduling():
    rng = np.random.default_rng(0)
    for _ in range(10):
        m = int(rng.integers(1, 5))
        free = np.concatenate([np.sort(rng.uniform(0, 0.01, m)), np.full(4 - m, np.inf)]).astype(np.float32)
        dur = float(rng.uniform(0.001, 0.006))
        got = np.asarray(S2.queue_position_delays(jnp.asarray(free), dur, 6))
        heap = list(free[:m].astype(np.float64))
        heapq.heapify(heap)
        want = []
        for _ in range(6):
            start = heapq.heappop(heap)
            want.append(start)
            heapq.heappush(heap, start + dur)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_server_free_times_orders_free_then_inflight_then_unavailable():
    inflight = jnp.asarray([np.inf, 0.004, np.inf, 0.002, np.inf, np.inf], jnp.float32)
    g = np.asarray(S2.server_free_times(inflight, jnp.int32(1), jnp.int32(3), 4))
    np.testing.assert_allclose(g, [0.0, 0.002, 0.004, np.inf])


def test_rank_desc_ties_and_invalid():
    r = np.asarray(S2.rank_desc(jnp.asarray([1.0, 3.0, 3.0, 9.0]), jnp.asarray([True, True, True, False])))
    np.testing.assert_array_equal(r, [2, 0, 1, 3])


def test_fifo_and_random_schedulers():
    valid = jnp.asarray([True, True, True, False])
    feas = jnp.asarray([True, False, True, True])
    dec, bw = S2.fifo_stage2(valid, feas, jnp.asarray([5, 1, 3, 0]), jnp.int32(1), jnp.float32(1e6), 1.0)
    np.testing.assert_array_equal(np.asarray(dec), [1, 1, 2, 0])  # oldest feasible gets the slot
    np.testing.assert_allclose(np.asarray(bw), [0, 0, 1e6, 0])
    dec, bw = S2.random_stage2(valid, feas, jnp.asarray([0.9, 0.9, 0.1, 0.9]), jnp.int32(2), jnp.float32(1e6), 1.0)
    np.testing.assert_array_equal(np.asarray(dec), [2, 1, 0, 0])  # infeasible immediate -> queue
    dec, _ = S2.fifo_stage2(valid, feas, jnp.asarray([5, 1, 3, 0]), jnp.int32(2), jnp.float32(0.0), 1.0)
    assert not np.any(np.asarray(dec) == 2)  # no bandwidth left: nobody starts an upload


def test_value_gap_eq33():
    np.testing.assert_allclose(float(costs.value_gap(0.1, 0.75)), 0.4, rtol=1e-6)


_STAGE2_EQ32 = jax.jit(functools.partial(S2.prada_stage2, max_servers=MAX_SERVERS, tq_iterations=80,
                                         queue_pays_price=False))


def test_queue_pays_price_avoids_low_bandwidth_deadlock():
    # One free slot, two valuable candidates, the other server slot frees in 1 ms, so queueing is estimated at
    # ~1 ms. B_av = 1e5 bit/s: a 200-token upload takes >= 9.6 ms even with all of it. With eq. 32 literally
    # (w_bar = beta TQ - mu B*) min(w, w_bar) < 0 at every feasible price, so nobody is admitted although a slot is
    # free and both queue, slot after slot; with the queue charged the same price (default) one is admitted.
    gaps, valid = [0.9, 0.8, 0.0, 0.0], [True, True, False, False]
    default = np.asarray(run(gaps, valid=valid, free_slots=1, capacity=2, inflight=(0.001,), available=1e5).decision)
    assert (default[:2] == 2).sum() == 1 and (default[:2] == 1).sum() == 1
    literal_out = _STAGE2_EQ32(jnp.asarray(valid), jnp.ones(C, bool), jnp.asarray(gaps, jnp.float32),
                               jnp.full(C, 0.005, jnp.float32), jnp.full(C, 200, jnp.int32),
                               jnp.full(C, 100.0, jnp.float32), jnp.asarray([0.001] + [np.inf] * 7, jnp.float32),
                               jnp.int32(2), jnp.int32(1), jnp.int32(2), jnp.float32(1e5), jnp.float32(B),
                               jnp.float32(10.0))
    np.testing.assert_array_equal(np.asarray(literal_out.decision)[:2], [1, 1])
