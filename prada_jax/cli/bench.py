"""Benchmark the JAX slot simulator against the NumPy oracle; scaling tables, compile time, memory, profile.

    prada-bench                                  # full benchmark -> results/bench.json
    prada-bench --quick                          # small smoke run (about a minute)
    prada-bench --sweep_check                    # + the research bandwidth sweep (minutes)
    prada-bench --episodes_list=1,256 --max_users_list=32 --horizon_ms=500 --policy=all_llm

(`python -m experiments.bench ...` from the repository root is the same command with the NumPy oracle.)

Throughput is reported as user-slot updates/s (grid points x episodes x slots x max_users / run seconds) and
episode-slots/s; compile time (jit(...).lower(...).compile()) is timed apart from the run (block_until_ready).
The oracle (tests/reference_sim.py, a Python loop) runs --oracle_episodes episodes of the same configuration
and its per-episode cost is extrapolated. It lives with the tests, so only the repository's entry point
(`python -m experiments.bench`) passes it in; prada-bench says so in one line and skips the oracle rows.
--reference_rev and --api_check need a source checkout (git worktrees). --profile breaks one run down by HLO op
and source line with jax.profiler. See docs/performance.md for how to read the output.
"""

from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import os
import platform
import re
import resource
import sys
import tempfile
import time

from absl import app, flags, logging

from prada_jax import cli_support, data_paths, sharding
from prada_jax.cli import bench_setup
from prada_jax.cli.bench_setup import build_table, default_grid, make_config  # noqa: F401  (bench.* names)
from prada_jax.sim import registry, summarize
from prada_jax.sim import run as sim_run
from prada_jax.sim.draws import episode_draws
from prada_jax.sim.params import SimParamsError
from prada_jax.sim.state import init_state

# The source checkout (git worktrees of --reference_rev, experiments/api_timer.py); None for an installed copy.
REPO_ROOT = data_paths.source_root()

FLAGS = flags.FLAGS
flags.DEFINE_list("episodes_list", ["1", "16", "256", "1024", "4096"], "Episode counts of the scaling table.")
flags.DEFINE_list("max_users_list", ["16", "32", "64"], "User capacities U of the capacity table.")
flags.DEFINE_integer("max_users", 64, "U of the episode table, the oracle and the profile.")
flags.DEFINE_integer("users_episodes", 256, "Episodes of each row of the capacity table.")
flags.DEFINE_integer("horizon_ms", 1000, "Simulated slots (1 ms each) per episode.")
flags.DEFINE_integer("warmup_ms", 100, "Warm-up slots (not counted in the metrics; simulated all the same).")
flags.DEFINE_string("dataset", "gsm8k", "Trace under --traces_dir.")
flags.DEFINE_string("traces_dir", data_paths.shipped_dir("traces") or "traces",
                    "Folder of <dataset>.npz (default: the shipped traces).")
flags.DEFINE_string("policy", "prada", "Benchmark policy: any registered policy (prada_jax.sim.registry); learned "
                    "ones use a PRM-gain stand-in table.")
flags.DEFINE_integer("oracle_episodes", 2, "Oracle episodes to time (0: skip the oracle; timed only when the "
                     "oracle is passed in, as by `python -m experiments.bench`).")
flags.DEFINE_integer("oracle_horizon_ms", None, "Oracle horizon (default --horizon_ms); cost scales with slots.")
flags.DEFINE_integer("repeats", 1, "Timed runs per configuration after the compile (the fastest is kept).")
flags.DEFINE_integer("seed", 0, "Episode seed.")
flags.DEFINE_integer("max_candidates", None, "Stage-2 candidate cap C (SimConfig.max_candidates): unset, the exact "
                     "cap (the default: a ladder of compiled caps, re-running only episodes that overflow); an int: "
                     "that fixed cap (the oracle truncates the same way).")
flags.DEFINE_bool("profile", True, "Profile one run (jax.profiler) and break it down by op / source line.")
flags.DEFINE_integer("profile_episodes", 256, "Episodes of the profiled run.")
flags.DEFINE_integer("profile_horizon_ms", 200, "Slots of the profiled run.")
flags.DEFINE_bool("sweep_check", False, "Time the issue-6 sweep: B values x datasets x episodes x horizon.")
flags.DEFINE_list("sweep_datasets", ["gsm8k", "math500", "gaokao2023en"], "Datasets of --sweep_check.")
flags.DEFINE_list("sweep_values", ["1e5", "2e5", "5e5", "1e6", "2e6", "5e6", "1e7", "2e7", "4e7", "1e8"],
                  "Bandwidth values (bit/s) of --sweep_check.")
flags.DEFINE_integer("sweep_episodes", 256, "Episodes per grid point of --sweep_check.")
flags.DEFINE_integer("sweep_horizon_ms", 10000, "Slots per episode of --sweep_check.")
flags.DEFINE_integer("sweep_warmup_ms", 1000, "Warm-up slots of --sweep_check.")
flags.DEFINE_integer("sweep_full_horizon_ms", 10000,
                     "Horizon the sweep target refers to; a shorter --sweep_horizon_ms is extrapolated to it.")
