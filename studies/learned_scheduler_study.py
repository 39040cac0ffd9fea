"""The learned Stage-2 scheduler against Theorem 2, the exact per-slot solver and the random scheduler.

    python -m studies learned_scheduler_study                       # all points, 16 episodes
    python -m studies learned_scheduler_study --episodes=4 --horizon_ms=500   # quick look

Every scheduler runs on the same Stage-1 table and the same episode keys (common random numbers), so the paired
difference (scheduler - prada) per episode has a tight Student-t interval. Points: the paper's operating point
(inside the training ranges), held-out points outside the training ranges (prada_jax.env.ppo.TRAIN_RANGES: B, M,
lambda and beta beyond their ends), and the Table-2 datasets the policy never saw. The mechanism part drives the
environment with the learned greedy policy and counts, over the candidate rows it decided, how its decision
compares with Theorem 2's on the same row (a confusion matrix), split by whether a server slot was free.
Writes <out_dir>/learned_scheduler.json, <out_dir>/learned_scheduler.md and <figures_dir>/learned_scheduler.png.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_list("schedulers", ["learned", "prada", "prada_exact", "random"], "Registered schedulers compared.")
flags.DEFINE_integer("episodes", 16, "Episodes per point (the same keys for every scheduler).")
flags.DEFINE_integer("horizon_ms", 2000, "Arrival horizon (slots).")
flags.DEFINE_integer("warmup_ms", 200, "Warm-up (slots).")
flags.DEFINE_integer("max_users", 128, "User slots.")
flags.DEFINE_integer("seed", 1, "Episode seed (the training used other keys).")
flags.DEFINE_integer("mechanism_episodes", 4, "Environment episodes per point for the decision confusion matrix.")
flags.DEFINE_string("out_dir", os.path.join("results", "learned_scheduler"), "Where JSON and markdown go.")
flags.DEFINE_string("figures_dir", "figures", "Where the PNG figure goes.")

METRICS = ("utility", "accuracy", "processing_ms", "communication_ms", "queuing_ms", "sojourn_ms", "offload_fraction",
           "unfinished", "dropped")
PAPER = dict(bandwidth_bps=4e7, server_capacity=9, arrival_rate=3.0, beta=10.0)
# (label, overrides of PAPER, held out?, scarce?)
POINTS = (
    ("paper point", {}, False, False),
    ("B=1e5 (held out)", dict(bandwidth_bps=1e5), True, True),
    ("B=1e6", dict(bandwidth_bps=1e6), False, True),
    ("M=1 (held out)", dict(server_capacity=1), True, True),
    ("M=20 (held out)", dict(server_capacity=20), True, False),
    ("lambda=5 (held out)", dict(arrival_rate=5.0), True, True),
    ("lambda=5, B=1e6 (held out)", dict(arrival_rate=5.0, bandwidth_bps=1e6), True, True),
    ("beta=300, B=1e6 (held out)", dict(beta=300.0, bandwidth_bps=1e6), True, True),
    ("beta=0.3 (held out)", dict(beta=0.3), True, False),
)
OTHER_DATASETS = ("gaokao2023en", "mmlu_stem")  # the Table-2 datasets the policy was not trained on
OTHER_POINTS = (("paper point", {}, True, False), ("B=1e6", dict(bandwidth_bps=1e6), True, True))


def run_points(dataset, points):
    import numpy as np

    from prada_jax import env as penv
    from prada_jax import sim
    from prada_jax.sim import metrics as MET

    packed, table = penv.load_dataset(dataset)
    grid = sim.stack_params([sim.make_params(**{**PAPER, **o}) for _, o, _, _ in points])
    max_m = max(int(np.max(grid.server_capacity)), 1)
    per, seconds = {}, {}
    for name in FLAGS.schedulers:
        config = sim.SimConfig(num_slots=FLAGS.horizon_ms, warmup_slots=FLAGS.warmup_ms, max_users=FLAGS.max_users,
                               max_servers=max_m, scheduler=name)
        t0 = time.perf_counter()
        per[name] = MET.per_episode(sim.simulate_grid(packed, table, grid, config, FLAGS.episodes, FLAGS.seed))
        seconds[name] = time.perf_counter() - t0
        logging.info("%s %s: %d points x %d episodes in %.1f s", dataset, name, len(points), FLAGS.episodes,
                     seconds[name])
    rows = []
    for g, (label, over, held_out, scarce) in enumerate(points):
        row = {"dataset": dataset, "point": label, "held_out": held_out, "scarce": scarce, **{**PAPER, **over}}
        for name in FLAGS.schedulers:
            for metric in METRICS:
                v = per[name][metric][g]
                row[f"{metric}.{name}"] = float(np.nanmean(v))
                row[f"{metric}.{name}.ci95"] = float(MET.t_half_width(np.nanstd(v, ddof=1), np.isfinite(v).sum()))
                if name != "prada":
                    d = v - per["prada"][metric][g]
                    row[f"{metric}.{name}-prada"] = float(np.nanmean(d))
                    row[f"{metric}.{name}-prada.ci95"] = float(
                        MET.t_half_width(np.nanstd(d, ddof=1), np.isfinite(d).sum()))
        rows.append(row)
    return rows, seconds


def mechanism(dataset, points):
    """Per point: counts[t2 decision, learned decision] over the decided candidate rows, with and without a free
    server slot, from environment episodes driven by the learned greedy policy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from prada_jax import env as penv
    from prada_jax import sim
    from prada_jax.env import policy as POL
    from prada_jax.env import table as T

    weights = jax.tree.map(jnp.asarray, POL.load_weights())
    out = []
    for label, over, _, _ in points:
        env, params = penv.make("prada-multiuser-v0", dataset,
                                config=dict(num_slots=FLAGS.horizon_ms, warmup_slots=FLAGS.warmup_ms,
                                            max_users=FLAGS.max_users, max_candidates=32, max_servers=20),
                                sim_params={**PAPER, **over})
        steps = env.config.num_slots + env.config.drain_slots

        def episode(key):
            _, state = env.reset_env(key, params)  # noqa: B023 (called within this iteration)

            def body(carry, _):
                state, done, counts = carry
                obs = state.table.obs
                action = POL.greedy_action(weights, obs)
                decision, _ = T.project(env.view(state), state.table, action)  # noqa: B023 (called within this iteration)
                t2 = state.table.theorem2.decision
                valid = state.table.cands.valid & ~done
                free = (env.view(state).free_slots > 0).astype(jnp.int32)  # noqa: B023 (called within this iteration)
                idx = free * 9 + t2 * 3 + decision
                counts = counts + jnp.zeros(18, jnp.int32).at[idx].add(valid.astype(jnp.int32))
                _, new, _, d, _ = env.step_env(key, state, action, params)  # noqa: B023 (called within this iteration)
                state = jax.tree.map(lambda a, b: jnp.where(done, b, a), new, state)
                return (state, done | d, counts), None

            (_, _, counts), _ = jax.lax.scan(body, (state, jnp.bool_(False), jnp.zeros(18, jnp.int32)), None, steps)  # noqa: B023 (called within this iteration)
            return counts

        counts = jax.jit(jax.vmap(episode))(sim.episode_keys(FLAGS.mechanism_episodes, FLAGS.seed))
        counts = np.asarray(counts).sum(0).reshape(2, 3, 3)
        out.append({"dataset": dataset, "point": label, "no_free_slot": counts[0].tolist(),
                    "free_slot": counts[1].tolist()})
    return out


