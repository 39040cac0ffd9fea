"""PPO for pi_theta and V_phi on the Stage-1 MDP (paper section 4.1.2, Table 1), PureJaxRL style.

`make_train(config)` returns `train(key, beta, mdp) -> (TrainState, metrics)`, jittable whole and vmappable over
keys (seeds) and beta. One iteration: a trajectory batch (`rollout_batch`: start steps drawn uniformly over the
real (problem, step) pairs, pi_theta rolled forward three steps from each), rewards (eq. 21), three-step TD targets
(eq. 23) and advantages (eq. 24) with V_phi, then `update_epochs` epochs of `num_minibatches` clipped-surrogate
steps (lax.scan). Separate Adam optimisers for pi and V (Table 1: 5e-5 each).
For checkpointed runs, `make_trainer(config)` exposes `init` and `run(state, beta, mdp, num_iterations)`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from prada_jax.learn import checkpoints
from prada_jax.learn import mdp as M
from prada_jax.learn.nets import PI_HIDDEN, PolicyNet, ValueNet


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static PPO settings; defaults are Table 1 of the paper where it gives them."""

    num_iterations: int = 100  # N, total training epochs (trajectory batches)
    update_epochs: int = 5  # h, epochs per trajectory batch
    batch_steps: int = 1024  # start (problem, step) pairs per trajectory batch (not given by the paper)
    num_minibatches: int = 4
    lr_policy: float = 5e-5
    lr_value: float = 5e-5
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    n_step: int = 3  # eq. 23
    max_grad_norm: float = 1.0
    normalize_advantages: bool = True
    hidden: tuple = PI_HIDDEN

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@struct.dataclass
class TrainState:
    policy: Any
    value: Any
    policy_opt: Any
    value_opt: Any
    key: jax.Array
    iteration: jax.Array  # int32, iterations done


class Trainer(NamedTuple):
    init: Callable  # (key, mdp) -> TrainState
    run: Callable  # (state, beta, mdp, num_iterations: static int) -> (state, metrics [num_iterations])
    policy_net: PolicyNet
    value_net: ValueNet


def _optimizer(lr, max_grad_norm):
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def rollout_batch(config: PPOConfig, policy_net, value_net, policy, value, beta, mdp: M.StepMDP, key):
    """One trajectory batch: `batch_steps` distinct real (problem, step) start pairs drawn uniformly; from each,
    pi_theta is rolled forward `n_step` steps (observations do not depend on actions, so this is exactly the
    distribution of steps in full rollouts) to form the TD target of eq. 23, truncated at the episode end."""
    k_start, k_act = jax.random.split(key)
    num_k = mdp.max_steps
    flat_mask = mdp.step_mask.reshape(-1).astype(jnp.float32)
    start = jax.random.choice(
        k_start, flat_mask.shape[0], (config.batch_steps,), replace=False, p=flat_mask / flat_mask.sum()
    )
    n, k0 = start // num_k, start % num_k
    ks = k0[:, None] + jnp.arange(config.n_step + 1)[None, :]  # [B, n_step + 1]
    kc = jnp.minimum(ks, num_k - 1)
    valid = (ks < num_k) & mdp.step_mask[n[:, None], kc]
    obs = mdp.obs[n[:, None], kc]  # [B, n_step + 1, F]
    logits = policy_net.apply(policy, obs[:, :-1])
    actions = jax.random.categorical(k_act, logits)  # [B, n_step]
    r_tab = M.reward_table(mdp, beta)[n[:, None], kc[:, :-1]]  # [B, n_step, 2]
    r = jnp.where(valid[:, :-1], jnp.take_along_axis(r_tab, actions[..., None], -1)[..., 0], 0.0)
    v0 = value_net.apply(value, obs[:, 0])
    v_end = jnp.where(valid[:, -1], value_net.apply(value, obs[:, -1]), 0.0)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits[:, 0]), actions[:, :1], -1)[:, 0]
    return {
        "problem": n,
        "step": k0,
        "obs": obs[:, 0],
        "actions": actions,
        "logp": logp,
        "rewards": r,
        "v0": v0,
        "targets": r.sum(1) + v_end,
        "greedy_offload_fraction": (logits[:, 0, 1] > logits[:, 0, 0]).mean(),
    }


def advantages(targets, v0, normalize: bool):
    """Advantages A = G - V_phi(x_0) (eq. 24) for a trajectory batch; with `normalize`, standardised over the
    batch to mean 0 and std 1 (the 1e-8 guards a constant batch) so the policy step size does not depend on the
    reward scale, which changes with beta."""
    adv = targets - v0
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv


class PPOLossParts(NamedTuple):
    """Scalar parts of `ppo_losses` (minibatch means)."""

    policy_loss: jax.Array  # -surrogate - ent_coef * entropy: what pi_theta minimises
    value_loss: jax.Array  # mean (V_phi(x) - G)^2: what V_phi minimises
    surrogate: jax.Array  # mean clipped surrogate min(r A, clip(r, 1 - eps, 1 + eps) A)
    entropy: jax.Array  # mean entropy of pi_theta(. | x)
    approx_kl: jax.Array  # mean (r - 1) - log r, the non-negative k3 estimator of KL(pi_old || pi_theta)
    clip_fraction: jax.Array  # fraction of samples with |r - 1| > eps (diagnostic only)


