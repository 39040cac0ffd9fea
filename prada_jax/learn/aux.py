"""Auxiliary regressors of Stage 2 (paper section 4.2.5): A_omega (server-action advantage) and D_psi (server time).

A_omega target. With the trained pi_theta and V_phi, the action values one step ahead are
    Q(x_k, a) = r(x_k, a) + V_phi(x_{k+1})   (V = 0 after the last step),
exact for this MDP because the next observation does not depend on a. Their policy average is the state value,
so A(x, 1) = Q(x, 1) - sum_a pi(a|x) Q(x, a) = pi(0|x) (Q(x, 1) - Q(x, 0)), consistent with eq. 33 by
construction (using V_phi(x_k) itself in place of the policy average would add the critic's error at x_k).

D_psi target. The server compute time of a step, costs.server_step_seconds with a full prefill of the reference
context and the LLM's step tokens, times mean-one log-normal measurement noise. Input: context length / scale
under the "flops" latency model (whose server time depends on the context only, as in the paper); under any other
latency model (roofline, calibrated, a measured profile), whose server time is mostly the decode of the step's
tokens, also the step's expected length: the SLM's length of the same step / STEP_SCALE (known on the edge device;
the LLM's own length is not known before it runs).
Both are fitted by minibatch Adam with MSE on standardised targets in one lax.scan.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from prada_jax import constants as C
from prada_jax.learn import mdp as M
from prada_jax.learn import ppo
from prada_jax.learn.nets import AUX_HIDDEN, FILM_HIDDEN, AuxRegressor
from prada_jax.traces import PackedTraces


@dataclasses.dataclass(frozen=True)
class AuxConfig:
    steps: int = 3000  # at most; multiple of eval_every
    batch_size: int = 256
    eval_every: int = 50  # early stopping: validation MSE every eval_every steps, best parameters kept
    val_fraction: float = 0.1  # of the training problems, for early stopping
    lr: float = 5e-5  # paper section 5.1.1
    delay_noise: float = 0.05  # sigma of the log-normal measurement noise on server times
    context_scale: float = 1000.0  # tokens; D_psi input = context / context_scale
    hidden: tuple = AUX_HIDDEN
    film_hidden: int = FILM_HIDDEN

    def __post_init__(self):
        if self.eval_every < 1 or self.steps < self.eval_every or self.steps % self.eval_every:
            raise ValueError(f"AuxConfig: steps ({self.steps}, --aux_steps) must be a positive multiple of "
                             f"eval_every ({self.eval_every})")
        if self.batch_size < 1 or not 0.0 <= self.val_fraction < 1.0 or self.lr <= 0.0:
            raise ValueError(f"AuxConfig: need batch_size >= 1, 0 <= val_fraction < 1, lr > 0; got {self}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@struct.dataclass
class AuxModel:
    """Fitted regressor: Flax variables (params + batch_stats) and the target standardisation."""

    variables: Any
    target_mean: jax.Array
    target_std: jax.Array


def advantage_net(config: AuxConfig) -> AuxRegressor:
    return AuxRegressor(use_film=True, hidden=config.hidden, film_hidden=config.film_hidden)


def delay_net(config: AuxConfig) -> AuxRegressor:
    return AuxRegressor(use_film=False, hidden=config.hidden, film_hidden=config.film_hidden)


def action_values_from(mdp: M.StepMDP, values, beta):
    """[N, K, 2] Q(x_k, a) = r(x_k, a) + values[n, k + 1] (0 past the last step and on padding)."""
    values = jnp.where(mdp.step_mask, values, 0.0)
    v_next = jnp.pad(values[:, 1:], ((0, 0), (0, 1)))
    return jnp.where(mdp.step_mask[..., None], M.reward_table(mdp, beta) + v_next[..., None], 0.0)


def server_advantage(q, prob_server, step_mask):
    """[N, K] A(x, 1) = Q(x, 1) - sum_a pi(a|x) Q(x, a) = pi(0|x) (Q(x, 1) - Q(x, 0))."""
    return jnp.where(step_mask, (1.0 - prob_server) * (q[..., 1] - q[..., 0]), 0.0)


def action_values(ppo_config: ppo.PPOConfig, value_params, mdp: M.StepMDP, beta):
    """Q(x_k, a) with the trained critic V_phi at the next step."""
    return action_values_from(mdp, ppo.state_value(ppo_config, value_params, mdp.obs), beta)


def advantage_targets(ppo_config: ppo.PPOConfig, policy_params, value_params, mdp: M.StepMDP, beta):
    """[N, K] A_omega's regression target A(x, 1) from the trained pi_theta and V_phi."""
    q = action_values(ppo_config, value_params, mdp, beta)
    return server_advantage(q, ppo.server_prob(ppo_config, policy_params, mdp.obs), mdp.step_mask)


