"""Property tests: resource and bookkeeping invariants hold in every slot, for random parameters."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prada_jax import sim
from prada_jax.traces import pack_traces
from sim_helpers import mixed_table, tiny

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
    assert np.all(rec.held_bandwidth <= bw * (1 + 1e-5) + 1e-3), rec.held_bandwidth.max()
    assert np.all(rec.inflight <= int(params.server_capacity))
    t = rec.totals
    np.testing.assert_array_equal(t.arrived, t.completed + rec.in_system + t.dropped)
    assert np.all(t.correct <= t.completed)
    assert np.all(rec.min_latency >= 0.0)
    for name in ("arrived", "completed", "processing_s", "communication_s", "queuing_s", "server_slot_busy_s"):
        assert np.all(np.diff(getattr(t, name)) >= 0), name
    assert np.all(t.offloaded_steps <= t.executed_steps)
    assert np.all(rec.queued + rec.local + rec.inflight <= config.max_users)
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
    assert rec.held_bandwidth.max() > 0