flags.DEFINE_float("sweep_target_s", 300.0, "Target wall time of --sweep_check (5 minutes).")
flags.DEFINE_bool("quick", False, "Small sizes everywhere (smoke test): overrides the size flags.")
flags.DEFINE_string("out", os.path.join("results", "bench.json"), "JSON output path.")
flags.DEFINE_bool("api_check", False, "Time the public API's default (experiments/api_timer.py: simulate_grid, gsm8k, "
                  "shipped PRADA table, U = 64, --api_episodes x --horizon_ms) on one device per core and on one, "
                  "alternating with --reference_rev when given; wall and process CPU seconds. Source checkout only.")
flags.DEFINE_integer("api_episodes", 1024, "Episodes of --api_check.")
flags.DEFINE_integer("api_rounds", 2, "Alternating rounds of --api_check (each: this code, then the reference).")
flags.DEFINE_string("reference_rev", None,
                    "A git revision (e.g. a commit before an optimisation) to time in the same run, in a temporary "
                    "worktree with its own code: prints this code's throughput / the reference's per episode count.")

# Every registered policy (prada_jax.sim.registry) can be benchmarked without a trained checkpoint: policies whose
# table kind reads the learned Stage-1 table (prada, pi_only, random_policy, ...) get a PRM-gain stand-in
# (registry.prm_gain_table): same Stage-2 code path and inputs. A live view: name -> registry.Policy.
BENCH_POLICIES = registry.POLICIES
ORACLE_INT_FIELDS = ("arrived", "completed", "correct", "unfinished", "dropped", "offloaded_steps",
                     "executed_steps")
ORACLE_FLOAT_FIELDS = ("processing_s", "communication_s", "queuing_s", "sojourn_s", "server_work_s",
                       "bandwidth_used_bit", "server_slot_busy_s", "bandwidth_reserved_bit")


# ---------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------


def setup(dataset: str, policy: str, dataset_flag: str = "dataset"):
    """bench_setup.setup with --traces_dir; a bad name or trace is a usage error naming the flag."""
    try:
        return bench_setup.setup(dataset, policy, FLAGS.traces_dir, dataset_flag)
    except ValueError as err:
        raise app.UsageError(str(err)) from err


def maxrss_mb() -> float:
    """Peak resident memory of this process so far (MB; monotone over the run)."""
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20  # KB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def device_memory() -> dict | None:
    """jax device memory_stats (None on backends without them, e.g. CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    keep = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keep if k in stats}


def compiled_memory(compiled) -> dict | None:
    """XLA's static buffer sizes of a compiled executable (bytes)."""
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if mem is None:
        return None
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes")
    return {f: int(getattr(mem, f)) for f in fields if hasattr(mem, f)}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------


