"""All-LLM with FIFO against queueing intuition: no waiting at light load, saturation at heavy load."""

from __future__ import annotations

import numpy as np
from sim_helpers import tiny

from prada_jax import sim
from prada_jax.sim import policies
from prada_jax.traces import pack_traces

TRACE = tiny(seed=7)
PACKED = pack_traces(TRACE)
TABLE = policies.all_llm_table(TRACE)
CONFIG = sim.SimConfig(num_slots=400, warmup_slots=50, max_users=16, max_servers=4, drain_slots=100,
                       scheduler="fifo")


def test_light_and_heavy_load():
    grid = sim.stack_params([
        sim.make_params(arrival_rate=0.03, server_capacity=4, bandwidth_bps=1e9),  # light
        sim.make_params(arrival_rate=1.0, server_capacity=1, bandwidth_bps=1e9),  # heavy
    ])
    s = sim.summarize(sim.simulate_grid(PACKED, TABLE, grid, CONFIG, episodes=4, seed=0))
    light, heavy = 0, 1
    # Light load: offered load << M, so requests essentially never wait and every step is offloaded.
    assert s["offload_fraction"][0][light] == 1.0
    assert s["queuing_ms"][0][light] < 0.05 * s["processing_ms"][0][light]
    assert s["server_utilisation"][0][light] < 0.5
    assert s["dropped"][0][light] == 0
    # Heavy load: the single server is always busy, the queue fills the user slots and arrivals are dropped.
    assert s["server_slot_occupancy"][0][heavy] > 0.97
    assert s["queuing_ms"][0][heavy] > 5 * s["processing_ms"][0][heavy]
    assert s["dropped"][0][heavy] > 0.5 * s["arrived"][0][heavy]
    assert s["unfinished"][0][heavy] > 0 and 50.0 < s["drain_ms"][0][heavy] <= 100.0 + 1e-3  # censored at the limit
    assert s["overloaded"][0][heavy] == 1.0 and s["overloaded"][0][light] == 0.0
    # Compute time is part of the work (compute + upload), which is part of the occupancy (+ slot rounding).
    assert np.all(s["server_compute_utilisation"][0] <= s["server_utilisation"][0] + 1e-6)
    assert np.all(s["server_utilisation"][0] <= s["server_slot_occupancy"][0] + 1e-6)
