"""Simulator API: determinism, grid = per-point runs, summaries, parameter validation, All-SLM sanity."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from sim_helpers import metrics_dict, mixed_table, tiny

from prada_jax import costs, sim
from prada_jax.sim import policies
from prada_jax.traces import pack_traces

TRACE = tiny(seed=5)
PACKED = pack_traces(TRACE)
TABLE = mixed_table(TRACE, seed=5)
CONFIG = sim.SimConfig(num_slots=150, warmup_slots=10, max_users=8, max_servers=4, drain_slots=100,
                       max_candidates=6)


def test_deterministic_by_key_and_sensitive_to_it():
    params = sim.make_params(arrival_rate=0.5, server_capacity=2)
    a = metrics_dict(sim.simulate(PACKED, TABLE, params, CONFIG, jax.random.PRNGKey(1)))
    b = metrics_dict(sim.simulate(PACKED, TABLE, params, CONFIG, jax.random.PRNGKey(1)))
    c = metrics_dict(sim.simulate(PACKED, TABLE, params, CONFIG, jax.random.PRNGKey(2)))
    assert a == b
    assert a != c


def test_grid_matches_single_runs_and_summary_shapes():
    grid = sim.param_grid(sim.make_params(arrival_rate=0.5), server_capacity=[1, 3], bandwidth_bps=[1e5, 4e7])
    m = sim.simulate_grid(PACKED, TABLE, grid, CONFIG, episodes=3, seed=9)
    assert np.shape(m.completed) == (4, 3)
    keys = sim.episode_keys(3, 9)
    for g in (0, 3):
        point = jax.tree.map(lambda x, g=g: x[g], grid)
        one = metrics_dict(sim.simulate(PACKED, TABLE, point, CONFIG, keys[2]))
        for name, value in one.items():
            np.testing.assert_allclose(np.asarray(getattr(m, name))[g, 2], value, rtol=1e-5)
    summary = sim.summarize(m)
    for name in ("accuracy", "processing_ms", "communication_ms", "queuing_ms", "end_to_end_ms", "offload_fraction",
                 "arrived", "completed", "unfinished", "dropped", "overloaded", "sojourn_ms", "alignment_ms", "server_utilisation", "bandwidth_utilisation",
                 "utility"):
        mean, half = summary[name]
        assert mean.shape == (4,) and half.shape == (4,), name
    np.testing.assert_array_equal(np.asarray(grid.server_capacity), [1, 1, 3, 3])  # first axis varies slowest
    np.testing.assert_allclose(np.asarray(grid.bandwidth_bps), [1e5, 4e7, 1e5, 4e7])


def test_batched_drain_freezes_each_episode_at_its_own_end():
    """The grid's slot loop runs until the last episode of the batch has drained (one loop for horizon and drain);
    every other episode must stop at its own end: same metrics as its single run, drains of different lengths."""
    grid = sim.param_grid(sim.make_params(arrival_rate=0.8, server_capacity=1), bandwidth_bps=[3e4, 4e7])
    m = sim.simulate_grid(PACKED, TABLE, grid, CONFIG, episodes=4, seed=3)
    drains = np.asarray(m.drain_s)
    assert len(np.unique(drains)) > 1 and drains.max() > 0.0, drains  # the batch's episodes end at different slots
    keys = sim.episode_keys(4, 3)
    for g in range(2):
        point = jax.tree.map(lambda x, g=g: x[g], grid)
        for e in range(4):
            one = metrics_dict(sim.simulate(PACKED, TABLE, point, CONFIG, keys[e]))
            for name, value in one.items():
                np.testing.assert_allclose(np.asarray(getattr(m, name))[g, e], value, rtol=1e-5, err_msg=name)


def test_all_slm_never_offloads_and_processing_matches_cost_model():
    # One user slot at a time, one arrival at most: every task runs alone, so the processing time of each
    # task is the sum of its local step times from the cost model.
    config = sim.SimConfig(num_slots=120, warmup_slots=0, max_users=1, max_servers=1, drain_slots=100)
    table = policies.all_slm_table(TRACE)
    params = sim.make_params(arrival_rate=0.3, server_capacity=1)
    m = metrics_dict(sim.simulate(PACKED, table, params, config, jax.random.PRNGKey(0)))
    assert m["offloaded_steps"] == 0 and m["communication_s"] == 0 and m["queuing_s"] == 0
    assert m["completed"] > 3
    per_problem = []
    for n in range(TRACE.num_problems):
        ctx, cached, total = int(TRACE.query_tokens[n]), 0, 0.0
        for k in range(int(TRACE.num_steps[n])):
            tok = int(TRACE.slm_step_tokens[n, k])
            total += float(costs.local_step_seconds(ctx, cached, tok, float(params.flops_slm)))
            ctx += tok
            cached = ctx
        per_problem.append(total)
    mean_proc = m["processing_s"] / m["completed"]
    assert min(per_problem) - 1e-9 <= mean_proc <= max(per_problem) + 1e-9


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(bandwidth_bps=-1.0), "bandwidth_bps"),
        (dict(server_capacity=0), "server_capacity"),
        (dict(server_capacity=5), "max_servers"),
        (dict(arrival_rate=-0.1), "arrival_rate"),
        (dict(arrival_rate=1e3), "max_arrivals_per_slot"),
        (dict(flops_slm=0.0), "flops_slm"),
    ],
)
def test_parameter_validation(overrides, match):
    config = dataclasses.replace(CONFIG, max_arrivals_per_slot=3)  # an explicit A_max is checked against lambda
    with pytest.raises(sim.SimParamsError, match=match):
        sim.validate_params(sim.make_params(**{"server_capacity": 2, "arrival_rate": 0.01, **overrides}), config)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(scheduler="greedy"), "scheduler"),
        (dict(num_slots=10, warmup_slots=10), "warmup_slots"),
        (dict(max_users=0), "max_users"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(sim.SimParamsError, match=match):
        sim.SimConfig(**kwargs)


def test_table_shape_is_checked():
    bad = policies.all_slm_table(tiny(num_problems=3, seed=1))
    with pytest.raises(ValueError, match="shape"):
        sim.simulate(PACKED, bad, sim.make_params(server_capacity=2), CONFIG, jax.random.PRNGKey(0))


def test_policy_builders():
    gap = np.asarray(policies.prm_gain(TRACE))
    for table in (policies.all_llm_table(TRACE), policies.prm_threshold_table(TRACE, 0.6),
                  policies.router_table(TRACE, 0.5), policies.random_table(TRACE, 0.3)):
        np.testing.assert_allclose(np.asarray(table.value_gap())[TRACE.step_mask], gap[TRACE.step_mask], rtol=1e-5,
                                   atol=1e-6)
    router = np.asarray(policies.router_table(TRACE, 0.5).nominate_prob)
    per_problem = (router > 0.5).any(axis=1)
    assert per_problem.sum() == round(0.5 * TRACE.num_problems)
    assert np.all((router > 0.5)[per_problem] | ~TRACE.step_mask[per_problem])  # whole task on one model
    rej = np.asarray(policies.prm_threshold_table(TRACE, 0.6).nominate_prob) > 0.5
    np.testing.assert_array_equal(rej, TRACE.step_mask & (TRACE.prm_after_slm < 0.6))


def test_slot_bits_are_jax_threefry_words():
    """draws._slot_bits hashes the words itself (unrolled threefry); they must be jax's words for every key and slot,
    inside jit and vmap (the random stream of every result depends on it)."""
    import jax.numpy as jnp

    from prada_jax.sim import draws

    keys = jax.random.split(jax.random.PRNGKey(7), 20)
    ts = jnp.array([0, 1, 2, 99, 1000, 65537, 2**31 - 1], jnp.int32)
    for total, need in ((247, 119), (183, 183), (3, 1)):
        def ours(key, t, total=total, need=need):
            return draws._slot_bits(key, t, total, need)

        def jaxs(key, t, total=total, need=need):
            return jax.random.bits(jax.random.fold_in(key, t), (total,), jnp.uint32)[:need]

        grid = jax.jit(jax.vmap(jax.vmap(ours, (None, 0)), (0, None)))(keys, ts)
        want = jax.jit(jax.vmap(jax.vmap(jaxs, (None, 0)), (0, None)))(keys, ts)
        np.testing.assert_array_equal(np.asarray(grid), np.asarray(want))
    one = draws.slot_draws(keys[3], 17, 3.0, 50, 8, 64, 18)  # eager, outside jit
    again = jax.jit(lambda k: draws.slot_draws(k, 17, 3.0, 50, 8, 64, 18))(keys[3])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_skipping_stage2_in_slots_without_candidates_changes_nothing(monkeypatch):
    """The batched rollout runs Stage 2 only in slots where some episode of the batch has a candidate
    (run._skip_idle_stage2). The same batch with Stage 2 run in every slot gives the same metrics: a light load
    (many slots without a candidate anywhere in the batch) next to a heavy one, and a table that nominates nothing."""
    from prada_jax.sim import run

    config = dataclasses.replace(CONFIG, num_slots=97)  # a config no other test compiles
    grid = sim.param_grid(sim.make_params(server_capacity=2), arrival_rate=[0.02, 0.9], bandwidth_bps=[1e5, 4e7])
    keys = sim.episode_keys(3, 11)
    silent = policies.table_from_value_gap(np.zeros_like(TABLE.nominate_prob), np.zeros_like(TABLE.advantage),
                                           TABLE.server_seconds)
    resolved = run._check(PACKED, TABLE, grid, config)

    def always_decide(observe_b, decide_b, apply_b):
        def step_b(params, keys, state, t):
            obs = observe_b(params, keys, state, t)
            return apply_b(params, state, obs, *decide_b(obs), t)
        return step_b

    def batches():  # traced afresh, so a patched run._skip_idle_stage2 takes effect
        fn = jax.jit(lambda table: run._batched_rollout(PACKED, table, grid, resolved, keys, True))
        return {"mixed": jax.device_get(fn(TABLE)), "silent": jax.device_get(fn(silent))}

    skipped = batches()
    monkeypatch.setattr(run, "_skip_idle_stage2", always_decide)
    for name, full in batches().items():
        assert np.asarray(full.completed).sum() > 0
        for field in full.__dataclass_fields__:
            want, got = np.asarray(getattr(full, field)), np.asarray(getattr(skipped[name], field))
            if np.issubdtype(want.dtype, np.integer) or want.dtype == bool:
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {field}")
            else:  # float32 sums of two programs: equal up to rounding (bit-identical at XLA's default level)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, err_msg=f"{name} {field}")
