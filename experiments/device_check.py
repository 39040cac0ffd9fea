"""One prepared accelerator check: throughput by batch size, compile time, memory and the correctness tests.

    python experiments/device_check.py                       # writes to $OUT if set, else results/device_check/
    python experiments/device_check.py --episodes_list=1,64 --horizon_ms=50 --notests   # a CPU smoke run

With the defaults it ends within 9.5 minutes (no size starts after 240 s of benchmarking, one size may run 60 s
past that; the tests, about 3 minutes on a 2-core CPU, get 240 s), so it fits one 10-minute command of the
device tool:
`PYTHONUNBUFFERED=1 python3 experiments/device_check.py` with timeout_s=600.

1. The benchmark (`python -m experiments.bench`) once per batch size E (a fresh process each: honest compile
   times, and a size that runs past --bench_timeout_s loses only its own row). Per-slot time against E tells
   whether the slot loop is launch-bound: while it stays near the E = 1 time, kernel launches and the loop's
   per-slot sync dominate, and throughput grows with E for free.
2. The simulator's correctness tests on this backend (JAX against the NumPy oracle, invariants, Stage 2, drain).

Writes four files to --out_dir (the device tool returns at most 8): summary.json (with every bench record),
summary.md, bench.log and tests.log. Every size that was skipped or failed is listed with the reason.

This file only starts processes: it imports nothing from the package, and runs the benchmark and the tests with the
repository root as their working directory (`python -m ...`), so it needs no installed package and no path edit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_TESTS = ("tests/test_sim_oracle.py", "tests/test_sim_oracle_baselines.py", "tests/test_sim_invariants.py",
                 "tests/test_stage2.py", "tests/test_stage2_price.py", "tests/test_sim_run.py",
                 "tests/test_accounting.py")

flags.DEFINE_string("out_dir", os.environ.get("OUT") or os.path.join("results", "device_check"),
                    "Output folder (default: $OUT when set, as on the device machine).")
flags.DEFINE_list("episodes_list", ["1", "256", "4096", "16384", "65536"], "Batch sizes E, ascending.")
flags.DEFINE_integer("horizon_ms", 200, "Slots per episode of each timed run.")
flags.DEFINE_integer("warmup_ms", 20, "Warm-up slots.")
flags.DEFINE_integer("repeats", 2, "Timed runs per size after the compile (bench keeps the fastest).")
flags.DEFINE_integer("max_users", 64, "U.")
flags.DEFINE_string("dataset", "gsm8k", "Trace of the timed runs.")
flags.DEFINE_string("policy", "prada", "Registered policy of the timed runs.")
flags.DEFINE_integer("bench_timeout_s", 200, "Wall-clock limit of one size's bench run.")
flags.DEFINE_integer("bench_budget_s", 240, "No new size starts once the bench stage has used this long.")
flags.DEFINE_bool("tests", True, "Run the correctness tests after the benchmark.")
flags.DEFINE_list("test_files", list(DEFAULT_TESTS), "Test files of the correctness stage.")
flags.DEFINE_integer("tests_timeout_s", 240, "Wall-clock limit of the correctness stage.")
flags.DEFINE_bool("overwrite", False, "Replace the results of an earlier check in --out_dir.")
flags.DEFINE_integer("cpu_devices", 0, "Passed on to each bench run: CPU devices JAX exposes there (0 = one per "
                     "core; the benchmark's --cpu_devices). No effect on an accelerator.")

FLAGS = flags.FLAGS


def positive_sizes(values) -> list[int]:
    """--episodes_list as distinct ascending positive ints (the first is the per-slot reference); UsageError
    naming the flag otherwise."""
    try:
        sizes = [int(x) for x in values]
    except ValueError as exc:
        raise app.UsageError(f"--episodes_list: integers expected, got {values}") from exc
    if not sizes or min(sizes) < 1:
        raise app.UsageError(f"--episodes_list: positive integers expected, got {values}")
    if sizes != sorted(set(sizes)):
        raise app.UsageError(f"--episodes_list: distinct sizes in ascending order expected, got {sizes}")
    return sizes


def bench_command(episodes: int, out_json: str) -> list[str]:
    return [sys.executable, "-m", "experiments.bench", f"--episodes_list={episodes}",
            f"--max_users_list={FLAGS.max_users}", f"--max_users={FLAGS.max_users}", "--users_episodes=1",
            "--oracle_episodes=0", "--noprofile", f"--horizon_ms={FLAGS.horizon_ms}",
            f"--warmup_ms={FLAGS.warmup_ms}", f"--repeats={FLAGS.repeats}", f"--dataset={FLAGS.dataset}",
            f"--policy={FLAGS.policy}", f"--cpu_devices={FLAGS.cpu_devices}", f"--out={out_json}"]


def slot_ms(record: dict) -> float:
    """Wall time of one slot of the whole batch (ms) in a bench episodes-table record."""
    return 1e3 * record["run_s"] / record["slots"]


def size_row(record: dict, smallest: dict) -> dict:
    """One summary row from a bench episodes-table record, its slot time relative to the smallest size's."""
    device_peak = ((record.get("memory") or {}).get("device") or {}).get("peak_bytes_in_use")
    return {"episodes": record["episodes"], "devices": record.get("devices"), "compile_s": record["compile_s"],
            "run_s": record["run_s"], "slot_ms": slot_ms(record), "user_slots_per_s": record["user_slots_per_s"],
            "slot_ms_vs_smallest": slot_ms(record) / slot_ms(smallest),
            "device_peak_mib": None if device_peak is None else device_peak / 2**20,
            "episodes_per_gib": record.get("episodes_per_gib")}


