"""PPO loss pieces against hand / plain-NumPy values: the clipped surrogate (both clipped branches and the unclipped
ones), value loss, entropy bonus, approx_kl, clip fraction; the log-prob stored at rollout; advantage normalisation;
and one training iteration wired to them (the gradient step `iteration` takes is the one of `ppo_losses`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_learn_ppo import known_mdp

from prada_jax.learn import ppo

EPS = 0.2


def np_log_softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_ppo_losses(logits, values, actions, old_logp, adv, targets, clip_eps, ent_coef):
    """Independent float64 reference of the PPO losses."""
    lp = np_log_softmax(np.asarray(logits, np.float64))
    ratio = np.exp(lp[np.arange(len(actions)), actions] - old_logp)
    surr = np.minimum(ratio * adv, np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    ent = -(np.exp(lp) * lp).sum(-1)
    return {
        "surrogate": surr.mean(),
        "entropy": ent.mean(),
        "policy_loss": -surr.mean() - ent_coef * ent.mean(),
        "value_loss": np.mean((np.asarray(values, np.float64) - targets) ** 2),
        "approx_kl": np.mean(ratio - 1 - np.log(ratio)),
        "clip_fraction": np.mean(np.abs(ratio - 1) > clip_eps),
    }


# Four samples, two actions. pi_theta(a | x): p = 1/2 for logits [0, 0], p = 3/4 / 1/4 for logits [ln 3, 0].
# old_logp is set so that the ratio r = pi_theta / pi_old is exactly the value in RATIOS.
LOGITS = np.array([[0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0], [0.0, 0.0]], np.float32)
ACTIONS = np.array([1, 0, 1, 0], np.int32)
P_ACT = np.array([0.5, 0.75, 0.25, 0.5])  # pi_theta(action | x)
RATIOS = np.array([1.5, 0.5, 0.9, 1.15])  # mean(r - 1) != 0, so approx_kl != mean(-log r)
ADV = np.array([1.0, -1.0, 2.0, -0.5], np.float32)
# sample 0: A > 0, r = 1.5 > 1 + eps -> clipped, surrogate (1 + eps) A = 1.2
# sample 1: A < 0, r = 0.5 < 1 - eps -> clipped, surrogate (1 - eps) A = -0.8
# sample 2: A > 0, r = 0.9 inside   -> r A = 1.8
# sample 3: A < 0, r = 1.15 inside  -> r A = -0.575
SURR = np.array([1.2, -0.8, 1.8, -0.575])
VALUES = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
TARGETS = np.array([1.0, 0.0, 2.0, -1.0], np.float32)  # squared errors 0.25, 1, 0, 1
H_HALF = math.log(2.0)
H_QUARTER = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))


def old_logp_for(ratios, p_act=P_ACT):
    return np.log(p_act / ratios).astype(np.float32)


def losses(ent_coef=0.0, ratios=RATIOS, adv=ADV, logits=LOGITS, actions=ACTIONS, p_act=P_ACT):
    total, parts = jax.jit(ppo.ppo_losses, static_argnums=(6, 7))(
        jnp.asarray(logits), jnp.asarray(VALUES), jnp.asarray(actions), jnp.asarray(old_logp_for(ratios, p_act)),
        jnp.asarray(adv), jnp.asarray(TARGETS), EPS, ent_coef,
    )
    return float(total), {k: float(v) for k, v in parts._asdict().items()}


@pytest.mark.parametrize("ent_coef", [0.0, 0.1])
def test_ppo_losses_by_hand(ent_coef):
    total, p = losses(ent_coef)
    surrogate = SURR.mean()  # (1.2 - 0.8 + 1.8 - 0.575) / 4 = 0.40625
    entropy = (2 * H_HALF + 2 * H_QUARTER) / 4
    hand = {
        "surrogate": surrogate,
        "entropy": entropy,
        "policy_loss": -surrogate - ent_coef * entropy,
        "value_loss": (0.25 + 1.0 + 0.0 + 1.0) / 4,
        "approx_kl": np.mean(RATIOS - 1 - np.log(RATIOS)),  # the k3 estimator (r - 1) - log r
        "clip_fraction": 0.5,  # samples 0 and 1
    }
    for name, want in hand.items():
        np.testing.assert_allclose(p[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(total, hand["policy_loss"] + hand["value_loss"], rtol=1e-5, atol=1e-6)
    ref = np_ppo_losses(LOGITS, VALUES, ACTIONS, old_logp_for(RATIOS), ADV, TARGETS, EPS, ent_coef)
    for name, want in ref.items():
        np.testing.assert_allclose(p[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_surrogate_takes_the_pessimistic_branch():
    """Where clipping would raise the objective (A > 0 with r < 1 - eps, A < 0 with r > 1 + eps), the min keeps
    the unclipped r A; still counted in the clip fraction."""
    ratios, adv = np.array([0.7, 1.3, 1.0, 1.0]), np.array([2.0, -0.5, 1.0, -1.0], np.float32)
    _, p = losses(ratios=ratios, adv=adv)
    np.testing.assert_allclose(p["surrogate"], (0.7 * 2.0 - 1.3 * 0.5 + 1.0 - 1.0) / 4, rtol=1e-5)
    np.testing.assert_allclose(p["clip_fraction"], 0.5)
    np.testing.assert_allclose(p["approx_kl"], np.mean(ratios - 1 - np.log(ratios)), rtol=1e-5, atol=1e-7)


def test_clipped_samples_get_no_policy_gradient():
    """d policy_loss / d logits is zero for the two clipped samples and -A r d log pi / d logits / B otherwise."""
    old = jnp.asarray(old_logp_for(RATIOS))

    def f(lg):
        return ppo.ppo_losses(lg, jnp.asarray(VALUES), jnp.asarray(ACTIONS), old, jnp.asarray(ADV),
                              jnp.asarray(TARGETS), EPS, 0.0)[1].policy_loss

    g = np.asarray(jax.grad(f)(jnp.asarray(LOGITS)))
    onehot = np.eye(2)[ACTIONS]
    p = np.exp(np_log_softmax(LOGITS.astype(np.float64)))
    want = -(ADV * RATIOS)[:, None] * (onehot - p) / len(ACTIONS)  # d log pi(a) / d logits = onehot(a) - p
    want[:2] = 0.0
    np.testing.assert_allclose(g, want, atol=1e-6)


def test_ppo_losses_random_batch_matches_numpy():
    rng = np.random.default_rng(0)
    b = 64
    logits = rng.normal(size=(b, 2)).astype(np.float32) * 2
    actions = rng.integers(0, 2, b).astype(np.int32)
    p_act = np.exp(np_log_softmax(logits.astype(np.float64)))[np.arange(b), actions]
    ratios = np.exp(rng.normal(scale=0.4, size=b))
    adv = rng.normal(size=b).astype(np.float32)
    _, p = losses(0.03, ratios=ratios, adv=adv, logits=logits, actions=actions, p_act=p_act)  # value part: 4 fixed
    assert 0.1 < p["clip_fraction"] < 0.9  # both branches exercised
    ref = np_ppo_losses(logits, VALUES, actions, old_logp_for(ratios, p_act), adv, TARGETS, EPS, 0.03)
    for name in ("surrogate", "entropy", "policy_loss", "approx_kl", "clip_fraction"):
        np.testing.assert_allclose(p[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_advantages_normalised():
    rng = np.random.default_rng(1)
    g = rng.normal(3.0, 5.0, 257).astype(np.float32)
    v = rng.normal(-1.0, 2.0, 257).astype(np.float32)
    raw = np.asarray(ppo.advantages(jnp.asarray(g), jnp.asarray(v), False))
    np.testing.assert_array_equal(raw, g - v)  # eq. 24
    adv = np.asarray(ppo.advantages(jnp.asarray(g), jnp.asarray(v), True))
    assert abs(adv.mean()) < 1e-6 and abs(adv.std() - 1) < 1e-5
    np.testing.assert_allclose(adv, (raw - raw.mean()) / raw.std(), rtol=1e-5, atol=1e-6)


CFG = ppo.PPOConfig(num_iterations=1, update_epochs=1, batch_steps=96, num_minibatches=1, lr_policy=1e-2,
                    lr_value=1e-2, ent_coef=0.05, hidden=(8, 8))


@pytest.fixture(scope="module")
def one_iteration():
    mdp = known_mdp(num_problems=32, max_steps=5)
    trainer = ppo.make_trainer(CFG)
    beta = 0.1
    st = jax.jit(trainer.init)(jax.random.PRNGKey(7), mdp)
    new, metrics = jax.jit(trainer.run, static_argnums=3)(st, beta, mdp, 1)
    _, k_roll, _ = jax.random.split(st.key, 3)  # as in `iteration`
    ro = jax.jit(lambda p, v: ppo.rollout_batch(CFG, trainer.policy_net, trainer.value_net, p, v, beta, mdp,
                                                k_roll))(st.policy, st.value)
    return trainer, st, new, jax.device_get(metrics), jax.device_get(ro)


def test_rollout_stores_log_softmax_of_the_action_taken(one_iteration):
    trainer, st, _, _, ro = one_iteration
    logits = np.asarray(trainer.policy_net.apply(st.policy, jnp.asarray(ro["obs"])), np.float64)
    want = np_log_softmax(logits)[np.arange(len(logits)), ro["actions"][:, 0]]
    np.testing.assert_allclose(ro["logp"], want, rtol=1e-5, atol=1e-6)
    assert 0 < ro["actions"][:, 0].mean() < 1  # both actions occur, so the action index matters


def test_iteration_steps_on_ppo_losses(one_iteration):
    """One iteration, one minibatch of the whole batch: the metrics and the Adam step are those of `ppo_losses`
    on the stored log-probs and the normalised advantages."""
    trainer, st, new, metrics, ro = one_iteration
    obs = jnp.asarray(ro["obs"])
    adv = ppo.advantages(jnp.asarray(ro["targets"]), jnp.asarray(ro["v0"]), True)

    def f(pol, val):
        return ppo.ppo_losses(trainer.policy_net.apply(pol, obs), trainer.value_net.apply(val, obs),
                              jnp.asarray(ro["actions"][:, 0]), jnp.asarray(ro["logp"]), adv,
                              jnp.asarray(ro["targets"]), CFG.clip_eps, CFG.ent_coef)

    (_, parts), (pg, vg) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(st.policy, st.value)
    # first step: r = 1, so surrogate = mean(normalised A) = 0 and policy_loss = -ent_coef * entropy
    np.testing.assert_allclose(parts.surrogate, 0.0, atol=1e-5)
    np.testing.assert_allclose(parts.approx_kl, 0.0, atol=1e-6)
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        np.testing.assert_allclose(metrics[name][0], getattr(parts, name), rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(metrics["policy_loss"][0], -CFG.ent_coef * metrics["entropy"][0], rtol=1e-3,
                               atol=1e-6)
    tx = ppo._optimizer(CFG.lr_policy, CFG.max_grad_norm)
    upd, _ = tx.update(pg, tx.init(st.policy), st.policy)
    want = jax.tree.map(lambda p, u: p + u, st.policy, upd)
    for got, exp in zip(jax.tree.leaves(new.policy), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-6)
    vtx = ppo._optimizer(CFG.lr_value, CFG.max_grad_norm)
    vupd, _ = vtx.update(vg, vtx.init(st.value), st.value)
    for got, exp in zip(jax.tree.leaves(new.value), jax.tree.leaves(jax.tree.map(lambda p, u: p + u, st.value, vupd))):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-6)
