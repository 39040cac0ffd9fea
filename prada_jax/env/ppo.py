"""PPO for the learned Stage-2 scheduler on `prada-multiuser-v0`, PureJaxRL style (docs/learned_scheduler.md).

`make_train(env, env_params, config)` returns `init(key)` and `run(state, num_updates)`; both are jitted whole: a
`lax.scan` over updates, each a `lax.scan` rollout of `rollout_steps` slots in `num_envs` vmapped environments
(auto-reset, domain-randomised at every reset), GAE, then `update_epochs` x `num_minibatches` clipped-surrogate
Adam steps. The action is one decision per candidate row; its log-probability is the sum over the valid rows.
Training reward: `info["task_reward"]` (correct - beta x delay per counted task) divided by the episode's expected
counted tasks (arrival rate x measured slots), so a return is on the scale of the per-task utility.

    python -m prada_jax.env.ppo --minutes=20 --out=checkpoints/learned_scheduler   # resumable (orbax)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from prada_jax import env as penv
from prada_jax.learn import checkpoints as CK
from prada_jax.sim import candidate_table as T
from prada_jax.sim.learned_scheduler import CandidatePolicy, save_weights


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    num_envs: int = 32
    rollout_steps: int = 32
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 1e-4
    gamma: float = 0.995
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@struct.dataclass
class RunnerState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jnp.ndarray
    key: jax.Array
    update: jnp.ndarray  # int32 updates done


def row_log_prob(logits, action, valid):
    """Joint log-probability of the per-row decisions (valid rows only) and the summed entropy."""
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, action[..., None], -1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
    return jnp.sum(jnp.where(valid, logp, 0.0), -1), jnp.sum(jnp.where(valid, ent, 0.0), -1)


def gae(rewards, values, dones, last_value, gamma, lam):
    """Generalised advantage estimates over [T, N] (done[t]: the episode ended after step t)."""
    def body(carry, x):
        adv, next_value = carry
        r, v, d = x
        delta = r + gamma * next_value * (1.0 - d) - v
        adv = delta + gamma * lam * (1.0 - d) * adv
        return (adv, v), adv

    _, advs = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True)
    return advs, advs + values


def make_train(env, env_params, config: PPOConfig):
    net = CandidatePolicy()
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))
    measured = float(env.config.num_slots - env.config.warmup_slots)
    reset_b = jax.vmap(env.reset, in_axes=(0, None))
    step_b = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def init(key) -> RunnerState:
        k_net, k_env, key = jax.random.split(key, 3)
        obs, env_state = reset_b(jax.random.split(k_env, config.num_envs), env_params)
        params = net.init(k_net, obs[0])["params"]
        return RunnerState(params, tx.init(params), env_state, obs, key, jnp.int32(0))

    def rollout_step(runner: RunnerState, _):
        key, k_act, k_step = jax.random.split(runner.key, 3)
        logits, value = net.apply({"params": runner.params}, runner.obs)
        action = jax.random.categorical(k_act, logits).astype(jnp.int32)
        valid = runner.obs[..., T.VALID_COLUMN] > 0.5
        logp, _ = row_log_prob(logits, action, valid)
        norm = jnp.maximum(runner.env_state.sim_params.arrival_rate * measured, 1.0)
        obs, env_state, _, term, trunc, info = step_b(jax.random.split(k_step, config.num_envs),
                                                      runner.env_state, action, env_params)
        done = (term | trunc).astype(jnp.float32)
        reward = info["task_reward"] / norm
        transition = (runner.obs, action, logp, value, reward, done, info["terminated"])
        return runner.replace(env_state=env_state, obs=obs, key=key), transition

    def loss_fn(params, obs, action, old_logp, adv, target):
        logits, value = net.apply({"params": params}, obs)
        valid = obs[..., T.VALID_COLUMN] > 0.5
        logp, ent = row_log_prob(logits, action, valid)
        ratio = jnp.exp(logp - old_logp)
        surr = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv)
        v_loss = jnp.mean((value - target) ** 2)
        loss = -surr.mean() + config.vf_coef * v_loss - config.ent_coef * ent.mean()
        return loss, (v_loss, ent.mean(), jnp.mean((ratio - 1) - jnp.log(ratio)))

    def update(runner: RunnerState, _):
        runner, (obs, action, logp, value, reward, done, term) = jax.lax.scan(
            rollout_step, runner, None, config.rollout_steps)
        _, last_value = net.apply({"params": runner.params}, runner.obs)
        adv, target = gae(reward, value, done, last_value, config.gamma, config.gae_lambda)
        n = config.rollout_steps * config.num_envs
        flat = jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), (obs, action, logp, adv, target))
        mb = n // config.num_minibatches

        def minibatch(carry, idx):
            params, opt_state = carry
            o, a, lp, ad, tg = (x[idx] for x in flat)
            ad = (ad - ad.mean()) / (ad.std() + 1e-8)
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, o, a, lp, ad, tg)
            upd, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, upd), opt_state), (loss,) + aux

        def epoch(carry, k):
            perm = jax.random.permutation(k, n)[: mb * config.num_minibatches]
            return jax.lax.scan(minibatch, carry, perm.reshape(config.num_minibatches, mb))

        key, k_perm = jax.random.split(runner.key)
        (params, opt_state), losses = jax.lax.scan(epoch, (runner.params, runner.opt_state),
                                                   jax.random.split(k_perm, config.update_epochs))
        metrics = {"reward_per_step": reward.mean(), "episodes_done": jnp.sum(term),
                   "loss": losses[0].mean(), "value_loss": losses[1].mean(), "entropy": losses[2].mean(),
                   "approx_kl": losses[3].mean(),
                   "deviation_from_t2": jnp.mean(jnp.where(obs[..., T.VALID_COLUMN] > 0.5,
                                                           action != jnp.argmax(obs[..., list(T.T2_COLUMNS)], -1),
                                                           False))}
        return runner.replace(params=params, opt_state=opt_state, key=key, update=runner.update + 1), metrics

    def run(runner: RunnerState, num_updates: int):
        return jax.lax.scan(update, runner, None, num_updates)

    return jax.jit(init), jax.jit(run, static_argnums=1)


TRAIN_RANGES = dict(bandwidth_range=(2e5, 5e8), capacity_range=(2, 16), arrival_rate_range=(1.0, 4.0),
                    beta_range=(1.0, 100.0))  # inside Figs. 5-8's ranges; their ends are held out


def main(argv):
    import json
    import os

    from absl import flags, logging

    F = flags.FLAGS
    out = F.out
    env, env_params = penv.make("prada-multiuser-v0", F.dataset, randomize=True, **TRAIN_RANGES,
                                config=dict(num_slots=F.horizon, warmup_slots=F.horizon // 10,
                                            drain_slots=F.drain))
    config = PPOConfig(num_envs=F.num_envs, rollout_steps=F.rollout_steps, gamma=F.gamma, gae_lambda=F.gae_lambda)
    init, run = make_train(env, env_params, config)
    meta = {"ppo": config.to_dict(), "dataset": F.dataset, "ranges": {k: list(v) for k, v in TRAIN_RANGES.items()},
            "horizon": F.horizon, "drain": F.drain}
    runner = init(jax.random.PRNGKey(F.seed))
    history = []
    orbax_dir = os.path.join(out, "orbax")
    if CK.latest_step(orbax_dir) is not None:
        (runner, stored) = CK.restore(orbax_dir, runner, expected_meta={"ppo": meta["ppo"], "dataset": F.dataset})
        history = list(stored.get("history", []))
        logging.info("resumed at update %d", int(runner.update))
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < 60.0 * F.minutes and int(runner.update) < F.max_updates:
        t0 = time.perf_counter()
        runner, metrics = run(runner, F.updates_per_chunk)
        metrics = jax.device_get(metrics)
        dt = time.perf_counter() - t0
        row = {k: float(np.mean(v)) for k, v in metrics.items()}
        row.update(update=int(runner.update), seconds=dt,
                   slots_per_s=F.updates_per_chunk * config.num_envs * config.rollout_steps / dt)
        history.append(row)
        logging.info("%s", json.dumps(row))
        print(json.dumps(row), flush=True)
        CK.save(orbax_dir, int(runner.update), runner, {**meta, "history": history})
    save_weights(os.path.join(out, "weights.npz"), jax.device_get(runner.params))
    with open(os.path.join(out, "training.json"), "w") as fh:
        json.dump({**meta, "updates": int(runner.update), "history": history,
                   "wall_seconds_this_run": time.perf_counter() - t_start}, fh, indent=1)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", "checkpoints/learned_scheduler", "Output folder (weights.npz, orbax/, training.json).")
    flags.DEFINE_string("dataset", "gsm8k", "Training dataset (shipped trace and Stage-1 table).")
    flags.DEFINE_float("minutes", 20.0, "Wall-clock budget of this run (resumes from orbax/ when present).")
    flags.DEFINE_integer("max_updates", 100000, "Stop after this many PPO updates in total.")
    flags.DEFINE_integer("updates_per_chunk", 10, "Updates per jitted call (a checkpoint after each).")
    flags.DEFINE_integer("num_envs", 32, "Vmapped environments.")
    flags.DEFINE_integer("rollout_steps", 32, "Slots per environment per update.")
    flags.DEFINE_integer("horizon", 300, "Arrival horizon of a training episode (slots).")
    flags.DEFINE_integer("drain", 500, "Drain limit of a training episode (slots).")
    flags.DEFINE_integer("seed", 0, "Training seed.")
    flags.DEFINE_float("gamma", PPOConfig.gamma, "Discount per slot (1: the undiscounted episode utility).")
    flags.DEFINE_float("gae_lambda", PPOConfig.gae_lambda, "GAE lambda.")
    app.run(main)
