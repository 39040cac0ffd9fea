"""Per-episode metrics and their summary over episodes (mean and Student-t 95 % confidence half-width).

Accounting (docs/simulator.md "Accounting"): every task that arrives in the measurement window
[warmup, horizon) is *counted* and ends as exactly one of completed, unfinished (still in the system when the
drain ends: censored) or dropped (no free user slot). Per-task averages run over completed + unfinished tasks;
an unfinished task is never correct and contributes the delays it has accumulated so far (lower bounds).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy import special

from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.state import FREE, SimState

CI_LEVEL = 0.95


@struct.dataclass
class EpisodeMetrics:
    """Totals of one episode over counted tasks (arrived in [warmup, horizon)) and the measurement window."""

    arrived: jnp.ndarray
    completed: jnp.ndarray
    unfinished: jnp.ndarray  # counted tasks still in the system when the drain ended (censored)
    dropped: jnp.ndarray  # counted arrivals that found no free user slot
    correct: jnp.ndarray
    processing_s: jnp.ndarray  # sums over completed + unfinished tasks
    communication_s: jnp.ndarray
    queuing_s: jnp.ndarray
    sojourn_s: jnp.ndarray
    offloaded_steps: jnp.ndarray
    executed_steps: jnp.ndarray
    server_work_s: jnp.ndarray
    server_compute_s: jnp.ndarray
    bandwidth_used_bit: jnp.ndarray
    server_slot_busy_s: jnp.ndarray
    bandwidth_reserved_bit: jnp.ndarray
    measured_s: jnp.ndarray  # length of the measurement window (s)
    drain_s: jnp.ndarray  # how long the drain ran (s)
    server_capacity: jnp.ndarray
    bandwidth_bps: jnp.ndarray
    beta: jnp.ndarray
    # Stage-2 candidate cap (every slot): slots in which more than `candidate_cap` candidates existed (the youngest
    # were left out of that slot's decision; never with SimConfig.max_candidates=None), the largest count seen, and
    # the cap this episode ran with (with max_candidates=None: the smallest compiled size it never overflowed).
    candidate_overflow_slots: jnp.ndarray
    max_candidates_seen: jnp.ndarray
    candidate_cap: jnp.ndarray


def finalize(state: SimState, t_end, params: SimParams, config: SimConfig) -> EpisodeMetrics:
    """EpisodeMetrics of the final state; `t_end` is the first slot not simulated. Unfinished counted tasks
    are added with their accumulated delays and their elapsed wall-clock time (censored, never correct)."""
    t, u = state.totals, state.users
    open_ = (u.phase != FREE) & (u.arrival_slot >= config.warmup_slots)
    dt = config.slot_seconds

    def add(total, per_user):
        return total + jnp.sum(jnp.where(open_, per_user, 0))

    elapsed = (t_end - u.arrival_slot).astype(jnp.float32) * dt
    return EpisodeMetrics(
        arrived=t.arrived, completed=t.completed, unfinished=jnp.sum(open_).astype(jnp.int32),
        dropped=t.dropped, correct=t.correct,
        processing_s=add(t.processing_s, u.proc_s), communication_s=add(t.communication_s, u.comm_s),
        queuing_s=add(t.queuing_s, u.queue_s), sojourn_s=add(t.sojourn_s, elapsed),
        offloaded_steps=add(t.offloaded_steps, u.offloaded), executed_steps=add(t.executed_steps, u.step),
        server_work_s=t.server_work_s, server_compute_s=t.server_compute_s,
        bandwidth_used_bit=t.bandwidth_used_bit, server_slot_busy_s=t.server_slot_busy_s,
        bandwidth_reserved_bit=t.bandwidth_reserved_bit,
        measured_s=jnp.float32((config.num_slots - config.warmup_slots) * dt),
        drain_s=(t_end - config.num_slots).astype(jnp.float32) * dt,
        server_capacity=params.server_capacity, bandwidth_bps=params.bandwidth_bps, beta=params.beta,
        candidate_overflow_slots=t.candidate_overflow_slots, max_candidates_seen=t.max_candidates_seen,
        candidate_cap=jnp.int32(config.max_candidates),
    )


def per_episode(m: EpisodeMetrics) -> dict[str, np.ndarray]:
    """Named per-episode values (NaN where undefined, e.g. per-task means when no task entered the system).

    Delay columns (ms per task; time bases in docs/simulator.md "Time"): processing and communication are exact
    durations of the work, queuing is whole slots spent waiting, alignment is the task's own rounding up to slot
    boundaries, and processing + communication + queuing + alignment = sojourn (wall-clock in the system).
    end_to_end is the paper's sum processing + communication + queuing.
    """
    g = {k: np.asarray(getattr(m, k), np.float64) for k in m.__dataclass_fields__}
    entered = g["completed"] + g["unfinished"]
    per_task = np.where(entered > 0, entered, np.nan)
    ms = {name: 1e3 * g[f"{name}_s"] / per_task for name in ("processing", "communication", "queuing", "sojourn")}
    e2e = ms["processing"] + ms["communication"] + ms["queuing"]
    acc = g["correct"] / per_task
    window = g["measured_s"]
    return {
        "accuracy": acc,
        "accuracy_of_arrivals": g["correct"] / np.where(g["arrived"] > 0, g["arrived"], np.nan),
        "processing_ms": ms["processing"],
        "communication_ms": ms["communication"],
        "queuing_ms": ms["queuing"],
        "alignment_ms": ms["sojourn"] - e2e,
        "end_to_end_ms": e2e,
        "sojourn_ms": ms["sojourn"],
        "offload_fraction": g["offloaded_steps"] / np.where(g["executed_steps"] > 0, g["executed_steps"], np.nan),
        "arrived": g["arrived"],
        "completed": g["completed"],
        "unfinished": g["unfinished"],
        "dropped": g["dropped"],
        "overloaded": ((g["dropped"] > 0) | (g["unfinished"] > 0)).astype(np.float64),
        "drain_ms": 1e3 * g["drain_s"],
        "server_utilisation": g["server_work_s"] / (g["server_capacity"] * window),
        "server_compute_utilisation": g["server_compute_s"] / (g["server_capacity"] * window),
        "bandwidth_utilisation": g["bandwidth_used_bit"] / (g["bandwidth_bps"] * window),
        "server_slot_occupancy": g["server_slot_busy_s"] / (g["server_capacity"] * window),
        "bandwidth_reservation": g["bandwidth_reserved_bit"] / (g["bandwidth_bps"] * window),
        "utility": acc - g["beta"] * 1e-3 * e2e,
        # A fixed cap that overflowed (never with the exact default): the fraction of episodes flagged, and the slots.
        "candidate_overflow": (g["candidate_overflow_slots"] > 0).astype(np.float64),
        "candidate_overflow_slots": g["candidate_overflow_slots"],
        "max_candidates_seen": g["max_candidates_seen"],
        "candidate_cap": g["candidate_cap"],  # exact default: the compiled cap the episode needed (a mean > 32:
        # some episode saw more than 32 candidates in a slot)
    }


def t_half_width(std, n, level: float = CI_LEVEL):
    """Half-width of the two-sided Student-t interval for a mean of n samples with sample std `std`."""
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = special.stdtrit(np.maximum(n - 1.0, 1.0), 0.5 + level / 2.0)  # Student-t quantile (scipy.stats.t.ppf)
        return np.where(n > 1, q * std / np.sqrt(np.maximum(n, 1.0)), np.nan)


def summarize(m: EpisodeMetrics) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (mean over episodes, Student-t 95 % CI half-width), reduced over the last (episode) axis.

    For grid results ([G, E] leaves) both arrays are [G]. Episodes where a metric is undefined (NaN, see
    `per_episode`: per-task means when no task entered the system, offload_fraction when no step was executed,
    accuracy_of_arrivals when nothing arrived) are left out of that metric's mean and its n.
    """
    out = {}
    for name, value in per_episode(m).items():
        finite = np.isfinite(value)
        n = finite.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(np.where(finite, value, 0.0), axis=-1) / np.maximum(n, 1), np.nan)
            dev = np.where(finite, value - np.expand_dims(mean, -1), 0.0)
            std = np.sqrt(np.sum(dev * dev, axis=-1) / np.maximum(n - 1, 1))
        out[name] = (mean, t_half_width(std, n))
    return out