def value_gap_targets(ppo_config: ppo.PPOConfig, value_params, mdp: M.StepMDP, beta):
    """[N, K] Q(x, 1) - Q(x, 0) from the trained critic: the target of A_omega's value-gap head.

    A_omega(x, 1) is parametrised as pi(0|x) g_omega(x) (eq. 33) and g_omega is regressed on the value gap.
    Regressing A(x, 1) = pi(0|x) (Q1 - Q0) itself is ill-conditioned for a confident policy: where pi(0|x) -> 0
    (the steps pi_theta most wants on the server) the target vanishes, and eq. 33 divides the fit's noise by it
    (docs/learning.md)."""
    q = action_values(ppo_config, value_params, mdp, beta)
    return jnp.where(mdp.step_mask, q[..., 1] - q[..., 0], 0.0)


def server_seconds_truth(packed: PackedTraces, flops_llm=C.FLOPS_LLM, latency_model: str = C.DEFAULT_LATENCY_MODEL):
    """[N, K] server compute time of each reference step with a full prefill (the D_psi regression truth), under
    `latency_model`: the TL of mdp.reference_step_seconds, the same step cost the Stage-1 reward uses."""
    return M.reference_step_seconds(packed, flops_llm=flops_llm, latency_model=latency_model)[1]


def fit_regressor(net: AuxRegressor, x, y, weight, key, config: AuxConfig, val_weight=None) -> AuxModel:
    """MSE fit of net on samples x [S, D], y [S]; minibatches drawn from samples with weight > 0.

    With `val_weight`, the validation MSE is evaluated every `eval_every` steps and the best parameters are
    kept (early stopping: the targets are noisy and the networks large enough to memorise them)."""
    w = weight.astype(jnp.float32)
    mean = (y * w).sum() / w.sum()
    std = jnp.sqrt(((y - mean) ** 2 * w).sum() / w.sum()) + 1e-8
    z = (y - mean) / std
    k_init, k_steps = jax.random.split(key)
    variables = net.init(k_init, x[: config.batch_size], train=False)
    tx = optax.adam(config.lr)
    opt = tx.init(variables["params"])
    prob = w / w.sum()
    vw = jnp.zeros_like(w) if val_weight is None else val_weight.astype(jnp.float32)

    def loss_fn(params, stats, xb, zb):
        pred, updates = net.apply({"params": params, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"])
        return jnp.mean((pred - zb) ** 2), updates["batch_stats"]

    def step(carry, k):
        params, stats, opt = carry
        idx = jax.random.choice(k, x.shape[0], (config.batch_size,), p=prob)
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x[idx], z[idx])
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), stats, opt), loss

    def val_loss(params, stats):
        pred = net.apply({"params": params, "batch_stats": stats}, x, train=False)
        return ((pred - z) ** 2 * vw).sum() / jnp.maximum(vw.sum(), 1.0)

    def block(carry, keys):
        train_carry, best = carry
        train_carry, _ = jax.lax.scan(step, train_carry, keys)
        params, stats, _ = train_carry
        loss = val_loss(params, stats)
        better = loss < best[0]  # with no validation set every block "improves": the last one is kept
        keep_new = better | (val_weight is None)
        best = jax.tree.map(lambda new, old: jnp.where(keep_new, new, old), (loss, params, stats), best)
        return (train_carry, best), loss

    blocks = config.steps // config.eval_every
    keys = jax.random.split(k_steps, blocks * config.eval_every).reshape(blocks, config.eval_every, -1)
    carry = (variables["params"], variables["batch_stats"], opt)
    best0 = (jnp.float32(jnp.inf), variables["params"], variables["batch_stats"])
    (_, (_, params, stats)), _ = jax.lax.scan(block, (carry, best0), keys)
    return AuxModel({"params": params, "batch_stats": stats}, mean, std)


def _split_validation(train_problems, key, fraction):
    """(fit, validation) problem masks: a random `fraction` of the training problems validates."""
    train_problems = jnp.asarray(train_problems)
    val = train_problems & (jax.random.uniform(key, train_problems.shape) < fraction)
    return train_problems & ~val, val


def predict(net: AuxRegressor, model: AuxModel, x):
    """Inference (BatchNorm running averages), back in target units."""
    return net.apply(model.variables, x, train=False) * model.target_std + model.target_mean


