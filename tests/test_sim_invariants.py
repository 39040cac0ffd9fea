"""Property tests: resource and bookkeeping invariants hold in every slot, for random parameters."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import mixed_table, tiny

from prada_jax import sim
from prada_jax.sim import schedulers
from prada_jax.traces import pack_traces

TRACE = tiny(seed=3)
PACKED = pack_traces(TRACE)
TABLE = mixed_table(TRACE, seed=3)


def _config(scheduler):
    return sim.SimConfig(num_slots=200, warmup_slots=20, max_users=10, max_servers=4, drain_slots=100,
                         max_candidates=6, scheduler=scheduler)


def check_invariants(params, config, seed):
    _, rec = sim.simulate_recorded(PACKED, TABLE, params, config, jax.random.PRNGKey(seed))
    rec = jax.device_get(rec)
    bw = float(params.bandwidth_bps)
    t = rec.totals
    # Right after admissions (a one-slot upload has returned its bandwidth by the end of the slot).
    assert np.all(t.peak_held_bandwidth <= bw * (1 + 1e-5) + 1e-3), (t.peak_held_bandwidth.max(), bw)
    assert np.all(t.peak_in_service <= int(params.server_capacity)), t.peak_in_service.max()
    assert np.all(rec.held_bandwidth <= t.peak_held_bandwidth) and np.all(rec.inflight <= t.peak_in_service)
    np.testing.assert_array_equal(t.arrived, t.completed + rec.in_system + t.dropped)
    assert np.all(t.correct <= t.completed)
    assert np.all(rec.min_latency >= 0.0)
    for name in ("stray_bandwidth", "upload_beyond_busy", "step_out_of_range", "cache_beyond_context"):
        assert not np.any(getattr(rec, name)), name
    for name in ("arrived", "completed", "processing_s", "communication_s", "queuing_s", "server_slot_busy_s"):
        assert np.all(np.diff(getattr(t, name)) >= 0), name
    assert np.all(t.offloaded_steps <= t.executed_steps)
    return rec


params_strategy = st.fixed_dictionaries({
    "bandwidth_bps": st.floats(1e4, 1e8),
    "server_capacity": st.integers(1, 4),
    "arrival_rate": st.floats(0.0, 2.0),
    "beta": st.floats(0.0, 100.0),
    "snr_db": st.floats(-5.0, 30.0),
    "snr_threshold_db": st.floats(-10.0, 10.0),
    "prefix_cache": st.booleans(),
})


@settings(max_examples=6, deadline=None)
@given(p=params_strategy, seed=st.integers(0, 2**16))
def test_invariants_prada(p, seed):
    check_invariants(sim.make_params(**p), _config("prada"), seed)


@settings(max_examples=4, deadline=None)
@given(p=params_strategy, seed=st.integers(0, 2**16))
def test_invariants_random_scheduler(p, seed):
    check_invariants(sim.make_params(**p), _config("random"), seed)


def test_invariants_under_overload_drop_and_bandwidth_binding():
    rec = check_invariants(sim.make_params(bandwidth_bps=5e4, server_capacity=1, arrival_rate=2.0),
                           _config("prada"), 7)
    assert rec.totals.dropped[-1] > 0  # overload really happened
    assert rec.totals.peak_held_bandwidth[-1] >= 0.99 * 5e4  # the bandwidth limit really binds
    assert rec.totals.peak_in_service[-1] == 1  # and so does the server


def _greedy(scale_bandwidth, extra_slots):
    """PRADA's decisions with every bandwidth scaled and `extra_slots` more server slots: a faulty scheduler."""
    def decide(view, config):
        decision, bandwidth = schedulers.decide_prada(view.replace(free_slots=view.free_slots + extra_slots), config)
        return decision, bandwidth * scale_bandwidth
    return decide


@pytest.mark.parametrize("name,scale,extra", [("test_bandwidth_hog", 1.5, 0), ("test_slot_hog", 1.0, 1)])
def test_invariant_checks_catch_a_faulty_scheduler(name, scale, extra):
    """The checks above can fail: a scheduler that hands out 1.5x the bandwidth, or one server slot too many, is
    caught at a bandwidth where uploads last one slot (their bandwidth is back before the slot ends)."""
    if name not in schedulers.SCHEDULERS:
        schedulers.register(name, _greedy(scale, extra), description="faulty on purpose (invariant test)",
                                reads_sched_draws=False)
    params = sim.make_params(bandwidth_bps=4e7, server_capacity=2, arrival_rate=1.0, snr_db=20.0)
    with pytest.raises(AssertionError):
        check_invariants(params, _config(name), 11)
