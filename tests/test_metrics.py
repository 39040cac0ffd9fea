"""prada_jax.sim.metrics on hand-built EpisodeMetrics: every output of `per_episode` against hand arithmetic, the
NaN rules for undefined denominators, and the mean / Student-t interval of `summarize` (no simulation).

The expected values are written out by hand (the arithmetic is in the comments); nothing here calls the library's
own formulas to compute an expected value.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from prada_jax.sim import metrics as MET
from prada_jax.sweep import report

# Every output of per_episode: a new output must be added here (and given a hand value below).
OUTPUTS = {
    "accuracy", "accuracy_of_arrivals", "processing_ms", "communication_ms", "queuing_ms", "alignment_ms",
    "end_to_end_ms", "sojourn_ms", "offload_fraction", "arrived", "completed", "unfinished", "dropped", "overloaded",
    "drain_ms", "server_utilisation", "server_compute_utilisation", "bandwidth_utilisation", "server_slot_occupancy",
    "bandwidth_reservation", "utility", "candidate_overflow", "candidate_overflow_slots", "max_candidates_seen",
    "candidate_cap",
}

# One episode: 13 counted arrivals = 10 completed + 2 unfinished + 1 dropped; 9 correct. 1 s window, M = 2 server
# slots, B = 1e6 bit/s, beta = 5 per second.
BASE = dict(
    arrived=13, completed=10, unfinished=2, dropped=1, correct=9,
    processing_s=0.060, communication_s=0.012, queuing_s=0.024, sojourn_s=0.120,  # sums over the 12 entered tasks
    offloaded_steps=30, executed_steps=120,
    server_work_s=1.0, server_compute_s=0.8, bandwidth_used_bit=250_000.0, server_slot_busy_s=1.5,
    bandwidth_reserved_bit=400_000.0,
    measured_s=1.0, drain_s=0.25, server_capacity=2, bandwidth_bps=1e6, beta=5.0,
    candidate_overflow_slots=3, max_candidates_seen=20, candidate_cap=16,  # a fixed cap of 16 overflowed in 3 slots
)

# By hand, for BASE. Entered tasks (per-task denominator) = completed + unfinished = 10 + 2 = 12.
BASE_EXPECTED = {
    "accuracy": 0.75,  # 9 correct / 12 entered (the dropped arrival is not in the denominator)
    "accuracy_of_arrivals": 9 / 13,  # 9 correct / 13 arrived (the dropped arrival counts as a failure)
    "processing_ms": 5.0,  # 60 ms / 12
    "communication_ms": 1.0,  # 12 ms / 12
    "queuing_ms": 2.0,  # 24 ms / 12
    "sojourn_ms": 10.0,  # 120 ms / 12
    "end_to_end_ms": 8.0,  # 5 + 1 + 2
    "alignment_ms": 2.0,  # sojourn - end_to_end = 10 - 8
    "offload_fraction": 0.25,  # 30 offloaded / 120 executed steps
    "arrived": 13.0, "completed": 10.0, "unfinished": 2.0, "dropped": 1.0,
    "overloaded": 1.0,  # a drop (and unfinished tasks)
    "drain_ms": 250.0,  # 0.25 s
    "server_utilisation": 0.5,  # 1.0 s / (M=2 x 1 s)
    "server_compute_utilisation": 0.4,  # 0.8 s / (2 x 1 s)
    "bandwidth_utilisation": 0.25,  # 2.5e5 bit / (1e6 bit/s x 1 s)
    "server_slot_occupancy": 0.75,  # 1.5 s / (2 x 1 s)
    "bandwidth_reservation": 0.4,  # 4e5 bit / (1e6 bit/s x 1 s)
    "utility": 0.71,  # accuracy - beta x end_to_end in seconds = 0.75 - 5 x 0.008 = 0.75 - 0.04
    "candidate_overflow": 1.0,  # flagged: some slot held more candidates than the cap
    "candidate_overflow_slots": 3.0, "max_candidates_seen": 20.0, "candidate_cap": 16.0,
}

COUNTS = ("arrived", "completed", "unfinished", "dropped", "correct", "offloaded_steps", "executed_steps")


def episode(dtype=np.float64, **overrides) -> MET.EpisodeMetrics:
    """An EpisodeMetrics from BASE with `overrides`; every leaf is broadcast to the common (batch) shape, as the
    leaves of `simulate_grid` results all are."""
    values = {**BASE, **overrides}
    assert set(values) == set(MET.EpisodeMetrics.__dataclass_fields__), "EpisodeMetrics gained or lost a field"
    shape = np.broadcast_shapes(*(np.shape(v) for v in values.values()))
    return MET.EpisodeMetrics(**{k: np.broadcast_to(np.asarray(v, np.int32 if k in COUNTS or k == "server_capacity"
                                                               else dtype), shape) for k, v in values.items()})


def assert_outputs(out, expected, rtol=1e-12):
    assert set(out) == OUTPUTS
    for name, want in expected.items():
        got = np.asarray(out[name])
        if isinstance(want, float) and math.isnan(want):
            assert np.all(np.isnan(got)), (name, got)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12, err_msg=name)


def test_every_output_of_one_episode_by_hand():
    out = MET.per_episode(episode())
    assert set(BASE_EXPECTED) == OUTPUTS  # every output has a hand value
    assert_outputs(out, BASE_EXPECTED)


def test_every_task_is_accounted_for_in_the_denominators():
    out = MET.per_episode(episode())
    # finished + unfinished + dropped = arrived (13 = 10 + 2 + 1)
    assert out["completed"] + out["unfinished"] + out["dropped"] == out["arrived"] == 13
    # Per-task means run over completed + unfinished (12), not over completed (10) or arrivals (13).
    assert out["accuracy"] * 12 == pytest.approx(9)
    assert out["processing_ms"] * 12 == pytest.approx(60)
    assert out["sojourn_ms"] * 12 == pytest.approx(120)
    # accuracy_of_arrivals runs over every arrival, dropped ones included.
    assert out["accuracy_of_arrivals"] * 13 == pytest.approx(9)
    # Moving a task from completed to unfinished keeps the per-task denominator (an unfinished task is not hidden).
    moved = MET.per_episode(episode(completed=9, unfinished=3))
    assert moved["accuracy"] == pytest.approx(0.75) and moved["processing_ms"] == pytest.approx(5.0)


def test_only_unfinished_tasks_still_define_per_task_means():
    """No task completed but 4 entered (all censored): accuracy is 0 (not NaN) and the delays are lower bounds per
    entered task; no step finished, so offload_fraction alone is undefined."""
    out = MET.per_episode(episode(arrived=4, completed=0, unfinished=4, dropped=0, correct=0, processing_s=0.02,
                                  communication_s=0.0, queuing_s=0.008, sojourn_s=0.04, offloaded_steps=0,
                                  executed_steps=0))
    assert_outputs(out, {
        "accuracy": 0.0,  # 0 / 4
        "accuracy_of_arrivals": 0.0,  # 0 / 4
        "processing_ms": 5.0,  # 20 ms / 4
        "communication_ms": 0.0,
        "queuing_ms": 2.0,  # 8 ms / 4
        "sojourn_ms": 10.0,  # 40 ms / 4
        "end_to_end_ms": 7.0,  # 5 + 0 + 2
        "alignment_ms": 3.0,  # 10 - 7
        "offload_fraction": float("nan"),  # 0 / 0 executed steps
        "overloaded": 1.0,  # unfinished tasks, no drop
        "utility": -0.035,  # 0 - 5 x 0.007
    })


def test_no_entered_task_makes_per_task_means_nan():
    """3 arrivals, all dropped: every per-task mean (and utility) is NaN; the arrival-based accuracy, the counts and
    the window-based resource ratios stay defined (work admitted in the window may belong to warm-up tasks)."""
    out = MET.per_episode(episode(arrived=3, completed=0, unfinished=0, dropped=3, correct=0, processing_s=0.0,
                                  communication_s=0.0, queuing_s=0.0, sojourn_s=0.0, offloaded_steps=0,
                                  executed_steps=0, server_work_s=0.3, server_compute_s=0.2, bandwidth_used_bit=0.0,
                                  server_slot_busy_s=0.4, bandwidth_reserved_bit=0.0, drain_s=0.0))
    nan = float("nan")
    assert_outputs(out, {
        "accuracy": nan, "processing_ms": nan, "communication_ms": nan, "queuing_ms": nan, "sojourn_ms": nan,
        "end_to_end_ms": nan, "alignment_ms": nan, "utility": nan,  # 0 / 0 entered tasks
        "offload_fraction": nan,  # 0 / 0 executed steps
        "accuracy_of_arrivals": 0.0,  # 0 correct / 3 arrived
        "arrived": 3.0, "completed": 0.0, "unfinished": 0.0, "dropped": 3.0,
        "overloaded": 1.0,  # drops
        "drain_ms": 0.0,
        "server_utilisation": 0.15,  # 0.3 / (2 x 1)
        "server_compute_utilisation": 0.1,  # 0.2 / 2
        "bandwidth_utilisation": 0.0, "server_slot_occupancy": 0.2, "bandwidth_reservation": 0.0,
    })


def test_no_arrival_at_all():
    zero = {k: 0 for k in COUNTS}
    out = MET.per_episode(episode(**zero, processing_s=0.0, communication_s=0.0, queuing_s=0.0, sojourn_s=0.0,
                                  server_work_s=0.0, server_compute_s=0.0, bandwidth_used_bit=0.0,
                                  server_slot_busy_s=0.0, bandwidth_reserved_bit=0.0, drain_s=0.0))
    nan = float("nan")
    assert_outputs(out, {
        "accuracy": nan, "accuracy_of_arrivals": nan,  # 0 / 0 entered, 0 / 0 arrived
        "utility": nan, "end_to_end_ms": nan, "offload_fraction": nan,
        "overloaded": 0.0,  # nothing dropped, nothing unfinished
        "server_utilisation": 0.0, "bandwidth_reservation": 0.0,
    })


def test_ratios_divide_by_capacity_times_window():
    """A 2 s window halves the four ratios (and changes nothing per task); M and B enter separately."""
    out = MET.per_episode(episode(measured_s=2.0))
    assert_outputs(out, {
        **{k: v for k, v in BASE_EXPECTED.items() if "utilisation" not in k and k not in
           ("server_slot_occupancy", "bandwidth_reservation")},
        "server_utilisation": 0.25,  # 1.0 / (2 x 2)
        "server_compute_utilisation": 0.2,  # 0.8 / (2 x 2)
        "bandwidth_utilisation": 0.125,  # 2.5e5 / (1e6 x 2)
        "server_slot_occupancy": 0.375,  # 1.5 / (2 x 2)
        "bandwidth_reservation": 0.2,  # 4e5 / (1e6 x 2)
    })
    out = MET.per_episode(episode(server_capacity=4, bandwidth_bps=5e5, beta=10.0))
    assert_outputs(out, {
        "server_utilisation": 0.25,  # 1.0 / (4 x 1)
        "server_compute_utilisation": 0.2,  # 0.8 / 4
        "bandwidth_utilisation": 0.5,  # 2.5e5 / 5e5
        "server_slot_occupancy": 0.375,  # 1.5 / 4
        "bandwidth_reservation": 0.8,  # 4e5 / 5e5
        "utility": 0.67,  # 0.75 - 10 x 0.008
    })


def test_the_dtypes_finalize_produces():
    """int32 counts and float32 seconds as `finalize` returns them (jax arrays): same values to float32 precision."""
    m = MET.EpisodeMetrics(**{k: jnp.asarray(v, jnp.int32 if k in COUNTS or k == "server_capacity" else jnp.float32)
                              for k, v in BASE.items()})
    assert_outputs(MET.per_episode(m), BASE_EXPECTED, rtol=1e-6)


def test_per_episode_is_elementwise_over_a_batch():
    """[G, E] leaves: an undefined episode is NaN on its own and does not touch its neighbours."""
    m = episode(arrived=[[13, 3], [0, 13]], completed=[[10, 0], [0, 10]], unfinished=[[2, 0], [0, 2]],
                dropped=[[1, 3], [0, 1]], correct=[[9, 0], [0, 9]])
    out = MET.per_episode(m)
    assert out["accuracy"].shape == (2, 2)
    np.testing.assert_allclose(out["accuracy"][[0, 1], [0, 1]], [0.75, 0.75])
    assert np.isnan(out["accuracy"][0, 1]) and np.isnan(out["accuracy"][1, 0])
    np.testing.assert_allclose(out["accuracy_of_arrivals"][0], [9 / 13, 0.0])
    assert np.isnan(out["accuracy_of_arrivals"][1, 0])
    np.testing.assert_array_equal(out["overloaded"], [[1.0, 1.0], [0.0, 1.0]])


# ---- aggregation over episodes -----------------------------------------------------------------------------------

# Student-t quantiles t_{0.975, dof} from printed tables (not from scipy).
T975 = {1: 12.706204736, 3: 3.182446305, 4: 2.776445105, 15: 2.131449546}


def _four_plus_empty():
    """Grid [2, 5]. Point 0: four episodes with 10 entered tasks and 6, 7, 8, 9 correct, and a fifth where the 2
    arrivals were dropped (accuracy undefined). Point 1: one episode with entered tasks, four without."""
    arrived = [[10, 10, 10, 10, 2], [10, 2, 2, 2, 2]]
    completed = [[10, 10, 10, 10, 0], [10, 0, 0, 0, 0]]
    dropped = [[0, 0, 0, 0, 2], [0, 2, 2, 2, 2]]
    correct = [[6, 7, 8, 9, 0], [7, 0, 0, 0, 0]]
    z = np.zeros((2, 5))
    return episode(arrived=arrived, completed=completed, unfinished=np.zeros((2, 5), int), dropped=dropped,
                   correct=correct, offloaded_steps=z, executed_steps=np.full((2, 5), 10))


def test_summarize_mean_and_student_t_interval_by_hand():
    s = MET.summarize(_four_plus_empty())
    assert set(s) == OUTPUTS
    mean, half = s["accuracy"]
    assert mean.shape == half.shape == (2,)
    # Point 0, accuracy: the NaN episode is left out, n = 4 of 0.6, 0.7, 0.8, 0.9.
    #   mean = 3.0 / 4 = 0.75; deviations -0.15, -0.05, 0.05, 0.15; squares sum 0.0225+0.0025+0.0025+0.0225 = 0.05
    #   s = sqrt(0.05 / 3) = 0.1290994449; half = t_{0.975,3} s / sqrt(4) = 3.182446305 x 0.1290994449 / 2
    #     = 0.2054260
    assert mean[0] == pytest.approx(0.75, rel=1e-12)
    assert half[0] == pytest.approx(3.182446305 * math.sqrt(0.05 / 3) / 2, rel=1e-8)
    assert half[0] == pytest.approx(0.2054260, abs=1e-6)
    # Point 0, arrived: all 5 episodes count. 10, 10, 10, 10, 2: mean 42 / 5 = 8.4; deviations 1.6 (x4), -6.4;
    #   squares 4 x 2.56 + 40.96 = 51.2; s^2 = 51.2 / 4 = 12.8; s / sqrt(5) = sqrt(2.56) = 1.6;
    #   half = t_{0.975,4} x 1.6 = 2.776445105 x 1.6 = 4.442312168
    mean_arr, half_arr = s["arrived"]
    assert mean_arr[0] == pytest.approx(8.4, rel=1e-12)
    assert half_arr[0] == pytest.approx(4.442312168, rel=1e-8)
    # Point 1, accuracy: one defined episode (0.7): its value is the mean, and one sample has no interval.
    assert mean[1] == pytest.approx(0.7) and np.isnan(half[1])
    # Point 1, arrived: 10, 2, 2, 2, 2: mean 18 / 5 = 3.6; deviations 6.4, -1.6 (x4): s / sqrt(5) = 1.6 again.
    assert mean_arr[1] == pytest.approx(3.6) and half_arr[1] == pytest.approx(4.442312168, rel=1e-8)
    # Point 1, completed: 10, 0, 0, 0, 0: mean 2; deviations 8, -2 (x4); squares 64 + 4 x 4 = 80; s^2 = 80 / 4 = 20;
    #   s / sqrt(5) = sqrt(4) = 2; half = 2.776445105 x 2 = 5.55289021
    assert s["completed"][0][1] == pytest.approx(2.0) and s["completed"][1][1] == pytest.approx(5.55289021, rel=1e-8)
    # A constant metric (offload fraction 0 / 10 in every episode) has a zero-width interval.
    assert s["offload_fraction"][0][0] == 0.0 and s["offload_fraction"][1][0] == 0.0


def test_summarize_with_no_defined_episode_is_nan():
    m = episode(arrived=[3, 3], completed=[0, 0], unfinished=[0, 0], dropped=[3, 3], correct=[0, 0])
    mean, half = MET.summarize(m)["accuracy"]
    assert np.isnan(mean) and np.isnan(half)
    mean, half = MET.summarize(m)["arrived"]
    assert mean == 3.0 and half == 0.0  # two equal samples: s = 0


def test_t_half_width_uses_n_minus_1_degrees_of_freedom():
    # t s / sqrt(n) with the documented factors (docs/simulator.md "Intervals": 12.7 for 2 episodes, 2.13 for 16).
    assert MET.t_half_width(1.0, 2) == pytest.approx(T975[1] / math.sqrt(2), rel=1e-8)
    assert MET.t_half_width(2.0, 16) == pytest.approx(T975[15] * 2.0 / 4.0, rel=1e-8)
    assert MET.t_half_width(1.0, 4) == pytest.approx(T975[3] / 2.0, rel=1e-8)
    assert np.isnan(MET.t_half_width(1.0, 1)) and np.isnan(MET.t_half_width(1.0, 0))


def test_summarize_grid_and_the_summary_table_show_mean_and_interval():
    rows = MET.summarize_grid(_four_plus_empty(), [{"point": 0}, {"point": 1}])
    assert [r["point"] for r in rows] == [0, 1]
    assert rows[0]["accuracy_mean"] == pytest.approx(0.75)
    assert rows[0]["accuracy_ci95"] == pytest.approx(0.2054260, abs=1e-6)
    assert math.isnan(rows[1]["accuracy_ci95"])
    table = report.summary_table([dict(r, dataset="gsm8k", policy="prada", episodes=5) for r in rows[:1]])
    assert "75.0 ± 20.5" in table  # accuracy in percent: 100 x (0.75 ± 0.2054)
    assert "over 5 episodes" in table and "prada *" in table  # point 0 had a dropping episode: overloaded mean 0.2 > 0
    assert "prada * †" in table and "fixed cap" in table  # and BASE's fixed cap of 16 overflowed: flagged too