def fmt(r, metric, name, scale=1.0, prec=3):
    return f"{r[f'{metric}.{name}'] * scale:.{prec}f} ± {r[f'{metric}.{name}.ci95'] * scale:.{prec}f}"


def markdown(rows, mech):
    others = [s for s in FLAGS.schedulers if s != "prada"]
    lines = ["| dataset | point | utility prada | " + " | ".join(f"Δ utility {s}" for s in others)
             + " | Δ acc. learned (pts) | Δ queuing learned (ms) | Δ comm. learned (ms) | Δ offload learned |",
             "|---|---|---:|" + "---:|" * (len(others) + 4)]
    for r in rows:
        cells = [fmt(r, "utility", "prada", 1, 4)] + [fmt(r, "utility", f"{s}-prada", 1, 4) for s in others]
        cells += [fmt(r, "accuracy", "learned-prada", 100, 2), fmt(r, "queuing_ms", "learned-prada", 1, 3),
                  fmt(r, "communication_ms", "learned-prada", 1, 3), fmt(r, "offload_fraction", "learned-prada", 1, 4)]
        lines.append(f"| {r['dataset']} | {r['point']} | " + " | ".join(cells) + " |")
    lines += ["", "Decisions of the learned policy against Theorem 2's on the same candidate rows "
              "(rows: Theorem 2 local / queue / immediate; columns: learned local / queue / immediate):", "",
              "| dataset | point | no free slot | free slot | deviation rate |", "|---|---|---|---|---:|"]
    import numpy as np

    for m in mech:
        a, b = np.array(m["no_free_slot"]), np.array(m["free_slot"])
        total = a.sum() + b.sum()
        dev = (total - np.trace(a) - np.trace(b)) / max(total, 1)
        lines.append(f"| {m['dataset']} | {m['point']} | {a.tolist()} | {b.tolist()} | {dev:.4f} |")
    return "\n".join(lines) + "\n"


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    others = [s for s in FLAGS.schedulers if s != "prada"]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = np.arange(len(rows))
    width = 0.8 / len(others)
    for i, s in enumerate(others):
        mean = [r[f"utility.{s}-prada"] for r in rows]
        ci = [r[f"utility.{s}-prada.ci95"] for r in rows]
        ax.errorbar(x + (i - (len(others) - 1) / 2) * width, mean, yerr=ci, fmt="o", capsize=3, label=s)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['dataset']}\n{r['point']}" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Δ utility vs prada (paired, 95 % CI)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(f"Stage-2 schedulers against Theorem 2: {FLAGS.episodes} episodes of {FLAGS.horizon_ms} ms, same draws")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv):
    del argv
    if "prada" not in FLAGS.schedulers:
        raise app.UsageError("--schedulers must include prada (the paired baseline)")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    os.makedirs(FLAGS.figures_dir, exist_ok=True)
    rows, mech, seconds = [], [], {}
    for dataset, points in (("gsm8k", POINTS),) + tuple((d, OTHER_POINTS) for d in OTHER_DATASETS):
        r, s = run_points(dataset, points)
        rows += r
        seconds[dataset] = s
        mech += mechanism(dataset, points[:3] if dataset == "gsm8k" else points)
    flags_used = {f: getattr(FLAGS, f) for f in ("schedulers", "episodes", "horizon_ms", "warmup_ms", "max_users",
                                                 "seed", "mechanism_episodes")}
    with open(os.path.join(FLAGS.out_dir, "learned_scheduler.json"), "w", encoding="utf-8") as fh:
        json.dump({"flags": flags_used, "rows": rows, "mechanism": mech, "seconds": seconds}, fh, indent=1)
    md = markdown(rows, mech)
    with open(os.path.join(FLAGS.out_dir, "learned_scheduler.md"), "w", encoding="utf-8") as fh:
        fh.write(md)
    print(md, flush=True)
    logging.info("wrote %s", figure(rows, os.path.join(FLAGS.figures_dir, "learned_scheduler.png")))


if __name__ == "__main__":
    app.run(main)
