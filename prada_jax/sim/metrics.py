"""Per-episode metrics and their summary over episodes (mean and 95% confidence half-width)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.state import FREE, SimState

CI_Z = 1.96


@struct.dataclass
class EpisodeMetrics:
    """Totals of one episode. Task counts and latency sums cover tasks that arrived at or after the
    warm-up; time-based sums cover slots at or after the warm-up (`measured_s` seconds)."""

    arrived: jnp.ndarray
    completed: jnp.ndarray
    correct: jnp.ndarray
    in_system: jnp.ndarray  # counted tasks still in the system at the horizon
    dropped: jnp.ndarray  # arrivals with no free user slot or beyond max_arrivals_per_slot
    processing_s: jnp.ndarray
    communication_s: jnp.ndarray
    queuing_s: jnp.ndarray
    end_to_end_s: jnp.ndarray
    sojourn_s: jnp.ndarray
    offloaded_steps: jnp.ndarray
    total_steps: jnp.ndarray
    server_busy_s: jnp.ndarray
    server_compute_s: jnp.ndarray
    bandwidth_bit: jnp.ndarray
    measured_s: jnp.ndarray
    server_capacity: jnp.ndarray
    bandwidth_bps: jnp.ndarray
    beta: jnp.ndarray


def finalize(state: SimState, params: SimParams, config: SimConfig) -> EpisodeMetrics:
    """Turn the final state into EpisodeMetrics."""
    t = state.totals
    users = state.users
    in_system = jnp.sum((users.phase != FREE) & (users.arrival_slot >= config.warmup_slots))
    return EpisodeMetrics(
        arrived=t.arrived, completed=t.completed, correct=t.correct, in_system=in_system.astype(jnp.int32),
        dropped=t.dropped, processing_s=t.processing_s, communication_s=t.communication_s,
        queuing_s=t.queuing_s, end_to_end_s=t.end_to_end_s, sojourn_s=t.sojourn_s,
        offloaded_steps=t.offloaded_steps, total_steps=t.total_steps, server_busy_s=t.server_busy_s,
        server_compute_s=t.server_compute_s, bandwidth_bit=t.bandwidth_bit,
        measured_s=jnp.float32((config.num_slots - config.warmup_slots) * config.slot_seconds),
        server_capacity=params.server_capacity, bandwidth_bps=params.bandwidth_bps, beta=params.beta,
    )


def per_episode(m: EpisodeMetrics) -> dict[str, np.ndarray]:
    """Named per-episode values (NaN where undefined, e.g. per-task means with no completed task)."""
    g = {k: np.asarray(getattr(m, k), np.float64) for k in m.__dataclass_fields__}
    done = np.where(g["completed"] > 0, g["completed"], np.nan)
    e2e = g["end_to_end_s"] / done
    acc = g["correct"] / done
    return {
        "accuracy": acc,
        "processing_ms": 1e3 * g["processing_s"] / done,
        "communication_ms": 1e3 * g["communication_s"] / done,
        "queuing_ms": 1e3 * g["queuing_s"] / done,
        "end_to_end_ms": 1e3 * e2e,
        "sojourn_ms": 1e3 * g["sojourn_s"] / done,
        "offload_fraction": g["offloaded_steps"] / np.where(g["total_steps"] > 0, g["total_steps"], np.nan),
        "arrived": g["arrived"],
        "completed": g["completed"],
        "in_system": g["in_system"],
        "dropped": g["dropped"],
        "server_utilisation": g["server_busy_s"] / (g["server_capacity"] * g["measured_s"]),
        "server_compute_utilisation": g["server_compute_s"] / (g["server_capacity"] * g["measured_s"]),
        "bandwidth_utilisation": g["bandwidth_bit"] / (g["bandwidth_bps"] * g["measured_s"]),
        "utility": acc - g["beta"] * e2e,
    }


def summarize(m: EpisodeMetrics) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (mean over episodes, 95% CI half-width), reduced over the last (episode) axis.

    For grid results ([G, E] leaves) both arrays are [G]. Episodes where a metric is undefined (NaN)
    are left out of that metric's mean.
    """
    out = {}
    for name, value in per_episode(m).items():
        finite = np.isfinite(value)
        n = finite.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(value, axis=-1) / np.maximum(n, 1), np.nan)
            dev = np.where(finite, value - mean[..., None] if value.ndim > 1 else value - mean, 0.0)
            var = np.sum(dev * dev, axis=-1) / np.maximum(n - 1, 1)
            half = np.where(n > 1, CI_Z * np.sqrt(var / np.maximum(n, 1)), np.nan)
        out[name] = (mean, half)
    return out
