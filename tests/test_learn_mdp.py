"""The Stage-1 MDP against hand / NumPy computations: costs D, reward eq. 21, returns eqs. 20/22, TD target eq. 23."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_learn_toy import make_toy_trace

from prada_jax import constants as C
from prada_jax.learn import mdp as M
from prada_jax.learn import ppo
from prada_jax.traces import pack_traces


@pytest.fixture(scope="module")
def toy():
    trace = make_toy_trace(num_problems=12, max_steps=5, seed=3)
    return trace, M.make_mdp(trace)


def test_reference_costs_by_hand(toy):
    trace, mdp = toy
    n = 0  # has max_steps steps
    o_s, v_s, o_l, v_l = C.SLM_ARCH.hidden, C.SLM_ARCH.layers, C.LLM_ARCH.hidden, C.LLM_ARCH.layers
    ctx = int(trace.query_tokens[n])
    for k in range(trace.num_steps[n]):
        ns, nl = int(trace.slm_step_tokens[n, k]), int(trace.llm_step_tokens[n, k])
        prefill_q = v_s * (2 * ctx**2 * o_s + 2 * ctx * o_s + 4 * ctx * o_s**2) if k == 0 else 0.0  # eq. 14
        ts = (prefill_q + v_s * (ns * o_s**2 + o_s * ns * (2 * ctx + ns - 1) / 2)) / C.FLOPS_SLM  # eq. 16
        prefill_ctx = v_l * (2 * ctx**2 * o_l + 2 * ctx * o_l + 4 * ctx * o_l**2)  # eq. 14, full server prefill
        tl = (prefill_ctx + v_l * (nl * o_l**2 + o_l * nl * (2 * ctx + nl - 1) / 2)) / C.FLOPS_LLM
        np.testing.assert_allclose(mdp.cost[n, k], [ts, tl], rtol=1e-5)
        ctx += ns
    assert np.all(np.asarray(mdp.cost)[~trace.step_mask] == 0)


def test_reward_eq21_and_returns_telescope(toy):
    trace, mdp = toy
    beta = 7.0
    actions = jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, trace.step_mask.shape).astype(jnp.int32)
    r = np.asarray(M.rewards(mdp, actions, beta))
    prm = np.asarray(M.path_prm(mdp, actions))
    a = np.asarray(actions)
    for n in range(trace.num_problems):
        score = trace.prm_context[n, 0]  # PRM(x_0)
        spent = 0.0
        for k in range(trace.num_steps[n]):
            after = [trace.prm_after_slm, trace.prm_after_llm][a[n, k]][n, k]
            nxt = score + after - trace.prm_context[n, k]  # additive transfer of the step's PRM gain
            d = float(mdp.cost[n, k, a[n, k]])
            np.testing.assert_allclose(r[n, k], nxt - score - beta * d, atol=1e-6)  # eq. 21
            np.testing.assert_allclose(prm[n, k], score, atol=1e-6)
            score, spent = nxt, spent + d
        assert np.all(r[n, trace.num_steps[n] :] == 0)
        g20 = score - trace.prm_context[n, 0] - beta * spent  # eq. 20
        np.testing.assert_allclose(M.coarse_return(mdp, actions, beta)[n], g20, atol=1e-5)
        np.testing.assert_allclose(r[n].sum(), g20, atol=1e-5)  # eq. 22


def test_all_slm_path_follows_reference_prm_on_consistent_trace(toy):
    trace, mdp = toy
    prm = np.asarray(M.path_prm(mdp, jnp.zeros(trace.step_mask.shape, jnp.int32)))
    m = trace.step_mask
    np.testing.assert_allclose(prm[:, :-1][m], trace.prm_context[m], atol=1e-6)
    last = trace.num_steps - 1
    np.testing.assert_allclose(prm[:, -1], trace.prm_after_slm[np.arange(trace.num_problems), last], atol=1e-6)


def test_n_step_targets_match_loop():
    rng = np.random.default_rng(0)
    num_steps = np.array([5, 2, 4, 1])
    mask = np.arange(5)[None] < num_steps[:, None]
    r, v = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    g = np.asarray(M.n_step_targets(jnp.asarray(r), jnp.asarray(v), jnp.asarray(mask), 3))
    for n in range(4):
        for k in range(5):
            if not mask[n, k]:
                assert g[n, k] == 0
                continue
            end = num_steps[n]
            ref = sum(r[n, j] for j in range(k, min(k + 3, end))) + (v[n, k + 3] if k + 3 < end else 0.0)
            np.testing.assert_allclose(g[n, k], ref, rtol=1e-5, atol=1e-6)


def test_rollout_batch_targets_match_numpy(toy):
    trace, mdp = toy
    cfg = ppo.PPOConfig(batch_steps=int(trace.step_mask.sum()), hidden=(16, 16, 16))
    trainer = ppo.make_trainer(cfg)
    st = jax.jit(trainer.init)(jax.random.PRNGKey(0), mdp)
    beta = 5.0
    roll = jax.jit(lambda p, v, m, k: ppo.rollout_batch(cfg, trainer.policy_net, trainer.value_net, p, v, beta, m, k))
    ro = jax.device_get(roll(st.policy, st.value, mdp, jax.random.PRNGKey(1)))
    starts = set(zip(np.asarray(ro["problem"]).tolist(), np.asarray(ro["step"]).tolist()))
    assert starts == set(zip(*np.nonzero(trace.step_mask)))  # every real step exactly once
    values = np.asarray(trainer.value_net.apply(st.value, mdp.obs))
    rt = np.asarray(M.reward_table(mdp, beta))
    for i, (n, k) in enumerate(zip(ro["problem"], ro["step"])):
        end = trace.num_steps[n]
        acts = ro["actions"][i]
        ref = sum(rt[n, k + j, acts[j]] for j in range(3) if k + j < end) + (values[n, k + 3] if k + 3 < end else 0.0)
        np.testing.assert_allclose(ro["targets"][i], ref, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ro["v0"][i], values[n, k], rtol=1e-5, atol=1e-6)


def test_optimal_actions_match_brute_force(toy):
    trace, mdp = toy
    beta = 10.0
    opt = np.asarray(M.optimal_actions(mdp, beta))
    for n in range(4):
        steps = int(trace.num_steps[n])
        best, best_a = -np.inf, None
        for seq in itertools.product([0, 1], repeat=steps):
            a = np.zeros((trace.num_problems, trace.max_steps), np.int32)
            a[n, :steps] = seq
            ret = float(M.coarse_return(mdp, jnp.asarray(a), beta)[n])
            if ret > best:
                best, best_a = ret, seq
        assert tuple(opt[n, :steps]) == best_a


def test_make_mdp_uses_given_stats_and_zero_padding():
    trace = make_toy_trace(num_problems=8, seed=1)
    packed = pack_traces(trace)
    mean, std = M.feature_stats(packed)
    obs = np.asarray(M.make_mdp(packed).obs)
    m = trace.step_mask
    np.testing.assert_allclose(obs[m].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(obs[m].std(0), 1.0, atol=1e-4)
    assert np.all(obs[~m] == 0)
    shifted = np.asarray(M.make_mdp(packed, stats=(mean + 1.0, std)).obs)
    np.testing.assert_allclose(shifted[m], obs[m] - 1.0 / np.asarray(std), atol=1e-5)


def test_split_problems_is_deterministic_and_sized():
    a, b = M.split_problems(50, 0.2, seed=4), M.split_problems(50, 0.2, seed=4)
    assert np.array_equal(a, b) and (~a).sum() == 10
