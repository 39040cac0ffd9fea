"""How the delay columns depend on the slot length: the same system (arrivals per second, horizon in seconds)
simulated with shrinking slots. Quantifies the slot rounding that docs/simulator.md "Time" describes.

    python -m studies slot_convergence                         # gsm8k, PRADA, 1 / 0.5 / 0.25 / 0.1 ms
    python -m studies slot_convergence --slot_ms=1,0.1 --episodes=8 --policy=all_llm --arrival_rate=0.4

Prints one row per slot length (mean ± Student-t 95 % CI over episodes) and writes a JSON file.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from prada_jax import cli_support

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "gsm8k", "Trace under --traces_dir.")
flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz traces.")
flags.DEFINE_string("ckpt_dir", "checkpoints", "Folder holding <dataset>/policy_table.npz (policy prada).")
flags.DEFINE_enum("policy", "prada", ["prada", "all_llm"], "prada: the shipped learned table; all_llm: FIFO.")
flags.DEFINE_list("slot_ms", ["1", "0.5", "0.25", "0.1"], "Slot lengths to compare (ms).")
flags.DEFINE_float("arrival_rate", 3.0, "Arrivals per ms (the per-slot rate is scaled with the slot length).")
flags.DEFINE_integer("server_capacity", 9, "M.")
flags.DEFINE_float("bandwidth_bps", 4e7, "B (bit/s).")
flags.DEFINE_float("horizon_ms", 1000.0, "Arrival horizon (ms).")
flags.DEFINE_float("warmup_ms", 100.0, "Warm-up (ms).")
flags.DEFINE_integer("episodes", 4, "Episodes per slot length.")
flags.DEFINE_integer("max_users", 128, "User slots.")
flags.DEFINE_string("out", os.path.join("results", "slot_convergence.json"), "JSON output.")

COLUMNS = ("accuracy", "processing_ms", "communication_ms", "queuing_ms", "alignment_ms", "sojourn_ms",
           "offload_fraction", "unfinished", "dropped")


def markdown_table(result: dict) -> str:
    """The study's result as the markdown table docs/simulator.md shows (delays in ms per task)."""
    f = result["flags"]
    head = (f"{f['policy']} ({f['dataset']}, λ = {f['arrival_rate']:g} per ms, M = {f['server_capacity']}, "
            f"B = {f['bandwidth_bps']:g} bit/s, {f['horizon_ms']:g} ms horizon, {f['episodes']} episodes; "
            "mean ± 95 % CI):")
    lines = [head, "", "| slot (ms) | accuracy % | processing | communication | queuing | alignment | sojourn |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        cells = [f"{100 * r['accuracy']:.1f} ± {100 * r['accuracy_ci95']:.1f}"]
        for name, digits in (("processing_ms", 2), ("communication_ms", 3), ("queuing_ms", 2), ("alignment_ms", 2),
                             ("sojourn_ms", 2)):
            cells.append(f"{r[name]:.{digits}f} ± {r[name + '_ci95']:.{digits}f}")
        lines.append(f"| {r['slot_ms']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from prada_jax import sim, traces
    from prada_jax.learn.tables import load_table
    from prada_jax.sim import policies

    slots = [float(s) for s in FLAGS.slot_ms]
    if any(s <= 0 for s in slots):
        raise app.UsageError(f"--slot_ms: every slot length must be > 0, got {slots}")
    trace = traces.load_trace(os.path.join(FLAGS.traces_dir, f"{FLAGS.dataset}.npz"))
    packed = traces.pack_traces(trace)
    if FLAGS.policy == "prada":
        table = load_table(os.path.join(FLAGS.ckpt_dir, FLAGS.dataset, "policy_table.npz"),
                           shape=(trace.num_problems, trace.max_steps))
        scheduler = "prada"
    else:
        table, scheduler = policies.all_llm_table(trace), "fifo"
    rows = []
    for slot_ms in slots:
        t0 = time.perf_counter()
        config = sim.SimConfig(num_slots=int(round(FLAGS.horizon_ms / slot_ms)),
                               warmup_slots=int(round(FLAGS.warmup_ms / slot_ms)),
                               drain_slots=int(round(1000.0 / slot_ms)), max_users=FLAGS.max_users,
                               scheduler=scheduler, slot_seconds=slot_ms * 1e-3)
        grid = sim.stack_params([sim.make_params(arrival_rate=FLAGS.arrival_rate * slot_ms,
                                                 server_capacity=FLAGS.server_capacity,
                                                 bandwidth_bps=FLAGS.bandwidth_bps)])
        summary = sim.summarize(sim.simulate_grid(packed, table, grid, config, FLAGS.episodes, seed=0))
        row = {"slot_ms": slot_ms, "seconds": time.perf_counter() - t0}
        for name in COLUMNS:
            mean, half = summary[name]
            row[name] = float(mean[0])
            row[name + "_ci95"] = float(half[0])
        rows.append(row)
        print(f"slot {slot_ms:g} ms: " + ", ".join(f"{n} {row[n]:.4g} ± {row[n + '_ci95']:.2g}" for n in COLUMNS)
              + f" ({row['seconds']:.0f} s)", flush=True)
    result = {"flags": {f: getattr(FLAGS, f) for f in ("dataset", "policy", "arrival_rate", "server_capacity",
                                                      "bandwidth_bps", "horizon_ms", "warmup_ms", "episodes")},
              "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print("\n" + markdown_table(result))
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    cli_support.run_main(main, __doc__)  # every CPU core as a device (--cpu_devices), then main
