"""The exact candidate cap (SimConfig.max_candidates=None): overflow counting, the ladder of compiled caps, re-runs of
only the overflowed episodes, and results that equal those of any cap that never overflows."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from reference_sim import simulate_reference
from sim_helpers import metrics_dict, mixed_table, tiny

from prada_jax import sim
from prada_jax.sim import run
from prada_jax.traces import pack_traces

TRACE = tiny(seed=2)
PACKED = pack_traces(TRACE)
TABLE = mixed_table(TRACE, seed=2)
# Ladder 2, 4, 8, 12 (= U): congestion (M = 1, low bandwidth) pushes some episodes past 2, 4 and 8 candidates.
CONFIG = sim.SimConfig(num_slots=200, warmup_slots=20, max_users=12, max_servers=4, drain_slots=150,
                       candidate_cap_start=2)
GRID = sim.param_grid(sim.make_params(server_capacity=1), arrival_rate=[0.15, 0.6], bandwidth_bps=[1e5, 4e7])
EPISODES, SEED = 6, 4
CAP_FIELDS = ("candidate_overflow_slots", "candidate_cap")


def _grid(**over):
    return jax.device_get(sim.simulate_grid(PACKED, TABLE, GRID, dataclasses.replace(CONFIG, **over), EPISODES, SEED))


@pytest.fixture(scope="module")
def runs():
    return {cap: _grid(max_candidates=cap) for cap in (None, 2, 4, 8, 12)}


def test_ladder():
    assert run.candidate_ladder(CONFIG) == (2, 4, 8, 12)
    assert run.candidate_ladder(sim.SimConfig(max_users=64)) == (16, 32, 64)
    assert run.candidate_ladder(sim.SimConfig(max_users=100)) == (16, 32, 64, 100)
    assert run.candidate_ladder(sim.SimConfig(max_users=64, max_candidates=24)) == (24,)
    assert run.candidate_ladder(sim.SimConfig(max_users=64, scheduler="fifo")) == (16,)  # it sees every candidate
    assert run.rerun_batch(1) == 8 and run.rerun_batch(9) == 16 and run.rerun_batch(9, devices=2) == 32


def test_fixed_caps_count_overflow_and_the_exact_cap_never_overflows(runs):
    over = {cap: np.asarray(runs[cap].candidate_overflow_slots) for cap in (2, 4, 8, 12)}
    seen = np.asarray(runs[None].max_candidates_seen)
    assert over[2].sum() > over[4].sum() > 0 and over[12].sum() == 0  # the test exercises several rungs
    for cap, slots in over.items():
        # A capped run follows the exact one until its first slot with more than C candidates, so it overflows iff
        # the exact run ever saw more than C; its own largest count is counted whatever the cap.
        np.testing.assert_array_equal(slots > 0, seen > cap)
        np.testing.assert_array_equal(slots > 0, np.asarray(runs[cap].max_candidates_seen) > cap)
    exact = runs[None]
    assert np.all(np.asarray(exact.candidate_overflow_slots) == 0)
    # Each episode ran at the smallest cap of the ladder it never overflowed.
    want_cap = np.select([seen <= 2, seen <= 4, seen <= 8], [2, 4, 8], 12)
    np.testing.assert_array_equal(np.asarray(exact.candidate_cap), want_cap)
    s = sim.summarize(runs[2])
    assert np.all(s["candidate_overflow"][0] > 0)  # a fixed cap that truncated is flagged in the summary
    assert np.all(sim.summarize(exact)["candidate_overflow"][0] == 0)


def test_a_cap_that_never_overflows_gives_the_exact_result(runs):
    """Where a fixed cap did not overflow, every metric equals the exact cap's: counts exactly, float sums to float32
    rounding (programs of different caps may fuse their float32 arithmetic differently; measured: identical here,
    <= 2.1e-7 relative on episode sums of the full-size sweep)."""
    exact = runs[None]
    for cap in (2, 4, 8, 12):
        ok = np.asarray(runs[cap].candidate_overflow_slots) == 0
        assert ok.any()
        for name in exact.__dataclass_fields__:
            if name in CAP_FIELDS:
                continue
            got, want = np.asarray(getattr(runs[cap], name))[ok], np.asarray(getattr(exact, name))[ok]
            if np.issubdtype(want.dtype, np.integer):
                np.testing.assert_array_equal(got, want, err_msg=f"cap {cap} {name}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=f"cap {cap} {name}")


def test_a_rerun_of_some_episodes_equals_their_run_in_the_whole_grid():
    """Episodes are independent: an episode re-run in a batch of other (grid point, episode) pairs gives the counts it
    gave in the full grid exactly, and its float32 sums up to rounding (the two programs have different shapes, and
    XLA may order or fuse their float arithmetic differently: measured at most one float32 ulp)."""
    config = run.with_cap(run._check(PACKED, TABLE, GRID, CONFIG), 8)
    keys = run.episode_keys(EPISODES, SEED)
    whole = jax.device_get(run._simulate_grid(PACKED, TABLE, GRID, config, keys))
    g_idx, e_idx = np.array([3, 0, 3, 1, 2]), np.array([5, 0, 1, 4, 2])
    part = run._pairs_at(PACKED, TABLE, GRID, config, keys, g_idx, e_idx)
    for name in whole.__dataclass_fields__:
        got, want = np.asarray(getattr(part, name)), np.asarray(getattr(whole, name))[g_idx, e_idx]
        if np.issubdtype(want.dtype, np.integer) or want.dtype == bool:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=2.5e-7, atol=0.0, err_msg=name)


def test_stopping_a_rung_early_does_not_change_the_episodes_that_did_not_overflow():
    config = run.with_cap(run._check(PACKED, TABLE, GRID, CONFIG), 4)
    keys = run.episode_keys(EPISODES, SEED)
    full = jax.device_get(run._simulate_grid(PACKED, TABLE, GRID, config, keys))
    early = jax.device_get(run._simulate_grid(PACKED, TABLE, GRID, config, keys, True))
    ok = np.asarray(full.candidate_overflow_slots) == 0
    assert 0 < ok.sum() < ok.size
    np.testing.assert_array_equal(np.asarray(early.candidate_overflow_slots) == 0, ok)
    for name in full.__dataclass_fields__:
        np.testing.assert_array_equal(np.asarray(getattr(early, name))[ok], np.asarray(getattr(full, name))[ok])


def test_single_episode_and_oracle_without_a_cap():
    """`simulate` climbs the same ladder; the oracle with max_candidates=None considers every candidate, the exact
    reference: counts agree exactly (the overflow count is 0, the largest count the same), float sums to rtol 2e-4."""
    params = sim.make_params(server_capacity=1, arrival_rate=0.6, bandwidth_bps=1e5)
    key = run.episode_keys(EPISODES, SEED)[1]
    got = metrics_dict(sim.simulate(PACKED, TABLE, params, CONFIG, key))
    assert got["max_candidates_seen"] > 4 and got["candidate_cap"] >= got["max_candidates_seen"]
    want = simulate_reference(TRACE, TABLE, params, CONFIG, key)
    for name, value in want.items():
        if isinstance(value, int):
            assert got[name] == value, name
        else:
            np.testing.assert_allclose(got[name], value, rtol=2e-4, atol=1e-9, err_msg=name)
    fixed = simulate_reference(TRACE, TABLE, params, dataclasses.replace(CONFIG, max_candidates=2), key)
    assert fixed["candidate_overflow_slots"] > 0 and fixed["max_candidates_seen"] > 2  # the oracle counts it too


def test_the_learned_scheduler_does_not_depend_on_the_cap():
    """The learned Stage-2 policy pools over the valid rows and scales the candidate count by a constant, so where no
    slot overflows, its decisions (and so every metric) are those of the exact cap: the ladder is exact for it too."""
    config = dataclasses.replace(CONFIG, scheduler="learned", candidate_cap_start=4, num_slots=120, drain_slots=100)
    grid = sim.param_grid(sim.make_params(server_capacity=1), arrival_rate=[0.6], bandwidth_bps=[1e5])
    exact = jax.device_get(sim.simulate_grid(PACKED, TABLE, grid, config, 4, SEED))
    full = jax.device_get(sim.simulate_grid(PACKED, TABLE, grid, dataclasses.replace(config, max_candidates=12), 4,
                                            SEED))
    assert np.asarray(exact.candidate_cap).min() < 12  # some episodes ran at a smaller cap than U
    for name in exact.__dataclass_fields__:
        if name not in CAP_FIELDS:
            np.testing.assert_allclose(np.asarray(getattr(exact, name)), np.asarray(getattr(full, name)),
                                       rtol=1e-6, err_msg=name)
