"""Single-user evaluation against NumPy path costs, the quality model, and the policy table round trip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_learn_toy import make_toy_trace

from prada_jax import constants as C
from prada_jax.learn import aux, evaluate, ppo, tables
from prada_jax.learn import mdp as M
from prada_jax.traces import pack_traces


def prefill(m, arch):
    return arch.layers * (2 * m * m * arch.hidden + 2 * m * arch.hidden + 4 * m * arch.hidden**2)


def decode(m, n, arch):
    return arch.layers * (n * arch.hidden**2 + arch.hidden * n * (2 * m + n - 1) / 2)


def numpy_path(trace, n, actions, rsd_threshold=None):
    """(SLM, LLM, PRM) FLOPs of problem n along its actual path, one step at a time."""
    ctx, cached, out = float(trace.query_tokens[n]), 0.0, np.zeros(3)
    for k in range(trace.num_steps[n]):
        ns, nl = float(trace.slm_step_tokens[n, k]), float(trace.llm_step_tokens[n, k])
        draft = prefill(ctx, C.SLM_ARCH) - prefill(cached, C.SLM_ARCH) + decode(ctx, ns, C.SLM_ARCH)
        server = prefill(ctx, C.LLM_ARCH) + decode(ctx, nl, C.LLM_ARCH)
        if rsd_threshold is not None:
            a = int(trace.prm_after_slm[n, k] < rsd_threshold)
            out += [draft, server * a, prefill(ctx + ns, C.PRM_ONLINE_ARCH)]
            cached = ctx if a else ctx + ns
        else:
            a = int(actions[n, k])
            out += [draft * (1 - a), server * a, 0.0]
            cached = cached if a else ctx + ns
        ctx += nl if a else ns
    return out


@pytest.fixture(scope="module")
def toy():
    trace = make_toy_trace(num_problems=10, max_steps=5, seed=7)
    return trace, pack_traces(trace)


def test_path_flops_match_numpy(toy):
    trace, packed = toy
    actions = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, trace.step_mask.shape), np.int32)
    got = np.stack([np.asarray(x) for x in evaluate.path_flops(packed, jnp.asarray(actions))], 1)
    thr = float(np.median(trace.prm_after_slm[trace.step_mask]))
    rsd = np.stack([np.asarray(x) for x in evaluate.path_flops(packed, None, rsd_threshold=thr)], 1)
    for n in range(trace.num_problems):
        np.testing.assert_allclose(got[n], numpy_path(trace, n, actions), rtol=1e-5)
        np.testing.assert_allclose(rsd[n], numpy_path(trace, n, None, thr), rtol=1e-5)
    # The PRM check of RSD is costs.prm_check_seconds.
    summary = evaluate.rsd_policy(packed, thr)
    ref_ms = 1e3 * np.mean(rsd[:, 2]) / C.FLOPS_LLM
    np.testing.assert_allclose(summary["prm_ms_per_task"], ref_ms, rtol=1e-5)


def test_accuracy_bounds_and_random_expectation(toy):
    trace, packed = toy
    mask = trace.step_mask
    res = evaluate.single_user(packed, jnp.asarray(mask.astype(np.int32) * 0), jax.random.PRNGKey(0))
    np.testing.assert_allclose(res["all_slm"]["accuracy"], trace.expected_accuracy("slm"), rtol=1e-6)
    np.testing.assert_allclose(res["all_llm"]["accuracy"], trace.expected_accuracy("llm"), rtol=1e-6)
    assert res["all_slm"]["llm_ms_per_task"] == 0 and res["all_llm"]["slm_ms_per_task"] == 0
    rate = 0.3
    rnd = evaluate.random_policy(packed, rate, jax.random.PRNGKey(1), samples=256)
    draws = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(2), rate, (4000,) + mask.shape))
    p = np.where(draws, trace.llm_step_success, trace.slm_step_success)
    mc = np.mean(np.prod(np.where(mask, p, 1.0), -1))
    assert abs(rnd["accuracy"] - mc) < 0.01
    lo, hi = res["all_slm"]["compute_ms_per_task"], res["all_llm"]["compute_ms_per_task"]
    assert lo < rnd["compute_ms_per_task"] < hi


def test_oracle_beats_random_at_same_rate():
    trace = make_toy_trace(num_problems=40, seed=8)
    packed = pack_traces(trace)
    mdp = M.make_mdp(packed)
    opt = M.optimal_actions(mdp, 10.0)
    res = evaluate.single_user(packed, opt, jax.random.PRNGKey(0))
    assert res["pi_theta"]["accuracy"] > res["random"]["accuracy"]
    assert res["random"]["offload_fraction"] == res["pi_theta"]["offload_fraction"]
    assert res["pi_theta"]["compute_ms_per_task"] < res["all_llm"]["compute_ms_per_task"]


def test_policy_table_and_npz_round_trip(toy, tmp_path):
    trace, packed = toy
    mdp = M.make_mdp(packed)
    pcfg = ppo.PPOConfig(hidden=(8, 8, 8))
    acfg = aux.AuxConfig(hidden=(8, 8), film_hidden=8)
    st = jax.jit(ppo.make_trainer(pcfg).init)(jax.random.PRNGKey(0), mdp)
    stats = M.feature_stats(packed)
    init = lambda net, x, k: aux.AuxModel(jax.jit(net.init)(k, x), jnp.float32(0.5), jnp.float32(2.0))  # noqa: E731
    adv = init(aux.advantage_net(acfg), mdp.obs[0], jax.random.PRNGKey(1))
    dly = init(aux.delay_net(acfg), jnp.ones((3, 1)), jax.random.PRNGKey(2))
    models = tables.LearnedModels(st.policy, st.value, adv, dly, stats[0], stats[1], jnp.float32(10.0), pcfg, acfg)
    table = tables.policy_table(trace, models)
    mask = trace.step_mask
    prob = ppo.server_prob(pcfg, st.policy, mdp.obs)
    np.testing.assert_allclose(table.nominate_prob, np.where(mask, prob, 0), rtol=1e-6)
    secs = aux.predict_server_seconds(acfg, dly, M.reference_context(packed))
    np.testing.assert_allclose(table.server_seconds, np.where(mask, secs, 0), rtol=1e-6)
    # A_omega(x,1) = pi(0|x) g_omega(x): eq. 33 on the stored table returns the value-gap head exactly.
    gap = aux.predict_advantage(acfg, adv, mdp.obs)
    np.testing.assert_allclose(np.asarray(table.value_gap())[mask], np.asarray(gap)[mask], rtol=1e-4, atol=1e-6)
    stored = np.asarray(table.nominate_prob)[mask]
    assert stored.min() >= tables.POLICY_PROB_EPS and stored.max() <= 1.0 - tables.POLICY_PROB_EPS
    # A policy certain in float32 (logits 0 vs 50: pi(0|x) = 0) still yields a finite gap equal to g_omega.
    def certain(path, x):
        if x.shape == (2,):
            return jnp.asarray([0.0, 50.0], x.dtype)
        return jnp.zeros_like(x)
    sure = tables.policy_table(trace, models.replace(policy=jax.tree_util.tree_map_with_path(certain, st.policy)))
    assert float(np.asarray(ppo.server_prob(pcfg, jax.tree_util.tree_map_with_path(certain, st.policy),
                                            mdp.obs))[mask].min()) == 1.0
    np.testing.assert_allclose(np.asarray(sure.value_gap())[mask], np.asarray(gap)[mask], rtol=1e-3, atol=1e-6)
    for f in tables.TABLE_FIELDS:
        assert np.all(np.asarray(getattr(table, f))[~mask] == 0)
    path = tables.save_table(str(tmp_path / "t.npz"), table)
    back = tables.load_table(path, shape=mask.shape)
    for f in tables.TABLE_FIELDS:
        np.testing.assert_array_equal(getattr(back, f), getattr(table, f))
    with pytest.raises(tables.TableError, match="t.npz: table shape"):
        tables.load_table(path, shape=(3, 3))
    with pytest.raises(tables.TableError, match="missing.npz: policy table file not found"):
        tables.load_table(str(tmp_path / "missing.npz"))