def ppo_losses(logits, values, actions, old_logp, adv, targets, clip_eps, ent_coef):
    """PPO losses on one minibatch, as a pure function of the network outputs so it can be tested directly.

    logits [B, A] of pi_theta, values [B] of V_phi, actions [B] int, old_logp [B] = log pi_old(a | x) stored at
    rollout, adv [B] advantages (eq. 24, possibly normalised), targets [B] (eq. 23). With r = pi_theta(a | x) /
    pi_old(a | x), the policy maximises the clipped surrogate mean min(r A, clip(r, 1 - eps, 1 + eps) A), which
    removes the incentive to move r outside [1 - eps, 1 + eps] (Schulman et al. 2017), plus `ent_coef` times the
    mean entropy; V_phi regresses onto the targets with a squared error. Returns (total, PPOLossParts) with
    total = policy_loss + value_loss: pi and V have disjoint parameters (and separate optimisers), so the gradient
    of total with respect to each is the gradient of its own loss.
    """
    logp_all = jax.nn.log_softmax(logits)
    new_logp = jnp.take_along_axis(logp_all, actions[:, None], -1)[:, 0]
    ratio = jnp.exp(new_logp - old_logp)
    surr = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
    policy_loss = -surr.mean() - ent_coef * entropy.mean()
    value_loss = jnp.mean((values - targets) ** 2)
    parts = PPOLossParts(
        policy_loss=policy_loss,
        value_loss=value_loss,
        surrogate=surr.mean(),
        entropy=entropy.mean(),
        approx_kl=((ratio - 1) - jnp.log(ratio)).mean(),
        clip_fraction=(jnp.abs(ratio - 1) > clip_eps).mean(),
    )
    return policy_loss + value_loss, parts


def make_trainer(config: PPOConfig) -> Trainer:
    policy_net, value_net = PolicyNet(config.hidden), ValueNet(config.hidden)
    policy_tx = _optimizer(config.lr_policy, config.max_grad_norm)
    value_tx = _optimizer(config.lr_value, config.max_grad_norm)

    def init(key, mdp: M.StepMDP) -> TrainState:
        key, kp, kv = jax.random.split(key, 3)
        dummy = jnp.zeros((1, mdp.obs.shape[-1]), jnp.float32)
        policy = policy_net.init(kp, dummy)
        value = value_net.init(kv, dummy)
        return TrainState(policy, value, policy_tx.init(policy), value_tx.init(value), key, jnp.int32(0))

    def iteration(state: TrainState, beta, mdp: M.StepMDP):
        key, k_roll, k_perm = jax.random.split(state.key, 3)
        ro = rollout_batch(config, policy_net, value_net, state.policy, state.value, beta, mdp, k_roll)
        adv = advantages(ro["targets"], ro["v0"], config.normalize_advantages)
        batch = (ro["obs"], ro["actions"][:, 0], ro["logp"], adv, ro["targets"])
        total = config.batch_steps
        mb = total // config.num_minibatches

        def loss_fn(pol, val, obs, act, old_logp, a, g):
            return ppo_losses(
                policy_net.apply(pol, obs), value_net.apply(val, obs), act, old_logp, a, g,
                config.clip_eps, config.ent_coef,
            )

        def minibatch_step(carry, idx):
            pol, val, pol_opt, val_opt = carry
            obs, act, old_logp, a, g = (x[idx] for x in batch)
            # pi and V have disjoint parameters, so d total / d pol = d policy_loss / d pol and likewise for V.
            (_, parts), (pg, vg) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
                pol, val, obs, act, old_logp, a, g
            )
            pu, pol_opt = policy_tx.update(pg, pol_opt, pol)
            vu, val_opt = value_tx.update(vg, val_opt, val)
            out = (parts.policy_loss, parts.value_loss, parts.entropy, parts.approx_kl)
            return (optax.apply_updates(pol, pu), optax.apply_updates(val, vu), pol_opt, val_opt), out

        def epoch(carry, k):
            perm = jax.random.permutation(k, total)[: mb * config.num_minibatches]
            return jax.lax.scan(minibatch_step, carry, perm.reshape(config.num_minibatches, mb))

        carry = (state.policy, state.value, state.policy_opt, state.value_opt)
        carry, losses = jax.lax.scan(epoch, carry, jax.random.split(k_perm, config.update_epochs))
        pol, val, pol_opt, val_opt = carry
        metrics = {
            "reward": ro["rewards"][:, 0].mean(),
            "target": ro["targets"].mean(),
            "offload_fraction": ro["actions"][:, 0].mean(),
            "greedy_offload_fraction": ro["greedy_offload_fraction"],
            "policy_loss": losses[0].mean(),
            "value_loss": losses[1].mean(),
            "entropy": losses[2].mean(),
            "approx_kl": losses[3].mean(),
        }
        return TrainState(pol, val, pol_opt, val_opt, key, state.iteration + 1), metrics

    def run(state: TrainState, beta, mdp: M.StepMDP, num_iterations: int):
        return jax.lax.scan(lambda s, _: iteration(s, beta, mdp), state, None, length=num_iterations)

    return Trainer(init, run, policy_net, value_net)


