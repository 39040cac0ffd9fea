"""The JAX simulator reproduces the NumPy oracle for the baseline schedulers (FIFO, random, RSD)."""

from __future__ import annotations

import pytest
from test_sim_oracle import check_case


@pytest.mark.parametrize("name,seed", [("fifo_all_llm", 0), ("random", 1), ("rsd", 0)])
def test_baseline_matches_oracle(name, seed):
    stats = check_case(name, seed)
    assert stats.get("immediate_cand", 0) > 0 and stats.get("queue_cand", 0) > 0