STEP_SCALE = 100.0  # tokens; D_psi's step-length input = SLM step tokens / STEP_SCALE


def delay_uses_step_length(latency_model: str) -> bool:
    """Whether D_psi sees the step length under `latency_model` (every model but the paper's "flops")."""
    return latency_model != C.DEFAULT_LATENCY_MODEL


def delay_inputs(context_tokens, config: AuxConfig, step_tokens=None):
    """D_psi input [..., 1]: context length / context_scale; with `step_tokens`, [..., 2]: also the step's expected
    length / STEP_SCALE."""
    ctx = jnp.asarray(context_tokens, jnp.float32) / config.context_scale
    if step_tokens is None:
        return ctx[..., None]
    return jnp.stack([ctx, jnp.broadcast_to(jnp.asarray(step_tokens, jnp.float32) / STEP_SCALE, ctx.shape)], -1)


def delay_input_width(model: AuxModel) -> int:
    """1 (context) or 2 (context, step length): the width of a fitted D_psi's input layer."""
    return int(model.variables["params"]["Dense_0"]["kernel"].shape[0])


@functools.partial(jax.jit, static_argnames="config")
def fit_advantage(mdp: M.StepMDP, targets, train_problems, key, config: AuxConfig) -> AuxModel:
    """Fit A_omega on (features, A(x, 1)) of the real steps of the training problems (early stopping on a
    validation part of them)."""
    k_val, k_fit = jax.random.split(key)
    fit, val = _split_validation(train_problems, k_val, config.val_fraction)
    weight = (mdp.step_mask & fit[:, None]).reshape(-1)
    val_weight = (mdp.step_mask & val[:, None]).reshape(-1)
    x = mdp.obs.reshape(-1, mdp.obs.shape[-1])
    return fit_regressor(advantage_net(config), x, targets.reshape(-1), weight, k_fit, config, val_weight)


def noisy_server_seconds(packed: PackedTraces, key, config: AuxConfig, flops_llm=C.FLOPS_LLM,
                         latency_model: str = C.DEFAULT_LATENCY_MODEL):
    """Measured server seconds: truth x exp(sigma eps - sigma^2 / 2) (mean-one log-normal noise)."""
    s = config.delay_noise
    eps = jax.random.normal(key, packed.step_mask.shape)
    return server_seconds_truth(packed, flops_llm, latency_model) * jnp.exp(s * eps - 0.5 * s * s)


@functools.partial(jax.jit, static_argnames=("config", "latency_model", "use_step_length"))
def fit_delay(packed: PackedTraces, train_problems, key, config: AuxConfig, flops_llm=C.FLOPS_LLM,
              latency_model: str = C.DEFAULT_LATENCY_MODEL, use_step_length: bool | None = None) -> AuxModel:
    """Fit D_psi: context length (and, by default under every latency model but "flops", the step length) ->
    server compute milliseconds (noisy measurements of `latency_model`'s server step) on training problems."""
    k_noise, k_val, k_fit = jax.random.split(key, 3)
    ms = 1e3 * noisy_server_seconds(packed, k_noise, config, flops_llm, latency_model)
    fit, val = _split_validation(train_problems, k_val, config.val_fraction)
    weight = (packed.step_mask & fit[:, None]).reshape(-1)
    val_weight = (packed.step_mask & val[:, None]).reshape(-1)
    if use_step_length is None:
        use_step_length = delay_uses_step_length(latency_model)
    step = packed.slm_step_tokens if use_step_length else None
    x = delay_inputs(M.reference_context(packed), config, step)
    x = x.reshape(-1, x.shape[-1])
    return fit_regressor(delay_net(config), x, ms.reshape(-1), weight, k_fit, config, val_weight)


def predict_advantage(config: AuxConfig, model: AuxModel, obs):
    return predict(advantage_net(config), model, obs)


def predict_server_seconds(config: AuxConfig, model: AuxModel, context_tokens, step_tokens=None):
    """D_psi prediction in seconds for context lengths [...] (and, for a D_psi fitted with the step length, the
    steps' expected lengths [...]: required then, ignored otherwise)."""
    if delay_input_width(model) == 2:
        if step_tokens is None:
            raise ValueError("this D_psi was fitted on (context, step length): pass step_tokens")
        return 1e-3 * predict(delay_net(config), model, delay_inputs(context_tokens, config, step_tokens))
    return 1e-3 * predict(delay_net(config), model, delay_inputs(context_tokens, config))
