"""Shared helpers of the simulator tests: a tiny trace with a mixed policy table, and metric comparison."""

from __future__ import annotations

import jax
import numpy as np
from conftest import make_tiny_trace

from prada_jax.sim import policies


def mixed_table(trace, seed=0):
    """A table with varied pi(1|x) (some steps nominated, some not) and value gaps of both signs."""
    rng = np.random.default_rng(seed)
    mask = trace.step_mask
    nom = np.where(mask, rng.uniform(0.05, 0.95, mask.shape), 0.0)
    gap = np.where(mask, rng.uniform(-0.05, 0.3, mask.shape), 0.0)
    return policies.table_from_value_gap(nom, gap, policies.flops_reference_server_seconds(trace))


def tiny(num_problems=8, max_steps=4, seed=0):
    return make_tiny_trace(num_problems=num_problems, max_steps=max_steps, seed=seed)


def metrics_dict(m):
    """Scalar EpisodeMetrics -> {field: Python number}."""
    m = jax.device_get(m)
    return {k: np.asarray(getattr(m, k)).item() for k in m.__dataclass_fields__}