def time_jax(packed, table, grid, config, episodes: int, seed: int, repeats: int = 1):
    """Compile and run what simulate_grid runs (over every local device, prada_jax.sharding.prepare_grid) once
    per repeat; returns (record, metrics)."""
    import jax
    import numpy as np

    if repeats < 1:  # before the compile, not after it
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs, exact = [], None
    if config.max_candidates is None:
        # The exact cap (the default): time the public call, `simulate_grid`. Its first call compiles every cap it
        # needs (trace + compile = first call - fastest timed call); the timed calls reuse them.
        t0 = time.perf_counter()
        out = jax.block_until_ready(sim_run.simulate_grid(packed, table, grid, config, episodes, seed))
        first_s = time.perf_counter() - t0
        for _ in range(repeats):
            start = time.perf_counter()
            out = jax.block_until_ready(sim_run.simulate_grid(packed, table, grid, config, episodes, seed))
            runs.append(time.perf_counter() - start)
        t1, t2 = t0, t0 + max(0.0, first_s - min(runs))  # trace, lower and XLA of every cap, in "compile_s"
        compiled = None
        caps, counts = np.unique(np.asarray(out.candidate_cap), return_counts=True)
        exact = {"ladder": list(sim_run.candidate_ladder(config)),
                 "episodes_by_cap": {int(c): int(n) for c, n in zip(caps, counts)},
                 "max_candidates_seen": int(np.max(np.asarray(out.max_candidates_seen)))}
    else:
        t0 = time.perf_counter()
        fn, args, trim = sharding.prepare_grid(packed, table, grid, config, episodes, seed)
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        for _ in range(repeats):
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            runs.append(time.perf_counter() - start)
        out = trim(out)
    run_s = min(runs)
    g = int(np.shape(grid.bandwidth_bps)[0])
    episode_slots = g * episodes * config.num_slots

    # Memory per episode: the carried state (users + totals) plus its share of XLA's temporaries for this batch.
    state_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(
        init_state(config.max_users, packed.slm_step_tokens.shape[1])))
    temp_bytes = ((compiled_memory(compiled) if compiled else None) or {}).get("temp_size_in_bytes", 0)
    bytes_per_episode = state_bytes + temp_bytes / (g * episodes)
    record = {
        "state_bytes_per_episode": state_bytes, "bytes_per_episode": bytes_per_episode,
        "episodes_per_gib": int(2**30 // bytes_per_episode),
        "episodes": episodes, "grid": g, "max_users": config.max_users, "slots": config.num_slots,
        "devices": sharding.grid_devices(),
        "trace_s": t1 - t0, "compile_s": t2 - t1, "run_s": run_s, "runs_s": runs,
        "episode_slots_per_s": episode_slots / run_s,
        "user_slots_per_s": episode_slots * config.max_users / run_s,
        "memory": {"maxrss_mb": maxrss_mb(), "compiled": compiled_memory(compiled) if compiled else None,
                   "device": device_memory()},
        "exact_cap": exact,  # the ladder and how many episodes each cap finished (None: a fixed cap)
        "completed_mean": float(np.mean(np.asarray(out.completed))),
        "dropped_mean": float(np.mean(np.asarray(out.dropped))),
    }
    return record, out


def time_oracle(simulate_reference, trace, table, params, config, episodes: int, seed: int):
    """Run the NumPy oracle `simulate_reference(trace, table, params, config, key) -> metrics dict` (the reference
    simulator of tests/reference_sim.py) on `episodes` episodes (keys as simulate_grid's); returns (record, metrics
    list)."""
    import jax

    keys = sim_run.episode_keys(episodes, seed)
    n, k = trace.slm_step_tokens.shape
    # Compile the oracle's draw function outside the timed loop (its per-episode call is timed).
    jax.block_until_ready(episode_draws(keys[0], config.num_slots, params.arrival_rate, n, k, config.max_users,
                                        config.max_arrivals_per_slot))
    times, metrics = [], []
    for e in range(episodes):
        start = time.perf_counter()
        metrics.append(simulate_reference(trace, table, params, config, keys[e]))
        times.append(time.perf_counter() - start)
    per_episode = sum(times) / len(times)
    record = {
        "episodes": episodes, "max_users": config.max_users, "slots": config.num_slots, "episode_s": times,
        "per_episode_s": per_episode, "episode_slots_per_s": config.num_slots / per_episode,
        "user_slots_per_s": config.num_slots * config.max_users / per_episode,
    }
    return record, metrics


def compare_with_oracle(jax_metrics, oracle_metrics) -> dict:
    """Episode-by-episode agreement of grid point 0 with the oracle (ints exact, floats rtol 2e-4)."""
    import numpy as np

    worst, mismatches = 0.0, []
    for e, want in enumerate(oracle_metrics):
        for name in ORACLE_INT_FIELDS:
            got = int(np.asarray(getattr(jax_metrics, name))[0, e])
            if got != int(want[name]):
                mismatches.append(f"episode {e} {name}: jax {got} oracle {want[name]}")
        for name in ORACLE_FLOAT_FIELDS:
            got = float(np.asarray(getattr(jax_metrics, name))[0, e])
            rel = abs(got - want[name]) / max(abs(want[name]), 1e-9)
            worst = max(worst, rel)
            if rel > 2e-4:
                mismatches.append(f"episode {e} {name}: jax {got:.6g} oracle {want[name]:.6g}")
    return {"agrees": not mismatches, "max_rel_diff": worst, "mismatches": mismatches[:10]}


# ---------------------------------------------------------------------------------------------------------------
# Profile: jax.profiler trace -> time per HLO op -> source line and enclosing loop
# ---------------------------------------------------------------------------------------------------------------

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*")
_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) [(].*[{]\s*$")
_CALLS = re.compile(r"\b(?:body|condition|to_apply|calls)=%?([\w.\-]+)")
_CALLED = re.compile(r"called_computations=\{([^}]*)\}")
_OPCODE = re.compile(r"\b([a-z][\w\-]*)\(")


def parse_hlo(text: str) -> dict:
    """Instruction name -> {loc, op_name, comp, kind} and computation -> calling instruction, from HLO text."""
    tables = {"FileNames": {}, "FunctionNames": {}, "FileLocations": {}, "StackFrames": {}}
    section = None
    instrs, caller, comp = {}, {}, None
    for line in text.splitlines():
        head = line.strip()
        if head in tables:
            section = head
            continue
        if section is not None:
            m = re.match(r"^(\d+) (.*)$", head)
            if m:
                tables[section][int(m.group(1))] = m.group(2)
                continue
            section = None
        m = _COMP.match(line)
        if m and " = " not in line:
            comp = m.group(1)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name = m.group(1)
        op = re.search(r'op_name="([^"]*)"', line)
        frame = re.search(r"stack_frame_id=(\d+)", line)
        kind = _OPCODE.search(line, line.index(" = "))
        instrs[name] = {"op_name": op.group(1) if op else "", "frame": int(frame.group(1)) if frame else None,
                        "comp": comp, "kind": kind.group(1) if kind else ""}
        targets = _CALLS.findall(line) + [t for group in _CALLED.findall(line) for t in group.split(",")]
        for target in targets:
            caller[target.strip().lstrip("%")] = name

    def field(text, key):
        m = re.search(rf"{key}=(\d+)", text)
        return int(m.group(1)) if m else None

    def location(frame_id):
        frame = tables["StackFrames"].get(frame_id)
        loc = tables["FileLocations"].get(field(frame, "file_location_id")) if frame else None
        if loc is None:
            return "?"
        path = tables["FileNames"].get(field(loc, "file_name_id"), '"?"').strip('"')
        func = tables["FunctionNames"].get(field(loc, "function_name_id"), '"?"').strip('"')
        return f"{os.path.relpath(path, REPO_ROOT) if REPO_ROOT and path.startswith(REPO_ROOT) else path}:{field(loc, 'line')} {func}"

    for info in instrs.values():
        info["loc"] = location(info["frame"])
    return {"instrs": instrs, "caller": caller}


def enclosing_loops(hlo: dict, name: str) -> list[str]:
    """Source locations of the while loops around an instruction, outermost first."""
    loops, seen = [], set()
    comp = hlo["instrs"].get(name, {}).get("comp")
    while comp is not None and comp not in seen:
        seen.add(comp)
        parent = hlo["caller"].get(comp)
        if parent is None:
            break
        info = hlo["instrs"][parent]
        if info["kind"] == "while":
            loops.append(info["loc"])
        comp = info["comp"]
    return loops[::-1]


def profile_run(compiled, args, top: int = 25) -> dict:
    """Run `compiled(*args)` under jax.profiler; aggregate thunk times by source line and enclosing loop.

    Leaf ops (not while/call thunks) are timed exclusively; while thunks give each loop's inclusive time.
    On CPU two XLA threads may run thunks concurrently, so leaf sums can exceed the wall time.
    """
    import jax

    hlo = parse_hlo(compiled.as_text())
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            wall = time.perf_counter() - start
        files = glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        if not files:
            return {"error": "jax.profiler wrote no perfetto trace"}
        with gzip.open(files[0], "rt") as handle:
            trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_line, by_loop, loops_inclusive, kinds = (collections.Counter() for _ in range(4))
    calls = collections.Counter()
    leaf_total = 0.0
    for ev in events:
        if ev.get("ph") != "X" or ev.get("name") not in hlo["instrs"]:
            continue
        name, dur = ev["name"], ev.get("dur", 0.0) / 1e3  # ms
        info = hlo["instrs"][name]
        if info["kind"] == "while":
            loops_inclusive[info["loc"]] += dur
            calls[info["loc"]] += 1
            continue
        if info["kind"] in ("call", "conditional"):
            continue
        loops = enclosing_loops(hlo, name)
        inner = loops[-1] if loops else "(no loop)"
        by_line[f"{info['loc']} [{info['kind']}]"] += dur
        by_loop[inner] += dur
        kinds[info["kind"]] += dur
        leaf_total += dur

    def rows(counter, n=top):
        return [{"where": k, "ms": round(v, 2), "share": round(v / leaf_total, 4) if leaf_total else None}
                for k, v in counter.most_common(n)]

    return {
        "wall_s": wall,
        "leaf_op_ms": round(leaf_total, 2),
        "loops_inclusive": [{"loop": k, "ms": round(v, 2), "executions": calls[k]}
                            for k, v in loops_inclusive.most_common()],
        "by_innermost_loop": rows(by_loop),
        "by_source_line": rows(by_line),
        "by_op_kind": rows(kinds, 12),
    }


# ---------------------------------------------------------------------------------------------------------------
# Sweep check (target: < 5 minutes)
# ---------------------------------------------------------------------------------------------------------------


def sweep_check(datasets, values, episodes, horizon, warmup, policy, max_users, seed) -> dict:
    """Time a bandwidth sweep end to end: load, compile, run and summarise every dataset."""
    import jax

    start = time.perf_counter()
    per_dataset = []
    for dataset in datasets:
        t0 = time.perf_counter()
        _, packed, table, scheduler, sampling = setup(dataset, policy)
        config = make_config(horizon, warmup, max_users, scheduler, sampling, FLAGS.max_candidates)
        grid = default_grid(bandwidth_bps=[float(v) for v in values])
        if config.max_candidates is None:  # the exact cap: the public call, its compiles included in run_s
            t1 = t2 = time.perf_counter()
            out = jax.block_until_ready(sim_run.simulate_grid(packed, table, grid, config, episodes, seed))
        else:
            fn, args, trim = sharding.prepare_grid(packed, table, grid, config, episodes, seed)
            t1 = time.perf_counter()
            compiled = fn.lower(*args).compile()
            t2 = time.perf_counter()
            out = trim(jax.block_until_ready(compiled(*args)))
        t3 = time.perf_counter()
        summary = summarize(out)
        t4 = time.perf_counter()
        per_dataset.append({"dataset": dataset, "setup_s": t1 - t0, "compile_s": t2 - t1, "run_s": t3 - t2,
                            "summarize_s": t4 - t3, "total_s": t4 - t0,
                            "accuracy": [round(float(x), 4) for x in summary["accuracy"][0]]})
        logging.info("sweep %s: compile %.1f s, run %.1f s", dataset, t2 - t1, t3 - t2)
    total = time.perf_counter() - start
    episode_slots = len(datasets) * len(values) * episodes * horizon
    # Every slot of the loop costs about the same, so the run time scales with the horizon; setup and compile do not.
    scale = max(1.0, FLAGS.sweep_full_horizon_ms / horizon)
    run_s = sum(d["run_s"] for d in per_dataset)
    estimate = total + (scale - 1.0) * run_s
    return {"datasets": list(datasets), "values": [float(v) for v in values], "episodes": episodes,
            "horizon_ms": horizon, "max_users": max_users, "policy": policy, "total_s": total,
            "full_horizon_ms": max(horizon, FLAGS.sweep_full_horizon_ms), "estimated_full_s": estimate,
            "extrapolated": scale > 1.0, "target_s": FLAGS.sweep_target_s,
            "meets_target": estimate < FLAGS.sweep_target_s, "episode_slots_per_s": episode_slots / run_s,
            "per_dataset": per_dataset}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    header = [c[1] for c in columns]
    cells = [[r.get(c[0], "") for c in columns] for r in rows]
    widths = [max(len(h), *(len(str(c[i])) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in cells:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def table_row(rec: dict, oracle_rate: float | None) -> dict:
    mem = rec["memory"]["compiled"] or {}
    return {
        "E": rec["episodes"], "U": rec["max_users"], "T": rec["slots"], "dev": rec["devices"],
        "compile": f"{rec['compile_s']:.1f}" if rec["compile_s"] > 0.05 else "cached", "run": f"{rec['run_s']:.2f}",
        "usr": fmt_rate(rec["user_slots_per_s"]), "eps": fmt_rate(rec["episode_slots_per_s"]),
        "x": f"{rec['user_slots_per_s'] / oracle_rate:.0f}" if oracle_rate else "-",
        "temp": f"{mem.get('temp_size_in_bytes', 0) / 2**20:.1f}", "rss": f"{rec['memory']['maxrss_mb']:.0f}",
        "state": f"{rec['state_bytes_per_episode']:,}", "per_gib": f"{rec['episodes_per_gib']:,}",
    }


COLUMNS = [("E", "episodes"), ("U", "U"), ("T", "slots"), ("dev", "devices"), ("compile", "compile_s"),
           ("run", "run_s"), ("usr", "user-slots/s"), ("eps", "episode-slots/s"), ("x", "x oracle"), ("temp", "XLA temp MB"),
           ("rss", "maxrss MB"), ("state", "state B/episode"), ("per_gib", "episodes/GiB")]


QUICK_SIZES = {
    "episodes_list": ["1", "16", "64"], "max_users_list": ["16", "32"], "max_users": 32, "users_episodes": 16,
    "horizon_ms": 200, "warmup_ms": 20, "oracle_episodes": 1, "profile_episodes": 16, "profile_horizon_ms": 50,
    "sweep_datasets": ["gsm8k"], "sweep_values": ["1e6", "4e7"], "sweep_episodes": 8, "sweep_horizon_ms": 200,
    "sweep_warmup_ms": 20, "sweep_full_horizon_ms": 200,
}


def apply_quick() -> None:
    """--quick: small sizes for every size flag not given on the command line."""
    for name, value in QUICK_SIZES.items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def median_rate(record: dict) -> float:
    """User-slot updates/s of a record's median timed run (its `user_slots_per_s` is the fastest run's)."""
    import numpy as np

    runs = record.get("runs_s") or [record["run_s"]]
    return record["user_slots_per_s"] * record["run_s"] / float(np.median(runs))


def time_reference(rev: str, episodes_list) -> dict:
    """Episode-table throughput of git revision `rev` (its own bench.py in a temporary worktree), same sizes."""
    import subprocess

    tmp = tempfile.mkdtemp(prefix="prada-bench-ref-")
    subprocess.run(["git", "-C", REPO_ROOT, "worktree", "add", "--detach", tmp, rev], check=True,
                   capture_output=True, text=True)
    try:
        out = os.path.join(tmp, "reference_bench.json")
        cmd = [sys.executable, os.path.join(tmp, "experiments", "bench.py"),
               "--episodes_list=" + ",".join(str(e) for e in episodes_list), f"--max_users_list={FLAGS.max_users}",
               f"--max_users={FLAGS.max_users}", "--users_episodes=1", "--oracle_episodes=0", "--noprofile",
               f"--horizon_ms={FLAGS.horizon_ms}", f"--warmup_ms={FLAGS.warmup_ms}",
               f"--dataset={FLAGS.dataset}", f"--policy={FLAGS.policy}", f"--repeats={FLAGS.repeats}",
               f"--seed={FLAGS.seed}", f"--out={out}"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=tmp))
        if proc.returncode != 0:
            raise RuntimeError(f"reference bench at {rev} failed: {proc.stderr.strip().splitlines()[-1:]}")
        with open(out, encoding="utf-8") as handle:
            ref = json.load(handle)
        return {"rev": rev, "episodes_table": ref["episodes_table"]}
    finally:
        subprocess.run(["git", "-C", REPO_ROOT, "worktree", "remove", "--force", tmp], capture_output=True)


def api_check(rev: str | None, rounds: int, episodes: int) -> dict:
    """experiments/api_timer.py of this code and of `rev` (a temporary worktree; the same data files, this
    checkout's), alternating, on one device per core and on one. Returns the records and the ratios of the fastest
    wall and CPU seconds (reference / this code)."""
    import subprocess

    timer = os.path.join(REPO_ROOT, "experiments", "api_timer.py")
    trees = {"this": REPO_ROOT}
    if rev:
        trees["reference"] = tempfile.mkdtemp(prefix="prada-bench-api-")
        subprocess.run(["git", "-C", REPO_ROOT, "worktree", "add", "--detach", trees["reference"], rev], check=True,
                       capture_output=True, text=True)
    out = {"rev": rev, "episodes": episodes, "runs": []}
    try:
        for devices in sorted({sharding.available_cores(), 1}, reverse=True):
            for _ in range(rounds):
                for name, tree in trees.items():
                    cmd = [sys.executable, timer, f"--data_root={REPO_ROOT}", f"--devices={devices}",
                           f"--episodes={episodes}", f"--slots={FLAGS.horizon_ms}", f"--repeats={FLAGS.repeats}"]
                    proc = subprocess.run(cmd, cwd=tempfile.gettempdir(), capture_output=True, text=True,
                                          env=dict(os.environ, PYTHONPATH=tree, XLA_FLAGS=""))
                    if proc.returncode != 0:
                        raise RuntimeError(f"api_timer ({name}) failed: {proc.stderr.strip().splitlines()[-1:]}")
                    rec = dict(json.loads(proc.stdout.strip().splitlines()[-1]), tree=name)
                    out["runs"].append(rec)
                    print(f"  api {name} devices={devices}: wall {min(rec['wall_s']):.2f} s, "
                          f"CPU {min(rec['cpu_s']):.2f} s, first call {rec['first_s']:.1f} s, load "
                          f"{rec['load_average'][0]:.1f}", flush=True)
    finally:
        if rev:
            subprocess.run(["git", "-C", REPO_ROOT, "worktree", "remove", "--force", trees["reference"]],
                           capture_output=True)
    if rev:
        out["ratios"] = {}
        for devices in sorted({r["devices"] for r in out["runs"]}):
            best = {name: (min(min(r["wall_s"]) for r in out["runs"] if r["tree"] == name and r["devices"] == devices),
                           min(min(r["cpu_s"]) for r in out["runs"] if r["tree"] == name and r["devices"] == devices))
                    for name in trees}
            out["ratios"][devices] = {"wall": best["reference"][0] / best["this"][0],
                                      "cpu": best["reference"][1] / best["this"][1]}
    return out


def check_configs(users_list, scheduler: str, sampling: bool) -> None:
    """Build every SimConfig / grid the run will use (and load the --sweep_check traces) before anything is printed,
    so that a size the simulator refuses is a one-line usage error, not a traceback after the header."""
    try:
        make_config(FLAGS.horizon_ms, FLAGS.warmup_ms, FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
        for users in users_list:
            make_config(FLAGS.horizon_ms, FLAGS.warmup_ms, users, scheduler, sampling, FLAGS.max_candidates)
        if FLAGS.oracle_episodes > 0:
            slots = FLAGS.oracle_horizon_ms or FLAGS.horizon_ms
            make_config(slots, min(FLAGS.warmup_ms, slots - 1), FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
        if FLAGS.profile:
            make_config(FLAGS.profile_horizon_ms, min(FLAGS.warmup_ms, FLAGS.profile_horizon_ms - 1),
                        FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
        if FLAGS.sweep_check:
            make_config(FLAGS.sweep_horizon_ms, FLAGS.sweep_warmup_ms, FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
            default_grid(bandwidth_bps=[float(v) for v in FLAGS.sweep_values])
    except SimParamsError as err:
        raise app.UsageError(f"the size flags give a configuration the simulator refuses: {err}") from None
    if FLAGS.sweep_check:
        for dataset in FLAGS.sweep_datasets:
            setup(dataset, FLAGS.policy, "sweep_datasets")


def main(argv, oracle=None):
    """`oracle`: the NumPy reference simulator (see time_oracle), or None to skip the oracle rows."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments {argv[1:]}")
    cli_support.quiet_third_party_logs(FLAGS.verbosity)  # no TPU probe / orbax INFO unless asked
    if FLAGS.quick:
        apply_quick()
    if REPO_ROOT is None and (FLAGS.reference_rev or FLAGS.api_check):
        raise app.UsageError("--reference_rev and --api_check need a source checkout (git worktrees)")
    if oracle is None and FLAGS.oracle_episodes > 0:
        print("oracle rows skipped: the NumPy oracle (tests/reference_sim.py) is timed only from the repository "
              "checkout, `python -m experiments.bench`", file=sys.stderr, flush=True)
        FLAGS.oracle_episodes = 0
    import jax
    import numpy as np

    episodes_list = cli_support.positive_ints("episodes_list", FLAGS.episodes_list)
    users_list = cli_support.positive_ints("max_users_list", FLAGS.max_users_list)
    try:
        bench_setup.check_flags(FLAGS.flag_values_dict())
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    trace, packed, table, scheduler, sampling = setup(FLAGS.dataset, FLAGS.policy)
    check_configs(users_list, scheduler, sampling)
    grid = default_grid()
    result = {
        "config": {k: FLAGS[k].value for k in ("dataset", "policy", "horizon_ms", "warmup_ms", "max_users",
                                               "users_episodes", "oracle_episodes", "seed", "repeats", "quick", "max_candidates")},
        "scheduler": scheduler, "trace_shape": list(trace.slm_step_tokens.shape),
        "machine": {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_start": load_average(), **sharding.local_device_summary()},
    }
    print(f"bench: {FLAGS.dataset} {list(trace.slm_step_tokens.shape)}, policy {FLAGS.policy} ({scheduler}), "
          f"{FLAGS.horizon_ms} slots, backend {jax.default_backend()} x{jax.device_count()}, "
          f"load {load_average()}")

    # Oracle first: its rate is the denominator of every ratio.
    oracle_record, oracle_metrics = None, None
    oracle_slots = FLAGS.oracle_horizon_ms or FLAGS.horizon_ms
    if FLAGS.oracle_episodes > 0:
        config = make_config(oracle_slots, min(FLAGS.warmup_ms, oracle_slots - 1), FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
        params = jax.tree.map(lambda x: x[0], grid)
        oracle_record, oracle_metrics = time_oracle(oracle, trace, table, params, config, FLAGS.oracle_episodes,
                                                    FLAGS.seed)
        print(f"oracle: {oracle_record['per_episode_s']:.2f} s/episode ({oracle_slots} slots, U={FLAGS.max_users}) -> "
              f"{fmt_rate(oracle_record['user_slots_per_s'])} user-slots/s")
    result["oracle"] = oracle_record
    oracle_rate = oracle_record["user_slots_per_s"] if oracle_record else None

    config = make_config(FLAGS.horizon_ms, FLAGS.warmup_ms, FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
    episode_rows, records = [], []
    for episodes in episodes_list:
        rec, out = time_jax(packed, table, grid, config, episodes, FLAGS.seed, FLAGS.repeats)
        if oracle_record and "oracle_check" not in result and episodes >= FLAGS.oracle_episodes and \
                oracle_slots == FLAGS.horizon_ms:
            result["oracle_check"] = compare_with_oracle(out, oracle_metrics)
        if oracle_rate:
            rec["x_oracle"] = rec["user_slots_per_s"] / oracle_rate
        records.append(rec)
        episode_rows.append(table_row(rec, oracle_rate))
        print(f"  E={episodes}: compile {rec['compile_s']:.1f} s, run {rec['run_s']:.2f} s, "
              f"{fmt_rate(rec['user_slots_per_s'])} user-slots/s", flush=True)
    result["episodes_table"] = records
    print_table(f"Episodes (U={FLAGS.max_users}, {FLAGS.horizon_ms} slots, 1 grid point)", episode_rows, COLUMNS)

    user_rows, user_records = [], []
    for users in users_list:
        config_u = make_config(FLAGS.horizon_ms, FLAGS.warmup_ms, users, scheduler, sampling, FLAGS.max_candidates)
        rec, _ = time_jax(packed, table, grid, config_u, FLAGS.users_episodes, FLAGS.seed, FLAGS.repeats)
        user_records.append(rec)
        user_rows.append(table_row(rec, None))
        print(f"  U={users}: compile {rec['compile_s']:.1f} s, run {rec['run_s']:.2f} s", flush=True)
    result["users_table"] = user_records
    print_table(f"User capacity (E={FLAGS.users_episodes}, {FLAGS.horizon_ms} slots)", user_rows, COLUMNS)

    if oracle_rate:
        at = [r for r in records if r["episodes"] == 1024] or records[-1:]
        result["headline"] = {
            "episodes": at[0]["episodes"], "x_oracle": at[0]["user_slots_per_s"] / oracle_rate,
            "target_x": 100.0, "max_compile_s": max(r["compile_s"] for r in records + user_records),
            "target_compile_s": 30.0,
        }
        h = result["headline"]
        print(f"\nheadline: {h['x_oracle']:.0f}x the oracle at E={h['episodes']} (target >= 100x); "
              f"compile <= {h['max_compile_s']:.1f} s (target < 30 s)")
        if "oracle_check" in result:
            print(f"oracle agreement on {FLAGS.oracle_episodes} episode(s): {result['oracle_check']['agrees']} "
                  f"(max rel diff {result['oracle_check']['max_rel_diff']:.2e})")

    if FLAGS.reference_rev:
        ref = time_reference(FLAGS.reference_rev, episodes_list)
        by_e = {r["episodes"]: r for r in ref["episodes_table"]}
        ref["ratios"] = {r["episodes"]: r["user_slots_per_s"] / by_e[r["episodes"]]["user_slots_per_s"]
                         for r in records if r["episodes"] in by_e}
        ref["median_ratios"] = {r["episodes"]: median_rate(r) / median_rate(by_e[r["episodes"]])
                                for r in records if r["episodes"] in by_e}
        result["reference"] = ref
        print(f"\nreference {FLAGS.reference_rev} (same sizes, same machine, this run; fastest of "
              f"{FLAGS.repeats} run(s) each, and the ratio of the median runs):")
        for r in records:
            if r["episodes"] in by_e:
                print(f"  E={r['episodes']}: {fmt_rate(r['user_slots_per_s'])} vs "
                      f"{fmt_rate(by_e[r['episodes']]['user_slots_per_s'])} user-slots/s = "
                      f"{ref['ratios'][r['episodes']]:.2f}x (medians: {ref['median_ratios'][r['episodes']]:.2f}x)")

    if FLAGS.api_check:
        print(f"\npublic API default (gsm8k, shipped table, U=64, E={FLAGS.api_episodes}, {FLAGS.horizon_ms} slots)"
              + (f" against {FLAGS.reference_rev}, alternating:" if FLAGS.reference_rev else ":"))
        res = api_check(FLAGS.reference_rev, FLAGS.api_rounds, FLAGS.api_episodes)
        result["api_check"] = res
        for devices, ratio in res.get("ratios", {}).items():
            print(f"  devices={devices}: {ratio['wall']:.2f}x {FLAGS.reference_rev} on the fastest wall time, "
                  f"{ratio['cpu']:.2f}x on process CPU seconds")

    if FLAGS.profile:
        config_p = make_config(FLAGS.profile_horizon_ms, min(FLAGS.warmup_ms, FLAGS.profile_horizon_ms - 1),
                               FLAGS.max_users, scheduler, sampling, FLAGS.max_candidates)
        keys = sim_run.episode_keys(FLAGS.profile_episodes, FLAGS.seed)
        config_p = sim_run.with_cap(config_p, sim_run.candidate_ladder(config_p)[0])  # the first cap's program
        compiled = sim_run._simulate_grid.lower(packed, table, grid, config_p, keys).compile()
        args = (packed, table, grid, keys)
        jax.block_until_ready(compiled(*args))
        prof = profile_run(compiled, args)
        prof.update(episodes=FLAGS.profile_episodes, slots=FLAGS.profile_horizon_ms, max_users=FLAGS.max_users)
        result["profile"] = prof
        if "error" not in prof:
            print(f"\nProfile (E={FLAGS.profile_episodes}, {FLAGS.profile_horizon_ms} slots, U={FLAGS.max_users}): "
                  f"wall {prof['wall_s']:.2f} s, leaf ops {prof['leaf_op_ms'] / 1e3:.2f} s")
            for row in prof["loops_inclusive"][:6]:
                print(f"  loop {row['loop']}: {row['ms']:.0f} ms inclusive ({row['executions']} runs)")
            for row in prof["by_innermost_loop"][:8]:
                print(f"  in {row['where']}: {row['ms']:.0f} ms ({100 * row['share']:.0f}% of leaf ops)")
            for row in prof["by_source_line"][:12]:
                print(f"  {row['where']}: {row['ms']:.0f} ms ({100 * row['share']:.0f}%)")

    if FLAGS.sweep_check:
        values = [float(v) for v in FLAGS.sweep_values]
        res = sweep_check(FLAGS.sweep_datasets, values, FLAGS.sweep_episodes, FLAGS.sweep_horizon_ms,
                          FLAGS.sweep_warmup_ms, FLAGS.policy, FLAGS.max_users, FLAGS.seed)
        result["sweep_check"] = res
        print(f"\nsweep check: {len(values)} B values x {len(FLAGS.sweep_datasets)} datasets x "
              f"{FLAGS.sweep_episodes} episodes x {FLAGS.sweep_horizon_ms} slots: {res['total_s']:.1f} s")
        if res["extrapolated"]:
            print(f"  extrapolated to {res['full_horizon_ms']} slots: {res['estimated_full_s']:.0f} s")
        print(f"  target < {FLAGS.sweep_target_s:.0f} s: {'met' if res['meets_target'] else 'NOT met'}")

    result["machine"]["load_average_end"] = load_average()
    result["machine"]["maxrss_mb"] = maxrss_mb()
    out_dir = os.path.dirname(FLAGS.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, default=lambda x: float(np.asarray(x)))
    print(f"\nwrote {FLAGS.out}")


def run(oracle=None):
    """Console script prada-bench (no oracle), and the repository's experiments/bench.py, which passes `oracle`:
    the NumPy reference simulator of tests/reference_sim.py (the package never imports tests/)."""
    cli_support.run_main(functools.partial(main, oracle=oracle), __doc__,
                         key_flag_modules=(sys.modules[__name__],))


if __name__ == "__main__":
    run()