def run_bench(sizes: list[int], out_dir: str) -> tuple[list[dict], list[dict], dict | None]:
    """(records, skipped, machine) over the sizes, each in its own process within the time limits.

    All logs go to one bench.log and the bench JSONs into summary.json (the device tool returns at most 8 files)."""
    records, skipped, machine = [], [], None
    start = time.perf_counter()
    log_path = os.path.join(out_dir, "bench.log")
    with tempfile.TemporaryDirectory(prefix="prada-device-check-") as tmp, \
            open(log_path, "w", encoding="utf-8") as log:
        for episodes in sizes:
            used = time.perf_counter() - start
            if used > FLAGS.bench_budget_s:
                skipped.append({"episodes": episodes, "reason": f"bench budget of {FLAGS.bench_budget_s} s used up"})
                continue
            out_json = os.path.join(tmp, f"bench_E{episodes}.json")
            limit = min(FLAGS.bench_timeout_s, max(30, FLAGS.bench_budget_s - used + 60))
            log.write(f"\n===== E = {episodes} (limit {limit:.0f} s) =====\n")
            log.flush()
            try:
                code = subprocess.run(bench_command(episodes, out_json), cwd=REPO_ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=limit).returncode
            except subprocess.TimeoutExpired:
                code = None
            if code != 0 or not os.path.exists(out_json):
                why = f"timed out after {limit:.0f} s" if code is None else f"bench exited with {code} (bench.log)"
                skipped.append({"episodes": episodes, "reason": why})
                continue
            with open(out_json, encoding="utf-8") as handle:
                result = json.load(handle)
            machine = machine or result.get("machine")
            records.append(result["episodes_table"][0])
    return records, skipped, machine


def run_tests(out_dir: str) -> dict:
    """The correctness stage: pytest on --test_files with this backend; returns rc, wall time and pytest's summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FLAGS.test_files]
    env = dict(os.environ, PRADA_TESTS_XLA_OPT="default")  # the backend as users run it, fully optimised
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=FLAGS.tests_timeout_s)
        rc, text = proc.returncode, proc.stdout + proc.stderr
        # pytest's summary is the last line of its stdout; stderr may end with a plugin's warning.
        lines = proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines()
        last = lines[-1] if lines else ""
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, last = None, f"timed out after {FLAGS.tests_timeout_s} s"
        text = f"{partial}\n{last}\n"
    with open(os.path.join(out_dir, "tests.log"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return {"files": list(FLAGS.test_files), "rc": rc, "wall_s": time.perf_counter() - start, "last_line": last}


def markdown(summary: dict) -> str:
    machine = summary.get("machine") or {}
    lines = [f"# Device check ({machine.get('platform', '?')}, {machine.get('devices', '?')} device(s), "
             f"jax {machine.get('jax', '?')})", "",
             f"{FLAGS.policy} on {FLAGS.dataset}, U = {FLAGS.max_users}, {FLAGS.horizon_ms} slots, fastest of "
             f"{FLAGS.repeats} run(s) per size.", "",
             "| E | devices | compile s | run s | ms per slot | × E=smallest slot time | user-slot updates/s | "
             "device peak MiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["sizes"]:
        ratio = f"{r['slot_ms_vs_smallest']:.2f}"
        peak = "" if r["device_peak_mib"] is None else f"{r['device_peak_mib']:.0f}"
        lines.append(f"| {r['episodes']:,} | {r['devices']} | {r['compile_s']:.1f} | {r['run_s']:.2f} | "
                     f"{r['slot_ms']:.3f} | {ratio} | {r['user_slots_per_s']:,.0f} | {peak} |")
    for s in summary["skipped"]:
        lines.append(f"| {s['episodes']:,} | skipped: {s['reason']} | | | | | | |")
    tests = summary.get("tests")
    tests_text = "not run" if tests is None else f"{tests['last_line']} (rc {tests['rc']}, {tests['wall_s']:.0f} s)"
    lines += ["", f"Tests ({', '.join(summary['config']['test_files'])}): {tests_text}", ""]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments {argv[1:]}")
    sizes = positive_sizes(FLAGS.episodes_list)
    out_dir = FLAGS.out_dir
    if os.path.exists(os.path.join(out_dir, "summary.json")) and not FLAGS.overwrite:
        raise app.UsageError(f"--out_dir={out_dir} already holds a device check (summary.json); pass --overwrite "
                             "to replace it or choose another --out_dir")
    missing = [f for f in FLAGS.test_files if not os.path.exists(os.path.join(REPO_ROOT, f))] if FLAGS.tests else []
    if missing:
        raise app.UsageError(f"--test_files: {missing} not found under {REPO_ROOT}")
    os.makedirs(out_dir, exist_ok=True)
    records, skipped, machine = run_bench(sizes, out_dir)
    rows = [size_row(record, records[0]) for record in records]
    summary = {"config": {"horizon_ms": FLAGS.horizon_ms, "max_users": FLAGS.max_users, "dataset": FLAGS.dataset,
                          "policy": FLAGS.policy, "repeats": FLAGS.repeats, "test_files": list(FLAGS.test_files)},
               "machine": machine, "sizes": rows, "skipped": skipped, "bench_records": records,
               "tests": run_tests(out_dir) if FLAGS.tests else None}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    text = markdown(summary)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
