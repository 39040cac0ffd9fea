"""Throughput of the environment against simulate_grid for the same work (docs/learned_scheduler.md).

    python -m studies env_throughput --episodes=64 --horizon_ms=1000

Both run E episodes of the same configuration with Theorem 2 deciding: simulate_grid(scheduler="prada") in its
batched slot loop, and the environment (vmapped over E, `lax.scan` over slots, the action = Theorem 2's decisions
through the projection; once more through `step_env`, without gymnax's automatic reset, which computes a
fresh episode's first observation, Theorem 2 included, at every step; and with uniform random actions). Each side steps every episode for as many
slots as simulate_grid's loop ran (its longest episode), so both do the same number of episode-slots. Compile
time is excluded (one warm-up call each); prints episode-slots per second and the ratio.
"""

from __future__ import annotations

import json
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("episodes", 64, "Episodes (vmapped environments).")
flags.DEFINE_integer("horizon_ms", 1000, "Arrival horizon (slots).")
flags.DEFINE_integer("max_users", 128, "User slots.")
flags.DEFINE_string("dataset", "gsm8k", "Shipped dataset.")
flags.DEFINE_string("out", "", "Optional JSON output path.")


def main(argv):
    del argv
    import jax
    import numpy as np

    from prada_jax import env as penv
    from prada_jax import sim

    env, params = penv.make("prada-multiuser-v0", FLAGS.dataset,
                            config=dict(num_slots=FLAGS.horizon_ms, warmup_slots=FLAGS.horizon_ms // 10,
                                        drain_slots=1000, max_users=FLAGS.max_users, max_candidates=32,
                                        max_servers=16))
    keys = sim.episode_keys(FLAGS.episodes, 0)
    grid = sim.stack_params([params.sim])

    def grid_run():
        m = sim.simulate_grid(env.packed, env.policy_table, grid, env.config, FLAGS.episodes, 0)
        return jax.block_until_ready(m)

    m = grid_run()
    t0 = time.perf_counter()
    m = grid_run()
    grid_s = time.perf_counter() - t0
    slots = int(np.max(np.asarray(m.measured_s + m.drain_s) / env.config.slot_seconds) + FLAGS.horizon_ms // 10)
    work = FLAGS.episodes * slots

    def make_env_run(mode):
        @jax.jit
        def env_run(keys):
            obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)

            def body(carry, k):
                state = carry
                if mode.startswith("theorem2"):
                    action = state.table.theorem2.decision
                else:
                    action = jax.random.randint(k, state.table.theorem2.decision.shape, 0, 3)
                if mode.endswith("step_env"):  # no automatic reset (episodes longer than the run never end)
                    _, state, reward, _, _ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
                        jax.random.split(k, FLAGS.episodes), state, action, params)
                else:
                    _, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                        jax.random.split(k, FLAGS.episodes), state, action, params)
                return state, reward

            state, rewards = jax.lax.scan(body, state, jax.random.split(keys[0], slots))
            return rewards.sum()

        return env_run

    out = {"episodes": FLAGS.episodes, "slots": slots, "episode_slots": work,
           "simulate_grid_s": grid_s, "simulate_grid_slots_per_s": work / grid_s, "device": str(jax.devices()[0])}
    for mode in ("theorem2", "theorem2_step_env", "random"):
        run = make_env_run(mode)
        jax.block_until_ready(run(keys))
        t0 = time.perf_counter()
        jax.block_until_ready(run(keys))
        env_s = time.perf_counter() - t0
        out[f"env_{mode}_s"] = env_s
        out[f"env_{mode}_slots_per_s"] = work / env_s
        out[f"env_{mode}_over_simulate_grid_time"] = env_s / grid_s
    print(json.dumps(out, indent=1))
    if FLAGS.out:
        with open(FLAGS.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    app.run(main)