def summarize_grid(m: EpisodeMetrics, points) -> list[dict]:
    """Labelled `summarize`: one dict per grid point, `{**point, "<metric>_mean": float, "<metric>_ci95": float}`
    (the same keys as a sweep's result rows).

    `points` labels the grid axis [G] of `m`: a sequence of G dicts ({"server_capacity": 3, ...}), or the
    `SimParams` grid the metrics were simulated with (leaves [G]), which is labelled by the leaves that vary over
    the grid (all leaves when G == 1). Metrics of one parameter point ([E] leaves) take one point.
    """
    summary = summarize(m)
    size = int(np.size(next(iter(summary.values()))[0]))
    if isinstance(points, SimParams):
        leaves = {k: np.asarray(getattr(points, k)).reshape(-1) for k in points.__dataclass_fields__}
        varying = [k for k, v in leaves.items() if v.size > 1 and np.any(v != v[0])] or list(leaves)
        g = max(v.size for v in leaves.values())
        points = [{k: _scalar(leaves[k][i if leaves[k].size > 1 else 0]) for k in varying} for i in range(g)]
    points = [dict(p) for p in points]
    if len(points) != size:
        raise ValueError(f"summarize_grid: {len(points)} point labels for {size} grid points")
    rows = []
    for i, point in enumerate(points):
        row = dict(point)
        for name, (mean, ci) in summary.items():
            row[f"{name}_mean"] = float(np.reshape(mean, -1)[i])
            row[f"{name}_ci95"] = float(np.reshape(ci, -1)[i])
        rows.append(row)
    return rows


def _scalar(value):
    value = np.asarray(value)
    return bool(value) if value.dtype == bool else (int(value) if np.issubdtype(value.dtype, np.integer) else float(value))