def make_train(config: PPOConfig):
    """PureJaxRL entry point: train(key, beta, mdp) -> (TrainState, metrics [num_iterations]), jittable whole."""
    trainer = make_trainer(config)

    def train(key, beta, mdp: M.StepMDP):
        return trainer.run(trainer.init(key, mdp), beta, mdp, config.num_iterations)

    return train


def server_prob(config: PPOConfig, policy_params, obs):
    """pi_theta(1 | x) for observations [..., F]."""
    return jax.nn.softmax(PolicyNet(config.hidden).apply(policy_params, obs))[..., 1]


def state_value(config: PPOConfig, value_params, obs):
    """V_phi(x) for observations [..., F]."""
    return ValueNet(config.hidden).apply(value_params, obs)


def greedy_actions(config: PPOConfig, policy_params, mdp: M.StepMDP):
    """[N, K] greedy actions argmax pi_theta(a | x) (0 on padding)."""
    return jnp.where(mdp.step_mask, (server_prob(config, policy_params, mdp.obs) > 0.5).astype(jnp.int32), 0)


@functools.lru_cache(maxsize=16)
def _chunk_runner(config: PPOConfig, num_iterations: int):
    """jit(vmap over beta) of `num_iterations` PPO iterations; cached so repeated runs compile once."""
    trainer = make_trainer(config)
    return jax.jit(jax.vmap(lambda s, b, mdp: trainer.run(s, b, mdp, num_iterations), in_axes=(0, 0, None)))


def checkpoint_meta(config: PPOConfig, betas, obs_shape, meta: dict | None = None) -> dict:
    """The meta `train_resumable` stores with its checkpoints: the caller's `meta` (dataset, seed, ...) plus the
    config, the betas (as float32) and the training observations' shape [N, K, F]."""
    betas = [float(b) for b in np.asarray(betas, np.float32).reshape(-1)]
    return dict(meta or {}, config=config.to_dict(), betas=betas, obs_shape=[int(s) for s in obs_shape])


def resume_meta(meta: dict) -> dict:
    """What a checkpoint's meta must match to be resumed: `checkpoint_meta` less config.num_iterations (checked
    apart, with its own message)."""
    return dict(meta, config={k: v for k, v in meta["config"].items() if k != "num_iterations"})


def train_resumable(
    config: PPOConfig,
    key,
    betas,
    mdp: M.StepMDP,
    ckpt_dir: str | None = None,
    chunk: int = 10,
    resume: bool = False,
    meta: dict | None = None,
    on_chunk: Callable | None = None,
):
    """Train one policy per beta (vmapped, same seed) in jitted chunks of `chunk` iterations, saving an orbax
    checkpoint after each chunk. With `resume`, continue from the latest checkpoint in `ckpt_dir`; the result is
    identical to an uninterrupted run. Returns (TrainState with leading axis [len(betas)], history dict of lists).
    `on_chunk(done, total, metrics_of_chunk)` is called after each chunk (progress logging)."""
    betas = jnp.asarray(betas, jnp.float32).reshape(-1)
    trainer = make_trainer(config)
    single = jax.jit(trainer.init)(key, mdp)
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, betas.shape + x.shape), single)
    meta = checkpoint_meta(config, betas, mdp.obs.shape, meta)
    history: dict = {}
    if ckpt_dir is not None and checkpoints.latest_step(ckpt_dir) is not None:
        if not resume:
            raise checkpoints.CheckpointError(
                f"{ckpt_dir}: checkpoints exist; resume them or use an empty directory"
            )
        state, stored = checkpoints.restore(ckpt_dir, state, expected_meta=resume_meta(meta))
        stored_iters = stored.get("config", {}).get("num_iterations")
        if stored_iters is not None and stored_iters != config.num_iterations:
            raise checkpoints.CheckpointError(
                f"{ckpt_dir}: the stored run trains for {stored_iters} iterations, this one for "
                f"{config.num_iterations} (--epochs); resume with --epochs={stored_iters} or start a new --ckpt_dir")
        history = stored.get("history", {})
    done = int(state.iteration[0])
    while done < config.num_iterations:
        run = _chunk_runner(config, min(chunk, config.num_iterations - done))
        state, metrics = run(state, betas, mdp)
        done = int(state.iteration[0])
        for name, value in metrics.items():  # value [G, chunk]
            history.setdefault(name, [[] for _ in range(len(betas))])
            for g, row in enumerate(jax.device_get(value).tolist()):
                history[name][g].extend(row)
        if ckpt_dir is not None:
            checkpoints.save(ckpt_dir, done, state, dict(meta, history=history))
        if on_chunk is not None:
            on_chunk(done, config.num_iterations, jax.device_get(metrics))
    return state, history
