"""docs/extending.md's scheduler example works as written: the code blocks register a scheduler and its oracle
twin, and the JAX simulator and the oracle agree on it metric by metric."""

from __future__ import annotations

import pathlib
import re

import jax
import numpy as np

from prada_jax import sim
from prada_jax.traces import pack_traces
from reference_sim import simulate_reference
from sim_helpers import metrics_dict, mixed_table, tiny

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_scheduler_example_of_the_docs_runs_and_matches_its_oracle_twin():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
    assert "greedy_gap" in sim.SCHEDULERS
    trace = tiny(seed=4)
    table = mixed_table(trace, seed=4)
    config = sim.SimConfig(num_slots=250, warmup_slots=20, max_users=10, max_servers=3, drain_slots=100,
                           max_candidates=6, scheduler="greedy_gap")
    params = sim.make_params(arrival_rate=0.5, server_capacity=2, bandwidth_bps=1e6)
    key = jax.random.PRNGKey(3)
    got = metrics_dict(sim.simulate(pack_traces(trace), table, params, config, key))
    want = simulate_reference(trace, table, params, config, key)
    assert want["completed"] > 10 and want["offloaded_steps"] > 0
    for name in ("arrived", "completed", "correct", "unfinished", "dropped", "offloaded_steps", "executed_steps"):
        assert got[name] == want[name], name
    for name in ("processing_s", "communication_s", "queuing_s", "sojourn_s", "bandwidth_used_bit"):
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=1e-9, err_msg=name)
