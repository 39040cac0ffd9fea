"""What the slot step costs with and without each part of PRADA's Stage 2: an upper bound on any Stage-2 speed-up.

    python -m studies stage2_cost                                   # E = 1024, 300 slots, gsm8k
    python -m studies stage2_cost --episodes=256 --horizon_ms=200 --repeats=2

Registers three cost probes as schedulers (in this process only) and times them against the real `prada`
scheduler on the same trace, table, keys and sizes, runs interleaved:

* `cost_probe_none`: no Stage 2 at all (every candidate runs locally);
* `cost_probe_compaction`: + candidate compaction (top_k over U), the candidates' inputs and the scatter back;
* `cost_probe_tq`: + the queueing-delay estimate (server free times, list-scheduling positions, TQ order);
* `prada`: + the price search and Theorem 2's decisions (the real scheduler).

The probes decide "local" for everyone, so their episodes evolve differently from PRADA's; the slot's shapes and
operations are static, but the top_k kernels' cost depends a little on the data, so read the increments as
approximate. The first row bounds what any Stage-2 algorithm could gain: the rest of the slot stays.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from prada_jax import cli_support, data_paths

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "gsm8k", "Trace under --traces_dir.")
flags.DEFINE_string("traces_dir", data_paths.shipped_dir("traces") or "traces",
                    "Folder of <dataset>.npz (default: the shipped traces).")
flags.DEFINE_integer("episodes", 1024, "Episodes per run.")
flags.DEFINE_integer("horizon_ms", 300, "Slots per episode.")
flags.DEFINE_integer("max_users", 64, "U.")
flags.DEFINE_integer("repeats", 3, "Timed runs per variant, interleaved across variants (the fastest is kept).")
flags.DEFINE_string("out", os.path.join("results", "stage2_cost.json"), "JSON output.")

PROBES = ("cost_probe_none", "cost_probe_compaction", "cost_probe_tq")
LEVELS = {"cost_probe_none": "no Stage 2", "cost_probe_compaction": "+ candidate compaction",
          "cost_probe_tq": "+ queueing-delay estimate (TQ)", "prada": "+ price search and decisions (prada)"}


def register_probes() -> None:
    """The three cost probes, registered as schedulers of the offload protocol (idempotent per process)."""
    import jax.numpy as jnp

    from prada_jax.sim import schedulers
    from prada_jax.sim import stage2 as S2

    def none(view, config):
        del config
        return jnp.full(view.cand.shape, S2.LOCAL_D, jnp.int32), jnp.zeros(view.cand.shape, jnp.float32)

    def compaction(view, config, with_tq=False):
        c = schedulers.candidates(view, config)
        decision = jnp.full(c.idx.shape, S2.LOCAL_D, jnp.int32)
        if with_tq:
            tq, _ = S2.queue_delay_estimate(
                c.valid, c.feasible, c.value_gap, c.server_seconds, c.context, c.snr,
                schedulers.inflight_seconds(view, config), view.free_slots, view.params.server_capacity,
                view.params.bandwidth_bps, view.params.beta, c.channel_wait, max_servers=config.max_servers,
                tq_iterations=config.tq_iterations)
            decision = jnp.where(tq < -1.0, S2.QUEUE_D, decision)  # never true (tq >= 0): keeps TQ computed
        return schedulers.scatter(view, c, decision, jnp.zeros(c.idx.shape, jnp.float32))

    for name, fn in (("cost_probe_none", none), ("cost_probe_compaction", compaction),
                     ("cost_probe_tq", lambda view, config: compaction(view, config, with_tq=True))):
        if name not in schedulers.SCHEDULERS:
            schedulers.register(name, fn, description="cost probe (studies/stage2_cost.py)",
                                reads_sched_draws=False)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments {argv[1:]}")
    if FLAGS.episodes < 1 or FLAGS.horizon_ms < 2 or FLAGS.repeats < 1:
        raise app.UsageError("--episodes >= 1, --horizon_ms >= 2 and --repeats >= 1 are needed")
    import dataclasses

    import jax
    import numpy as np

    from prada_jax import sharding
    from prada_jax.cli import bench_setup

    try:
        _, packed, table, scheduler, sampling = bench_setup.setup(FLAGS.dataset, "prada", FLAGS.traces_dir)
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    register_probes()
    base = bench_setup.make_config(FLAGS.horizon_ms, FLAGS.horizon_ms // 10, FLAGS.max_users, scheduler, sampling)
    grid = bench_setup.default_grid()
    variants = {}
    for name in PROBES + ("prada",):
        config = dataclasses.replace(base, scheduler=name)
        fn, args, trim = sharding.prepare_grid(packed, table, grid, config, FLAGS.episodes, 0)
        t0 = time.perf_counter()  # compile and the warm-up run
        compiled = fn.lower(*args).compile()
        out = trim(jax.block_until_ready(compiled(*args)))  # warm-up run, not timed
        variants[name] = {"compiled": compiled, "args": args, "compile_s": time.perf_counter() - t0, "runs_s": [],
                          # what the probes change: they offload nothing (prada does)
                          "arrived": int(np.sum(out.arrived)), "offloaded_steps": int(np.sum(out.offloaded_steps))}
    for _ in range(FLAGS.repeats):
        for v in variants.values():
            start = time.perf_counter()
            jax.block_until_ready(v["compiled"](*v["args"]))
            v["runs_s"].append(time.perf_counter() - start)
    full = min(variants["prada"]["runs_s"])
    devices = sharding.grid_devices()
    print(f"{FLAGS.dataset}, E={FLAGS.episodes}, {FLAGS.horizon_ms} slots, U={FLAGS.max_users}, {devices} device(s), "
          f"fastest of {FLAGS.repeats} interleaved runs")
    print(f"{'variant':42s} {'run s':>7s} {'share of prada':>15s} {'increment':>10s}")
    rows, previous = [], 0.0
    for name, v in variants.items():
        best = min(v["runs_s"])
        rows.append({"variant": name, "what": LEVELS[name], "run_s": best, "runs_s": v["runs_s"],
                     "compile_s": v["compile_s"], "arrived": v["arrived"], "offloaded_steps": v["offloaded_steps"],
                     "share_of_prada": best / full,
                     "increment_share": (best - previous) / full})
        print(f"{LEVELS[name]:42s} {best:7.2f} {100 * best / full:14.0f}% {100 * (best - previous) / full:9.0f}%")
        previous = best
    bound = full / min(variants["cost_probe_none"]["runs_s"])
    print(f"upper bound on any Stage-2 speed-up of the slot (prada / no Stage 2): {bound:.1f}x")
    out_dir = os.path.dirname(FLAGS.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump({"dataset": FLAGS.dataset, "episodes": FLAGS.episodes, "slots": FLAGS.horizon_ms,
                   "max_users": FLAGS.max_users, "devices": devices, "rows": rows,
                   "stage2_speedup_bound": bound, "jax": jax.__version__, "backend": jax.default_backend()},
                  handle, indent=1)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    cli_support.run_main(main, __doc__)
