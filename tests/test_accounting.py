"""Issue 10, simulator half: every counted task is accounted for, FIFO is FIFO, intervals are Student t,
the arrival draw never drops silently, and a channel that never clears makes PRADA exactly All-SLM."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_sim import QUEUED as O_QUEUED
from reference_sim import READY as O_READY
from reference_sim import User, fifo_order
from sim_helpers import metrics_dict, mixed_table, tiny

from prada_jax import sim
from prada_jax.sim import draws as D
from prada_jax.sim import metrics as MET
from prada_jax.sim import policies
from prada_jax.sim import schedulers as SCHED
from prada_jax.sim import stage2 as S2
from prada_jax.sim.state import QUEUED, READY, init_state
from prada_jax.traces import pack_traces

TRACE = tiny(seed=11)
PACKED = pack_traces(TRACE)
TABLE = mixed_table(TRACE, seed=11)
CONFIG = sim.SimConfig(num_slots=200, warmup_slots=20, max_users=8, max_servers=4, drain_slots=150, max_candidates=6)


@pytest.mark.parametrize("scheduler", ["prada", "fifo", "random"])
def test_every_counted_task_is_completed_unfinished_or_dropped(scheduler):
    config = dataclasses.replace(CONFIG, scheduler=scheduler)
    grid = sim.stack_params([sim.make_params(arrival_rate=0.2, server_capacity=3),
                             sim.make_params(arrival_rate=2.0, server_capacity=1, bandwidth_bps=1e5)])
    m = jax.device_get(sim.simulate_grid(PACKED, TABLE, grid, config, episodes=3, seed=1))
    np.testing.assert_array_equal(m.arrived, m.completed + m.unfinished + m.dropped)
    assert np.all(m.correct <= m.completed)  # unfinished tasks are never correct
    s = sim.summarize(m)
    assert s["overloaded"][0][1] == 1.0  # the overloaded point says so
    assert np.all(s["sojourn_ms"][0] >= s["end_to_end_ms"][0] - 1e-6)  # alignment >= 0
    np.testing.assert_allclose(s["alignment_ms"][0], s["sojourn_ms"][0] - s["end_to_end_ms"][0], rtol=1e-9)


def test_stable_run_drains_completely_and_counts_nothing_after_the_horizon():
    config = dataclasses.replace(CONFIG, scheduler="prada")
    m = metrics_dict(sim.simulate(PACKED, TABLE, sim.make_params(arrival_rate=0.1, server_capacity=4), config,
                                  jax.random.PRNGKey(3)))
    assert m["unfinished"] == 0 and m["dropped"] == 0
    assert m["arrived"] == m["completed"] > 5
    assert 0 <= m["drain_s"] < config.drain_slots * config.slot_seconds  # stopped once everything finished


def test_no_feasible_upload_makes_prada_exactly_all_slm():
    """gamma_th far above any SNR: nominees cannot upload and must not wait for ever (a stuck queue)."""
    config = dataclasses.replace(CONFIG, scheduler="prada")
    params = sim.make_params(arrival_rate=0.5, server_capacity=3, snr_threshold_db=200.0)
    key = jax.random.PRNGKey(5)
    prada = metrics_dict(sim.simulate(PACKED, TABLE, params, config, key))
    all_slm = metrics_dict(sim.simulate(PACKED, policies.all_slm_table(TRACE), params, config, key))
    stage2_inputs = ("max_candidates_seen", "candidate_cap")  # PRADA's table nominates (to no avail), all-SLM's not
    assert {k: v for k, v in prada.items() if k not in stage2_inputs} == \
        {k: v for k, v in all_slm.items() if k not in stage2_inputs}
    assert prada["unfinished"] == 0 and prada["offloaded_steps"] == 0 and prada["queuing_s"] == 0
    # beta = 0 (queueing free) must not turn "never feasible" into "queue for ever" (beta * inf is NaN).
    zero = metrics_dict(sim.simulate(PACKED, TABLE, sim.make_params(arrival_rate=0.5, server_capacity=3,
                                                                    snr_threshold_db=200.0, beta=0.0), config, key))
    assert zero["queuing_s"] == 0 and zero["unfinished"] == 0


def test_fifo_orders_by_the_current_request_entry_jax_and_oracle():
    """A fresh nominee whose *task* arrived long ago must not overtake a request already waiting."""
    t = 40
    users = init_state(3, TRACE.max_steps).users
    users = users.replace(
        phase=jnp.array([QUEUED, READY, 0], jnp.int32),
        queue_entry=jnp.array([30, 2, 0], jnp.int32),  # user 1's task arrived at slot 2, user 0 queued at slot 30
        mean_snr=jnp.ones(3, jnp.float32) * 100.0,
    )
    cand = jnp.array([True, True, False])
    key = SCHED.fifo_queue_key(users, t)
    decision, _ = S2.fifo_stage2(cand, jnp.ones(3, bool), key, 1, 1e7, 1.0)
    assert list(np.asarray(decision)) == [S2.IMMEDIATE_D, S2.QUEUE_D, S2.LOCAL_D]
    # The oracle's own FIFO rule agrees.
    o_users = [User(), User()]
    o_users[0].phase, o_users[0].entry = O_QUEUED, 30
    o_users[1].phase, o_users[1].entry = O_READY, 2
    assert fifo_order([1, 0], o_users, t) == [0, 1]


def test_student_t_half_width_by_hand():
    # t_{0.975} with 1 and 15 degrees of freedom: 12.7062, 2.1314.
    np.testing.assert_allclose(MET.t_half_width(1.0, 2), 12.7062 / np.sqrt(2), rtol=1e-4)
    np.testing.assert_allclose(MET.t_half_width(2.0, 16), 2.1314 * 2.0 / 4.0, rtol=1e-4)
    assert np.isnan(MET.t_half_width(1.0, 1))
    metrics = sim.simulate_grid(PACKED, TABLE, sim.stack_params([sim.make_params(arrival_rate=0.3, server_capacity=3)]),
                                dataclasses.replace(CONFIG, scheduler="prada"), episodes=4, seed=2)
    acc = MET.per_episode(jax.device_get(metrics))["accuracy"][0]
    mean, half = sim.summarize(metrics)["accuracy"]
    np.testing.assert_allclose(half[0], 3.1824 * np.std(acc, ddof=1) / 2.0, rtol=1e-4)


def test_poisson_draw_is_exact_to_its_support_and_never_drops_silently():
    assert D.required_max_arrivals(3.0) == 18 and D.required_max_arrivals(0.5) == 9
    assert D.arrival_tail_mass(3.0, 18) <= D.ARRIVAL_TAIL_TOLERANCE < D.arrival_tail_mass(3.0, 17)
    u = jnp.array([0.0, 0.5, 1.0 - 2.0**-24], jnp.float32)
    counts = jax.vmap(lambda x: D.poisson_inverse_cdf(x, 3.0, 18))(u)
    assert int(counts[-1]) <= 18 and int(counts[0]) == 0  # the largest float32 uniform below 1 stays in range
    # the truncated, renormalised draw has the Poisson pmf on its support
    grid = (jnp.arange(200_000, dtype=jnp.float32) + 0.5) / 200_000
    hist = np.bincount(np.asarray(jax.vmap(lambda x: D.poisson_inverse_cdf(x, 3.0, 18))(grid)), minlength=19)
    from scipy.stats import poisson

    np.testing.assert_allclose(hist / hist.sum(), poisson.pmf(np.arange(19), 3.0), atol=2e-5)
    # an explicit A_max too small for lambda is refused; None is resolved
    with pytest.raises(sim.SimParamsError, match="max_arrivals_per_slot"):
        sim.simulate(PACKED, TABLE, sim.make_params(arrival_rate=3.0, server_capacity=3),
                     dataclasses.replace(CONFIG, max_arrivals_per_slot=12), jax.random.PRNGKey(0))
    resolved = sim.params.resolve_config(sim.make_params(arrival_rate=3.0), CONFIG)
    assert resolved.max_arrivals_per_slot == 18


def test_more_server_slots_than_user_slots_runs():
    config = dataclasses.replace(CONFIG, max_users=4, max_servers=9, max_candidates=4)
    m = metrics_dict(sim.simulate(PACKED, TABLE, sim.make_params(server_capacity=9, arrival_rate=0.3), config,
                                  jax.random.PRNGKey(0)))
    assert m["arrived"] == m["completed"] + m["unfinished"] + m["dropped"]


def test_utilisations_measure_use_not_reservation():
    config = dataclasses.replace(CONFIG, scheduler="fifo")
    s = sim.summarize(sim.simulate_grid(PACKED, policies.all_llm_table(TRACE),
                                        sim.stack_params([sim.make_params(arrival_rate=0.2, server_capacity=4)]),
                                        config, episodes=2, seed=0))
    assert 0 < s["bandwidth_utilisation"][0][0] < s["bandwidth_reservation"][0][0]
    assert 0 < s["server_compute_utilisation"][0][0] <= s["server_utilisation"][0][0] <= s["server_slot_occupancy"][0][0]


def test_littles_law_for_the_sojourn_time():
    """Sum of sojourn times = area under the number-in-system curve (each task's last slot is counted at
    arrival-inclusive, departure-inclusive), for a fully drained run without warm-up."""
    config = dataclasses.replace(CONFIG, scheduler="prada", warmup_slots=0)
    m, rec = sim.simulate_recorded(PACKED, TABLE, sim.make_params(arrival_rate=0.4, server_capacity=2), config,
                                   jax.random.PRNGKey(9))
    m, rec = jax.device_get((m, rec))
    assert int(m.unfinished) == 0 and int(m.completed) > 20
    area = float(np.sum(rec.in_system[rec.active])) + int(m.completed)  # slots in system, departure slot included
    np.testing.assert_allclose(float(m.sojourn_s), area * config.slot_seconds, rtol=1e-5)
    s = sim.summarize(jax.tree.map(lambda x: np.asarray(x)[None], m))
    total = s["processing_ms"][0] + s["communication_ms"][0] + s["queuing_ms"][0] + s["alignment_ms"][0]
    np.testing.assert_allclose(total, s["sojourn_ms"][0], rtol=1e-9)
    assert s["alignment_ms"][0] >= 0


def test_every_registered_scheduler_has_an_oracle_twin_with_the_same_protocol():
    from reference_sim import ORACLE_SCHEDULERS

    assert set(ORACLE_SCHEDULERS) == set(sim.SCHEDULERS)
    for name, scheduler in sim.SCHEDULERS.items():
        assert ORACLE_SCHEDULERS[name][1] == scheduler.protocol, name


def test_step_uniforms_from_task_seeds_are_uniform_and_match_the_oracle_twin():
    from reference_sim import step_uniform_np

    seeds = jax.random.bits(jax.random.PRNGKey(0), (4000,), jnp.uint32)
    u = np.asarray(jax.vmap(lambda s: jax.vmap(lambda k: D.step_uniform(s, k))(jnp.arange(8)))(seeds))
    assert u.min() >= 0.0 and u.max() < 1.0
    from scipy.stats import kstest

    assert kstest(u.reshape(-1), "uniform").pvalue > 1e-3  # 32,000 draws
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.05  # steps of a task are not correlated
    for s in np.asarray(seeds[:20]):
        for k in range(8):
            assert float(D.step_uniform(jnp.uint32(s), k)) == step_uniform_np(int(s), k)
