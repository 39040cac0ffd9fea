"""The gymnax environment `prada-multiuser-v0` (prada_jax.env): API, parity with simulate_grid, invariants under
random actions, the reward identity, parameter validation, and the learned scheduler's policy."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sim_helpers import mixed_table, tiny

from prada_jax import env as penv
from prada_jax import sim
from prada_jax.env import policy as POL
from prada_jax.env import table as T
from prada_jax.env.multiuser import EnvParamsError, build
from prada_jax.sim import metrics as MET
from prada_jax.sim.state import SERVE, UPLOAD
from prada_jax.traces import pack_traces

TRACE = tiny(seed=5)
PACKED = pack_traces(TRACE)
TABLE = mixed_table(TRACE, seed=5)
CONFIG = sim.SimConfig(num_slots=60, warmup_slots=6, drain_slots=120, max_users=8, max_servers=4, max_candidates=4)
PARAMS = sim.make_params(arrival_rate=0.6, server_capacity=2, bandwidth_bps=2e5)
ENV, ENV_PARAMS = build(PACKED, TABLE, CONFIG, PARAMS)
STEPS = CONFIG.num_slots + CONFIG.drain_slots
EPISODES = 3


@functools.partial(jax.jit, static_argnames=("mode",))
def _episodes(keys, mode):
    """Episodes stepped with step_env (frozen after their end): mode "theorem2" (the projection of Theorem 2's
    decisions) or "random" (uniform random actions).
    Returns final metrics, summed rewards and per-step invariant records."""
    def one(key):
        _, state = ENV.reset_env(key, ENV_PARAMS)

        def body(carry, k):
            state, done, ret = carry
            if mode == "theorem2":
                out = ENV.step_env(k, state, T.theorem2_action(state.table), ENV_PARAMS)
            else:
                out = ENV.step_env(k, state, ENV.action_space(ENV_PARAMS).sample(k), ENV_PARAMS)
            _, new, reward, d, info = out
            keep = ~done
            state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
            u = state.sim.users
            rec = {"held_bw": jnp.sum(jnp.where(u.phase == UPLOAD, u.bandwidth, 0.0)),
                   "inflight": jnp.sum((u.phase == UPLOAD) | (u.phase == SERVE)),
                   "peak_bw": state.sim.totals.peak_held_bandwidth, "peak_inflight": state.sim.totals.peak_in_service}
            return (state, done | d, ret + jnp.where(keep, reward, 0.0)), rec

        (state, done, ret), recs = jax.lax.scan(body, (state, jnp.bool_(False), jnp.float32(0.0)),
                                                jax.random.split(jax.random.fold_in(key, 1), STEPS))
        return MET.finalize(state.sim, state.time, state.sim_params, ENV.config), ret, done, recs

    return jax.vmap(one)(keys)


@functools.cache
def _run(mode):
    return jax.device_get(_episodes(sim.episode_keys(EPISODES, 0), mode))


def test_reset_and_step_jit_and_vmap_with_spaces_and_auto_reset():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    obs, state = jax.vmap(ENV.reset, in_axes=(0, None))(keys, ENV_PARAMS)
    assert obs.shape == (4,) + ENV.observation_space(ENV_PARAMS).shape == (4, CONFIG.max_candidates, T.NUM_FEATURES)
    assert np.all(np.isfinite(obs))
    action = jax.vmap(ENV.action_space(ENV_PARAMS).sample)(keys)
    assert bool(jnp.all(jax.vmap(ENV.action_space(ENV_PARAMS).contains)(action)))
    obs2, state2, reward, term, trunc, info = jax.vmap(ENV.step, in_axes=(0, 0, 0, None))(keys, state, action,
                                                                                        ENV_PARAMS)
    assert obs2.shape == obs.shape and reward.shape == (4,) and term.dtype == bool and "final_observation" in info
    np.testing.assert_array_equal(state2.time, 1)
    # Automatic reset: a state at its last slot comes back as a fresh episode (time 0).
    late = state.replace(time=jnp.full((4,), STEPS, jnp.int32))
    _, after, _, term, trunc, _ = jax.vmap(ENV.step, in_axes=(0, 0, 0, None))(keys, late, action, ENV_PARAMS)
    assert bool(jnp.all(term | trunc)) and np.all(np.asarray(after.time) == 0)


def test_theorem2_driven_environment_reproduces_simulate_grid_metric_by_metric():
    ref = jax.device_get(sim.simulate_grid(PACKED, TABLE, sim.stack_params([PARAMS]), ENV.config, EPISODES, 0))
    m, _, done, _ = _run("theorem2")
    assert np.all(done)
    for name in m.__dataclass_fields__:
        got, want = np.asarray(getattr(m, name)), np.asarray(getattr(ref, name))[0]
        if np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:  # float sums in another order (vmap over episodes here, nested vmaps there): 1 ulp apart
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9, err_msg=name)
    assert np.all(ref.completed > 0)


@pytest.mark.parametrize("mode", ["random", "theorem2"])
def test_reward_sum_equals_the_reported_utility_and_invariants_hold(mode):
    m, ret, done, recs = _run(mode)
    assert np.all(done)
    utility = MET.per_episode(m)["utility"]
    np.testing.assert_allclose(ret, utility, rtol=1e-5, atol=1e-6)
    bw = float(PARAMS.bandwidth_bps)
    assert np.all(recs["held_bw"] <= bw * (1 + 1e-5)) and np.all(recs["peak_bw"] <= bw * (1 + 1e-5))
    assert np.all(recs["inflight"] <= int(PARAMS.server_capacity))
    assert np.all(recs["peak_inflight"] <= int(PARAMS.server_capacity))
    np.testing.assert_array_equal(m.arrived, m.completed + m.unfinished + m.dropped)  # no task lost
    assert np.all(m.correct <= m.completed)
    assert np.all(m.sojourn_s >= m.processing_s + m.communication_s + m.queuing_s - 1e-6)  # alignment >= 0


def test_random_actions_use_the_server_and_differ_from_theorem2():
    m_rand, *_ = _run("random")
    m_t2, *_ = _run("theorem2")
    assert np.sum(m_rand.offloaded_steps) > 0
    assert not np.array_equal(m_rand.queuing_s, m_t2.queuing_s)


def test_projection_makes_any_action_legal():
    _, state = ENV.reset(jax.random.PRNGKey(3), ENV_PARAMS)
    view = ENV.view(state).replace(free_slots=jnp.int32(1), available_bw=jnp.float32(1e5))
    c = state.table.cands
    table = state.table.replace(
        cands=c.replace(valid=jnp.array([1, 1, 1, 0], bool), feasible=jnp.array([1, 0, 1, 1], bool)),
        b=jnp.full((4,), 10.0), never_clears=jnp.array([0, 0, 0, 0], bool),
        theorem2=state.table.theorem2.replace(decision=jnp.zeros((4,), jnp.int32), log10_mu=jnp.float32(-jnp.inf)))
    project = jax.jit(T.project)
    decision, bw = project(view, table, jnp.full((4,), 2, jnp.int32))
    # Row 1 has no usable channel: it queues; of rows 0 and 2 only the oldest gets the one free slot; row 3 is padding.
    np.testing.assert_array_equal(np.asarray(decision), [2, 1, 1, 0])
    # Theorem 2 admitted nobody (price 0): the admitted set fills the available bandwidth at its own price.
    np.testing.assert_allclose(np.asarray(bw), [1e5 / (1 + 1e-6), 0, 0, 0], rtol=1e-6)
    # A queue that would never be served runs locally.
    decision, _ = project(view, table.replace(never_clears=jnp.array([0, 1, 0, 0], bool)), jnp.full((4,), 1))
    np.testing.assert_array_equal(np.asarray(decision), [1, 0, 1, 0])


def test_env_params_are_validated_with_one_line_errors():
    with pytest.raises(EnvParamsError, match="EnvParams.capacity_range"):
        build(PACKED, TABLE, CONFIG, PARAMS, randomize=True, capacity_range=(1, 99))
    with pytest.raises(EnvParamsError, match="EnvParams.bandwidth_range"):
        build(PACKED, TABLE, CONFIG, PARAMS, randomize=True, bandwidth_range=(1e7, 1e5))
    with pytest.raises(sim.SimParamsError, match="bandwidth_bps"):
        build(PACKED, TABLE, CONFIG, sim.make_params(bandwidth_bps=-1.0))
    with pytest.raises(EnvParamsError, match="unknown EnvParams fields"):
        build(PACKED, TABLE, CONFIG, PARAMS, beta_rnage=(1, 2))
    with pytest.raises(EnvParamsError, match="unknown environment"):
        penv.make("prada-multiuser-v9")


def test_domain_randomisation_draws_within_the_ranges():
    env, params = build(PACKED, TABLE, CONFIG, PARAMS, randomize=True, bandwidth_range=(1e5, 1e8),
                        capacity_range=(1, 4), arrival_rate_range=(0.5, 1.0), beta_range=(1.0, 100.0))
    sp = jax.jit(jax.vmap(env.sample_sim_params, in_axes=(0, None)))(jax.random.split(jax.random.PRNGKey(0), 64), params)
    assert np.all((sp.bandwidth_bps >= 1e5 * 0.999) & (sp.bandwidth_bps <= 1e8 * 1.001))
    assert set(np.asarray(sp.server_capacity).tolist()) <= {1, 2, 3, 4} and len(set(np.asarray(sp.server_capacity))) > 1
    assert np.all((sp.arrival_rate >= 0.5) & (sp.arrival_rate <= 1.0)) and np.all(sp.snr_db == PARAMS.snr_db)


def test_make_loads_a_shipped_dataset():
    env, params = penv.make("prada-multiuser-v0", dataset="gsm8k", config={"max_users": 16, "max_candidates": 4})
    assert env.name == "prada-multiuser-v0" and params.max_steps_in_episode == env.config.num_slots + env.config.drain_slots
    assert env.observation_space(params).shape == (4, T.NUM_FEATURES)


# --- the learned scheduler's policy ---------------------------------------------------------------------------


def _weights(seed=0, zero_head=False):
    obs = jnp.zeros((CONFIG.max_candidates, T.NUM_FEATURES))
    params = POL.CandidatePolicy().init(jax.random.PRNGKey(seed), obs)["params"]
    if not zero_head:  # a non-trivial residual: the untrained head is zero-initialised
        params = dict(params, head_out=jax.tree.map(
            lambda x: 3.0 * jax.random.normal(jax.random.PRNGKey(seed + 1), x.shape), params["head_out"]))
    return params


def test_policy_is_permutation_equivariant_and_masks_padding():
    params = _weights()
    obs = np.array(jax.random.normal(jax.random.PRNGKey(2), (CONFIG.max_candidates, T.NUM_FEATURES)))
    obs[:, T.VALID_COLUMN] = [1, 1, 1, 0]
    obs[:, len(T.ROW_FEATURES):] = obs[0, len(T.ROW_FEATURES):]  # global features are the same on every row
    perm = np.array([2, 0, 1, 3])
    logits, value = POL.CandidatePolicy().apply({"params": params}, obs)
    logits_p, value_p = POL.CandidatePolicy().apply({"params": params}, obs[perm])
    np.testing.assert_allclose(logits_p, logits[perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value_p, value, rtol=1e-5, atol=1e-6)
    changed = obs.copy()
    changed[3, : T.VALID_COLUMN] = 99.0  # a padding row does not move the valid rows' logits
    np.testing.assert_allclose(POL.CandidatePolicy().apply({"params": params}, changed)[0][:3], logits[:3], rtol=1e-5,
                               atol=1e-5)


def test_policy_matches_its_float64_numpy_twin():
    from reference_sim import learned_logits

    params = _weights()
    obs = np.array(jax.random.normal(jax.random.PRNGKey(4), (CONFIG.max_candidates, T.NUM_FEATURES)))
    obs[:, T.VALID_COLUMN] = [1, 0, 1, 1]
    obs[:, len(T.ROW_FEATURES):] = obs[0, len(T.ROW_FEATURES):]
    logits, _ = POL.CandidatePolicy().apply({"params": params}, obs)
    np.testing.assert_allclose(logits, learned_logits(params, obs.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_learned_scheduler_with_a_zero_residual_is_theorem2(tmp_path, monkeypatch):
    path = tmp_path / "zero.npz"
    POL.save_weights(str(path), _weights(zero_head=True))
    monkeypatch.setenv("PRADA_LEARNED_SCHEDULER", str(path))
    grid = sim.stack_params([PARAMS])
    config = dataclasses.replace(ENV.config, scheduler="learned")
    learned = jax.device_get(sim.simulate_grid(PACKED, TABLE, grid, config, EPISODES, 0))
    prada = jax.device_get(sim.simulate_grid(PACKED, TABLE, grid, ENV.config, EPISODES, 0))  # compiled above
    for name in learned.__dataclass_fields__:
        np.testing.assert_allclose(np.asarray(getattr(learned, name)), np.asarray(getattr(prada, name)), rtol=2e-6,
                                   err_msg=name)


def test_learned_scheduler_matches_its_oracle_twin(tmp_path, monkeypatch):
    from reference_sim import simulate_reference

    path = tmp_path / "random_head.npz"
    POL.save_weights(str(path), _weights(seed=7))
    monkeypatch.setenv("PRADA_LEARNED_SCHEDULER", str(path))
    config = dataclasses.replace(ENV.config, scheduler="learned", num_slots=40, drain_slots=80)
    key = jax.random.PRNGKey(11)
    got = jax.device_get(sim.simulate(PACKED, TABLE, PARAMS, config, key))
    want = simulate_reference(TRACE, TABLE, PARAMS, config, key)
    for name in ("arrived", "completed", "unfinished", "dropped", "correct", "offloaded_steps", "executed_steps"):
        assert int(getattr(got, name)) == want[name], name
    for name in ("processing_s", "communication_s", "queuing_s", "sojourn_s"):
        np.testing.assert_allclose(float(getattr(got, name)), want[name], rtol=1e-4, atol=1e-7, err_msg=name)


def test_gae_and_joint_row_log_prob_by_hand():
    from prada_jax.env.ppo import gae, row_log_prob

    # Two steps, one env, gamma = 0.5, lambda = 1: delta_1 = 1 + 0.5 * 4 - 2 = 1, A_1 = 1;
    # delta_0 = 0 + 0.5 * 2 - 1 = 0, A_0 = 0 + 0.5 * A_1 = 0.5. An episode end after step 0 cuts the bootstrap.
    adv, target = gae(jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [2.0]]), jnp.array([[0.0], [0.0]]),
                      jnp.array([4.0]), 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [0.5, 1.0])
    np.testing.assert_allclose(np.asarray(target)[:, 0], [1.5, 3.0])
    adv, _ = gae(jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [2.0]]), jnp.array([[1.0], [0.0]]),
                 jnp.array([4.0]), 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [-1.0, 1.0])
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]))
    logp, ent = row_log_prob(logits, jnp.array([0, 2, 1]), jnp.array([True, True, False]))
    np.testing.assert_allclose(float(logp), np.log(0.5) + np.log(0.8), rtol=1e-6)  # the padding row is ignored
    def h(p):
        return -sum(x * np.log(x) for x in p)
    np.testing.assert_allclose(float(ent), h([0.5, 0.25, 0.25]) + h([0.1, 0.1, 0.8]), rtol=1e-6)
