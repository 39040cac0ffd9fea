"""The sweep runner: one (dataset, policy) point per `simulate_grid` call, learned tables (trained on first
use), and the resumable loop `run_sweep` that appends each finished point to the `ResultStore`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging

from prada_jax import constants as C
from prada_jax import data_paths, traces
from prada_jax.learn import tables as learn_tables
from prada_jax.sim import latency_models, registry, resources
from prada_jax.sim import metrics as sim_metrics
from prada_jax.sim import params as sim_params
from prada_jax.sim import run as sim_run
from prada_jax.sim.draws import required_max_arrivals
from prada_jax.sim.params import SimConfig, params_from_mapping, stack_params
from prada_jax.sweep.spec import (
    GRID,
    NO_SWEEP,
    RANDOM_POLICY_PROB,
    SweepConfigError,
    SweepSpec,
    learned_table_paths,
    table_ckpt_dir,
)
from prada_jax.sweep.store import (
    REQUIRED_METRICS,
    ResultStore,
    acquire_lock,
    check_out_dir_path,
    inspect_out_dir,
    settle_pending_tables,
)

PointRunner = Callable[[SweepSpec, str, str], list[dict[str, Any]]]


class PointRows(list):
    """A point's result rows plus what run.json records about the point (`run_info`, JSON-ready); a runner may
    return a plain list instead."""

    def __init__(self, rows, run_info: dict[str, Any]):
        super().__init__(rows)
        self.run_info = run_info


def candidate_info(metrics, config: SimConfig) -> dict[str, Any]:
    """run.json's record of one point's Stage-2 candidate sets: the largest number of candidates any slot of any
    episode saw, the slots whose candidates exceeded the cap (0 with the exact cap, the default), the cap
    ("exact" or the fixed number) and how many episodes each compiled cap ran (the exact ladder's re-runs)."""
    import numpy as np

    caps, counts = np.unique(np.asarray(metrics.candidate_cap), return_counts=True)
    return {
        "largest_candidates_seen": int(np.max(np.asarray(metrics.max_candidates_seen))),
        "candidate_overflow_slots": int(np.sum(np.asarray(metrics.candidate_overflow_slots))),
        "candidate_cap": "exact" if config.max_candidates is None else int(config.max_candidates),
        "episodes_by_cap": {str(int(c)): int(n) for c, n in zip(caps, counts)},
    }


def supported_policy_names() -> tuple[str, ...]:
    """Policies this build can run: every registered one (this module imports the simulator, prada_jax.sim.run,
    and the trainer of the learned tables, prada_jax.learn.tables, so a sweep that loads it can run them all)."""
    return tuple(registry.POLICIES)


def rows_from_summary(spec: SweepSpec, dataset: str, policy: str, summary: dict, seconds: float) -> list[dict]:
    """One row per grid point from summarize()'s {name: (mean [G], ci95 [G])}.

    Key columns: dataset, policy, sweep_param, sweep_value (the swept value; empty when nothing is swept or for
    a --grid sweep), then, for a --grid sweep (sweep_param == "grid"), one column per grid parameter holding its
    value at the point."""
    import numpy as np

    missing = [m for m in REQUIRED_METRICS if m not in summary]
    if missing:
        raise KeyError(f"summarize() lacks metrics {missing}")
    names = list(REQUIRED_METRICS) + sorted(m for m in summary if m not in REQUIRED_METRICS)
    rows = []
    for g, point in enumerate(spec.grid_points()):
        row: dict[str, Any] = {
            "dataset": dataset,
            "policy": policy,
            "sweep_param": spec.sweep_param,
            "sweep_value": float(spec.sweep_values[g]) if spec.sweep_param not in (NO_SWEEP, GRID) else None,
            "episodes": spec.episodes,
        }
        if spec.sweep_param == GRID:
            row.update({name: float(value) for name, value in point.items()})
        for name in names:
            mean, ci = summary[name]
            mean, ci = np.asarray(mean).reshape(-1), np.asarray(ci).reshape(-1)
            if mean.shape[0] != spec.grid_size or ci.shape[0] != spec.grid_size:
                raise ValueError(f"summarize()[{name!r}] has {mean.shape[0]} grid points, expected {spec.grid_size}")
            row[f"{name}_mean"] = float(mean[g])
            row[f"{name}_ci95"] = float(ci[g])
        row["point_seconds"] = float(seconds)
        rows.append(row)
    return rows


def sim_config(spec: SweepSpec, scheduler: str, stage1_sampling: bool = False):
    """Static SimConfig of a sweep: horizon/warm-up/drain in slots of spec.slot_ms, U user slots, max_servers =
    largest M."""
    capacities = [g["server_capacity"] for g in spec.grid()]
    return SimConfig(
        num_slots=spec.slots(spec.horizon_ms),
        warmup_slots=spec.slots(spec.warmup_ms),
        drain_slots=spec.slots(spec.drain_ms),
        slot_seconds=spec.slot_ms / 1e3,
        max_users=spec.max_users,
        max_servers=max(capacities),
        max_arrivals_per_slot=None,  # chosen by the simulator for the largest rate (P(N > A_max) <= 1e-9)
        scheduler=scheduler,
        stage1_sampling=stage1_sampling,
        latency_model=spec.latency_model,
    )


def params_grid(spec: SweepSpec):
    """SimParams with a leading grid axis [G], one entry per swept value; arrival_rate converted from tasks per ms
    (the flag's unit) to tasks per slot."""
    points = []
    for g in spec.grid():
        values = {k: v for k, v in g.items() if k != "server_prefill"}
        values["arrival_rate"] = spec.arrival_rate_per_slot(values["arrival_rate"])
        values["prefix_cache"] = g["server_prefill"] == "prefix"
        points.append(params_from_mapping(values))
    return stack_params(points)


def simulate_point(spec: SweepSpec, dataset: str, policy: str) -> list[dict[str, Any]]:
    """Run all swept values of one (dataset, policy) in one simulate_grid call; return its rows."""
    start = time.perf_counter()
    trace = traces.load_trace(spec.trace_path(dataset))
    packed = traces.pack_traces(trace)
    flops_llm = spec.params["flops_llm"]
    if flops_llm is None:
        # D_psi's reference server time uses one FLOP/s value; a flops_llm sweep keeps the Table-3 one for it.
        flops_llm = C.FLOPS_LLM
    table, ps = policy_setup(spec, policy, dataset, trace, flops_llm)
    if spec.latency_model != C.DEFAULT_LATENCY_MODEL and not ps.learned:
        # D_psi (TQ) under the same latency model; learned tables were trained under it (learned_table)
        table = latency_models.with_reference_server_seconds(table, trace, sim_params.make_params(), spec.latency_model)
    config = sim_config(spec, ps.scheduler, ps.stage1_sampling)
    metrics = sim_run.simulate_grid(packed, table, params_grid(spec), config, spec.episodes, spec.seed)
    summary = sim_metrics.summarize(metrics)
    rows = rows_from_summary(spec, dataset, policy, summary, time.perf_counter() - start)
    return PointRows(rows, candidate_info(metrics, config))


class PolicyTableError(RuntimeError):
    """A learned policy table is missing, was trained for another beta, or could not be trained."""


def train_policy_table(dataset: str, beta: float, traces_dir: str, ckpt_dir: str, seed: int = 0,
                       latency_model: str = C.DEFAULT_LATENCY_MODEL) -> None:
    """Train on first use: run the training command (prada-train, prada_jax.cli.train) for one dataset at `beta`
    in a child process (its progress log streams).

    Runs the documented training entry point rather than re-implementing it, so a table trained here is the
    same as one from `prada-train --datasets=<d> --beta=<b> --seed=<s>` (or `python -m prada_jax.cli.train ...`).
    A latency model other than "flops" trains with --latency_model=<it> into table_ckpt_dir(ckpt_dir, it).
    The child imports this very copy of prada_jax (its root goes first on PYTHONPATH)."""
    if data_paths.is_installed_data(ckpt_dir):
        raise PolicyTableError(
            f"no learned policy table for {dataset} among the tables shipped with the package ({ckpt_dir}, "
            f"read-only); pass --ckpt_dir=<a writable folder> to train it there at beta={beta:g}"
        )
    cmd = [
        sys.executable, "-m", "prada_jax.cli.train", f"--datasets={dataset}", f"--beta={beta!r}",
        f"--trace_dir={traces_dir}", f"--ckpt_dir={table_ckpt_dir(ckpt_dir, latency_model)}", f"--seed={seed}",
        f"--latency_model={latency_model}",
        "--frontier_betas=",  # only the table at `beta` is used here (no vmapped frontier betas: faster)
        "--resume",  # continue an interrupted first-use training (a no-op when nothing was saved yet)
        "--if_missing",  # another sweep training the same table: wait for it and use its table
    ]
    package_root = os.path.dirname(data_paths.PACKAGE_DIR)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    logging.info("No learned policy table for %s in %s: training it at beta=%g now (%s)",
                 dataset, ckpt_dir, beta, " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env,
                          preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    if proc.returncode != 0:
        raise PolicyTableError(
            f"training the policy table of {dataset} failed (exit {proc.returncode}): {' '.join(cmd)}"
        )
    logging.info("Trained the policy table of %s in %.0f s", dataset, time.perf_counter() - t0)


def _die_with_parent() -> None:
    """In the training child (Linux): receive SIGKILL when the sweep dies, so a killed sweep leaves no trainer
    behind to race a restarted one (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def learned_table(spec: SweepSpec, dataset: str, trace):
    """The learned PolicyTable (pi_theta, A_omega, D_psi) of a dataset at spec.table_beta.

    Loaded from <ckpt_dir>/<dataset>/policy_table.npz (written by prada-train, whose eval.json records
    the beta it was trained for); trained on first use when absent. A table for another beta is an error
    (never overwritten): point --ckpt_dir elsewhere or set --table_beta.
    """
    table_path, eval_path = learned_table_paths(spec.ckpt_dir, dataset, spec.latency_model)
    if not os.path.exists(table_path):
        train_policy_table(dataset, spec.table_beta, spec.traces_dir, spec.ckpt_dir, spec.seed, spec.latency_model)
    if not os.path.exists(eval_path):
        raise PolicyTableError(f"{eval_path} not found: cannot tell which beta {table_path} was trained for")
    try:
        with open(eval_path, encoding="utf-8") as handle:
            record = json.load(handle)
        trained_beta = float(record["beta"])
        trained_model = str(record.get("latency_model", C.DEFAULT_LATENCY_MODEL))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise PolicyTableError(f"{eval_path}: unreadable training record ({type(err).__name__}: {err})") from err
    if trained_model != spec.latency_model:
        raise PolicyTableError(f"{table_path} was trained under --latency_model={trained_model}, this sweep runs "
                               f"--latency_model={spec.latency_model}")
    if not math.isclose(trained_beta, spec.table_beta, rel_tol=1e-6):
        raise PolicyTableError(
            f"{table_path} was trained for beta={trained_beta:g}, this sweep needs --table_beta={spec.table_beta:g}; "
            "use another --ckpt_dir (trained on first use) or set --table_beta"
        )
    try:
        return learn_tables.load_table(table_path, shape=(trace.num_problems, trace.max_steps), trace=trace,
                                       trace_path=spec.trace_path(dataset))
    except learn_tables.TableError as err:
        raise PolicyTableError(str(err)) from err


def policy_setup(spec: SweepSpec, policy: str, dataset: str, trace, flops_llm: float):
    """(PolicyTable, registry.Policy) of a registered policy name (prada_jax.sim.registry)."""
    ps = registry.get_policy(policy)
    ctx = registry.TableContext(
        flops_llm=flops_llm, router_llm_fraction=spec.router_llm_fraction, rsd_threshold=spec.rsd_threshold,
        random_prob=RANDOM_POLICY_PROB, learned=lambda: learned_table(spec, dataset, trace),
    )
    return ps.build_table(trace, ctx), ps


# ---------------------------------------------------------------------------------------------------------------
# The resumable runner
# ---------------------------------------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec,
    out_dir: str,
    *,
    overwrite: bool = False,
    run_point: PointRunner | None = None,
    argv: Sequence[str] | None = None,
) -> ResultStore:
    """Run every (dataset, policy) point not already in out_dir; log each point's time and an ETA.

    Order: --out_dir usable, every input valid, the lock, out_dir's results read and checked against this sweep
    once (read-only; a table still to train matches what run.json recorded), THEN the missing learned tables are
    trained and their hashes compared too, and only then the ResultStore opened from that state writes run.json."""
    run_point = run_point or simulate_point
    check_out_dir_path(out_dir)  # a file, or a path through one: refused before any input is read
    if run_point is simulate_point:
        validate_inputs(spec)  # every trace and existing table, before anything is written
    lock = acquire_lock(out_dir)
    try:
        state = inspect_out_dir(out_dir, spec, spec.to_config(), overwrite=overwrite, pending_tables=True)
        if run_point is simulate_point:
            train_missing_tables(spec)
        state = settle_pending_tables(state, out_dir, spec, overwrite=overwrite)
        store = ResultStore(out_dir, spec, argv=argv, lock=lock, state=state)
    except BaseException:
        lock.release()
        raise
    try:
        return _run_points(spec, store, run_point, out_dir)
    finally:
        store.close()


def validate_inputs(spec: SweepSpec) -> None:
    """Load and check every input the sweep will read: each dataset's trace and each learned table that exists
    (a missing one is trained on first use). Raises TraceError / PolicyTableError naming the file."""
    learned = any(registry.get_policy(p).learned for p in spec.policies)
    for dataset in spec.datasets:
        trace = traces.load_trace(spec.trace_path(dataset))
        check_point_memory(spec, trace.max_steps)
        check_step_times(spec, trace)
        if trace.dataset != dataset:  # allowed (a renamed or custom trace), but never silent
            logging.warning("%s: its metadata names dataset %r, not %r; results are labelled %r",
                            spec.trace_path(dataset), trace.dataset, dataset, dataset)
        if learned and os.path.exists(learned_table_paths(spec.ckpt_dir, dataset, spec.latency_model)[0]):
            learned_table(spec, dataset, trace)


def _flag_of(spec: SweepSpec, name: str) -> str:
    """The flag that sets system parameter `name` in this sweep: its own, or the one that sweeps it."""
    if name not in spec.swept_params:
        return name
    return "grid" if spec.sweep_param == GRID else "sweep_values"


def check_step_times(spec: SweepSpec, trace) -> None:
    """SweepConfigError naming the flag (--flops_llm, ...) when a step of `trace` would take longer than float32
    can add up over an episode (prada_jax.sim.resources.step_time_problem); run before anything is written."""
    problem = resources.step_time_problem(traces.pack_traces(trace), params_grid(spec), sim_config(spec, "prada"))
    if problem:
        names = [n for n in registry.PARAMS if f"SimParams.{n}=" in problem]
        flag = _flag_of(spec, names[0]) if names else "latency_model"
        raise SweepConfigError(flag, problem)


def check_point_memory(spec: SweepSpec, max_steps: int) -> None:
    """SweepConfigError naming --episodes (or the arrival-rate flag, when the Poisson cap dominates) when one point
    of the sweep (all grid points x --episodes in one simulate_grid call) cannot fit into the available memory
    (prada_jax.sim.resources); run before anything is written."""
    rates = [spec.arrival_rate_per_slot(g["arrival_rate"]) for g in spec.grid()]
    a_max = required_max_arrivals(max(rates))
    problem = resources.memory_problem(spec.max_users, max_steps, a_max, spec.grid_size, spec.episodes)
    if problem:
        state = resources.state_bytes(spec.max_users, max_steps) * (1.0 + resources.TEMP_FACTOR)
        flag = "episodes"
        if resources.ARRIVAL_BYTES * (a_max + 1) > state:
            flag = _flag_of(spec, "arrival_rate")
        raise SweepConfigError(flag, f"one point (--episodes={spec.episodes} x {spec.grid_size} grid values) {problem}; "
                                     "use fewer --episodes, a smaller grid or fewer --max_users")


def train_missing_tables(spec: SweepSpec) -> None:
    """Train (in this process) the learned tables the sweep needs and does not have yet."""
    if not any(registry.get_policy(p).learned for p in spec.policies):
        return
    for dataset in spec.datasets:
        if not os.path.exists(learned_table_paths(spec.ckpt_dir, dataset, spec.latency_model)[0]):
            train_policy_table(dataset, spec.table_beta, spec.traces_dir, spec.ckpt_dir, spec.seed,
                               spec.latency_model)


class Eta:
    """ETA of the remaining points that leaves compile time out of the per-point run time.

    A point whose compile key (dataset, scheduler, Stage-1 sampling: same trace shapes and SimConfig) was seen
    before runs from the jit cache; its time is a pure run time. The ETA is (run time estimated from such
    compiled points) x remaining points + (first-run surplus, i.e. compile time) x compiles still ahead. Until
    one compiled point has been timed there is no estimate ("compiling")."""

    def __init__(self):
        self.seen: set = set()
        self.warm: list[float] = []  # times of points served from the jit cache
        self.cold: list[float] = []  # times of points that compiled

    def is_cold(self, key) -> bool:
        return key not in self.seen

    def record(self, key, seconds: float) -> None:
        (self.cold if key not in self.seen else self.warm).append(seconds)
        self.seen.add(key)

    def estimate(self, remaining_keys: Sequence) -> float | None:
        if not remaining_keys:
            return 0.0
        if not self.warm:
            return None
        run = sorted(self.warm)[len(self.warm) // 2]
        compile_s = max(0.0, sum(self.cold) / len(self.cold) - run) if self.cold else 0.0
        new = len(set(remaining_keys) - self.seen)
        return run * len(remaining_keys) + compile_s * new

    def text(self, remaining_keys: Sequence) -> str:
        if not remaining_keys:
            return "no points left"
        eta = self.estimate(remaining_keys)
        if eta is None:
            return f"ETA: compiling (no compiled point timed yet; {len(remaining_keys)} more)"
        return f"ETA {eta:.1f} s for {len(remaining_keys)} more (compile time excluded from the run-time estimate)"


def compile_key(spec: SweepSpec, dataset: str, policy: str) -> tuple:
    """Points with the same key share one compiled simulate_grid (same trace shapes and SimConfig)."""
    ps = registry.get_policy(policy)
    return (dataset, ps.scheduler, ps.stage1_sampling)


def _run_points(spec: SweepSpec, store: ResultStore, run_point, out_dir: str) -> ResultStore:
    points = spec.points()
    done = store.completed_points()
    todo = [p for p in points if p not in done]
    if done:
        logging.info("Resuming %s: %d of %d points already done", out_dir, len(points) - len(todo), len(points))
    axes = " x ".join(f"{name} ({len(values)} values)" for name, values in spec.axes()) or "no swept parameter"
    logging.info(
        "Sweep %s over %s = %d grid values x %d datasets x %d policies, %d episodes each",
        out_dir, axes, spec.grid_size, len(spec.datasets), len(spec.policies), spec.episodes,
    )
    start = time.perf_counter()
    eta = Eta()
    for index, (dataset, policy) in enumerate(todo):
        key = compile_key(spec, dataset, policy)
        cold = eta.is_cold(key)
        n = len(points) - len(todo) + index + 1
        logging.info("point %d/%d %s/%s: %s", n, len(points), dataset, policy,
                     "compiling and running" if cold else "running (compiled)")
        t0 = time.perf_counter()
        rows = run_point(spec, dataset, policy)
        if isinstance(rows, PointRows):  # before the rows: a point in results.csv always has its record
            store.record_point(dataset, policy, rows.run_info)
        store.append_point(list(rows))
        took = time.perf_counter() - t0
        eta.record(key, took)
        remaining = [compile_key(spec, d, p) for d, p in todo[index + 1:]]
        logging.info(
            "point %d/%d %s/%s: %.1f s%s (%d grid values); elapsed %.1f s, %s",
            n, len(points), dataset, policy, took, " incl. compile" if cold else "", spec.grid_size,
            time.perf_counter() - start, eta.text(remaining),
        )
    if not todo:
        logging.info("Nothing to do: all %d points are in %s", len(points), store.csv_path)
    store.write_json()  # (re)built from results.csv, also when nothing was left to do
    return store
