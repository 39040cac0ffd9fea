"""Eq. 33 against brute-force action values; A_omega / D_psi fit errors on held-out problems."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_learn_toy import make_toy_trace

from prada_jax import constants as C
from prada_jax import costs
from prada_jax.learn import aux
from prada_jax.learn import mdp as M
from prada_jax.traces import pack_traces


def brute_force_q(reward_tab, pi1, steps):
    """Q^pi(x_k, a) by enumerating every continuation a_{k+1..} with its probability under pi."""
    q = np.zeros((steps, 2))
    for k in range(steps):
        for a in (0, 1):
            total = 0.0
            for rest in itertools.product((0, 1), repeat=steps - k - 1):
                prob = np.prod([pi1[k + 1 + j] if b else 1 - pi1[k + 1 + j] for j, b in enumerate(rest)])
                total += prob * sum(reward_tab[k + 1 + j, b] for j, b in enumerate(rest))
            q[k, a] = reward_tab[k, a] + total
    return q


def test_eq33_identity_brute_force():
    trace = make_toy_trace(num_problems=3, max_steps=4, seed=5)
    mdp = M.make_mdp(trace)
    beta = 8.0
    rt = np.asarray(M.reward_table(mdp, beta))
    rng = np.random.default_rng(0)
    pi1 = rng.uniform(0.05, 0.95, size=trace.step_mask.shape) * trace.step_mask
    for n in range(trace.num_problems):
        steps = int(trace.num_steps[n])
        q = brute_force_q(rt[n], pi1[n], steps)
        v = (1 - pi1[n, :steps]) * q[:, 0] + pi1[n, :steps] * q[:, 1]
        a1 = q[:, 1] - v
        np.testing.assert_allclose(costs.value_gap(a1, pi1[n, :steps]), q[:, 1] - q[:, 0], rtol=1e-5, atol=1e-7)
        # The library's one-step-lookahead Q and A(x, 1) with the exact V agree with brute force.
        values = np.zeros(trace.step_mask.shape, np.float32)
        values[n, :steps] = v
        q_lib = np.asarray(aux.action_values_from(mdp, jnp.asarray(values), beta))[n, :steps]
        np.testing.assert_allclose(q_lib, q, rtol=1e-5, atol=1e-6)
        a_lib = np.asarray(aux.server_advantage(jnp.asarray(q_lib), jnp.asarray(pi1[n, :steps]), jnp.ones(steps, bool)))
        np.testing.assert_allclose(a_lib, a1, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def toy():
    trace = make_toy_trace(num_problems=96, max_steps=5, seed=2)
    return trace, pack_traces(trace), M.split_problems(96, 0.25, seed=0)


CFG = aux.AuxConfig(steps=600, batch_size=128, lr=1e-3, hidden=(64, 64), film_hidden=32)


def test_server_seconds_truth_and_mean_one_noise(toy):
    trace, packed, _ = toy
    ctx = np.asarray(M.reference_context(packed))
    o, v = C.LLM_ARCH.hidden, C.LLM_ARCH.layers
    m, nl = ctx.astype(np.float64), trace.llm_step_tokens.astype(np.float64)
    flops = v * (2 * m**2 * o + 2 * m * o + 4 * m * o**2) + v * (nl * o**2 + o * nl * (2 * m + nl - 1) / 2)
    truth = np.asarray(aux.server_seconds_truth(packed))
    np.testing.assert_allclose(truth[trace.step_mask], (flops / C.FLOPS_LLM)[trace.step_mask], rtol=1e-5)
    cfg = aux.AuxConfig(delay_noise=0.2)
    noisy = np.asarray(aux.noisy_server_seconds(packed, jax.random.PRNGKey(0), cfg))
    ratio = noisy[trace.step_mask] / truth[trace.step_mask]
    assert abs(np.mean(ratio) - 1.0) < 3 * 0.2 / np.sqrt(ratio.size)
    assert abs(np.std(np.log(ratio)) - 0.2) < 0.02


def test_delay_fit_heldout_error_below_5_percent(toy):
    trace, packed, train = toy
    model = jax.jit(lambda k: aux.fit_delay(packed, train, k, CFG))(jax.random.PRNGKey(0))
    pred = np.asarray(aux.predict_server_seconds(CFG, model, M.reference_context(packed)))
    held = trace.step_mask & ~train[:, None]
    rel = np.abs(pred[held] / np.asarray(aux.server_seconds_truth(packed))[held] - 1.0)
    assert rel.mean() < 0.05, rel.mean()


def test_advantage_fit_heldout_r2_above_0_8(toy):
    trace, packed, train = toy
    mdp = M.make_mdp(packed)
    obs = np.asarray(mdp.obs)
    target = jnp.asarray(np.where(trace.step_mask, 0.05 * obs[..., 0] * (1 + 0.5 * np.tanh(obs[..., 1])), 0.0))
    model = jax.jit(lambda k: aux.fit_advantage(mdp, target, train, k, CFG))(jax.random.PRNGKey(1))
    pred = np.asarray(aux.predict_advantage(CFG, model, mdp.obs))
    held = trace.step_mask & ~train[:, None]
    t = np.asarray(target)[held]
    r2 = 1 - np.mean((pred[held] - t) ** 2) / np.var(t)
    assert r2 > 0.8, r2


def test_delay_sees_the_step_length_under_latency_models_other_than_flops(toy):
    trace, packed, train = toy
    ctx = M.reference_context(packed)
    flops = aux.fit_delay(packed, train, jax.random.PRNGKey(0), CFG)
    assert aux.delay_input_width(flops) == 1  # the paper's D_psi: context only
    roof = aux.fit_delay(packed, train, jax.random.PRNGKey(0), CFG, latency_model="roofline")
    assert aux.delay_input_width(roof) == 2
    with pytest.raises(ValueError, match="step_tokens"):
        aux.predict_server_seconds(CFG, roof, ctx)
    two = np.asarray(aux.predict_server_seconds(CFG, roof, ctx, packed.slm_step_tokens))
    truth = np.asarray(aux.server_seconds_truth(packed, latency_model="roofline"))
    held = trace.step_mask & ~train[:, None]
    # the inputs by hand: context / 1000 and SLM step tokens / 100
    x = np.asarray(aux.delay_inputs(ctx, CFG, packed.slm_step_tokens))
    np.testing.assert_allclose(x[..., 0], np.asarray(ctx) / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(x[..., 1], np.asarray(packed.slm_step_tokens) / 100.0, rtol=1e-6)
    assert np.all(np.isfinite(two[held])) and np.all(two[held] > 0)
    assert np.isfinite(truth[held]).all()
