"""The sweep runner: one (dataset, policy) point per `simulate_grid` call, learned tables (trained on first
use), and the resumable loop `run_sweep` that appends each finished point to the `ResultStore`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from absl import logging

from prada_jax import constants as C
from prada_jax.sim.params import SimConfig
from prada_jax.sweep.spec import (
    LEARNED_POLICIES,
    NO_SWEEP,
    POLICIES,
    POLICY_SPECS,
    RANDOM_POLICY_PROB,
    SweepSpec,
    learned_table_paths,
)
from prada_jax.sweep.store import REQUIRED_METRICS, ResultStore, acquire_lock

PointRunner = Callable[[SweepSpec, str, str], list[dict[str, Any]]]


def supported_policy_names() -> tuple[str, ...]:
    """Policies this build can run: all need prada_jax.sim.run, learned ones prada_jax.learn.tables too."""
    try:
        import prada_jax.sim.run  # noqa: F401
    except ImportError as err:
        logging.warning("prada_jax.sim.run is not importable (%s): no policy can run", err)
        return ()
    try:
        import prada_jax.learn.tables  # noqa: F401
    except ImportError as err:
        logging.warning("prada_jax.learn.tables is not importable (%s): learned policies unavailable", err)
        return tuple(p for p in POLICIES if p not in LEARNED_POLICIES)
    return POLICIES


def rows_from_summary(spec: SweepSpec, dataset: str, policy: str, summary: dict, seconds: float) -> list[dict]:
    """One row per grid point from summarize()'s {name: (mean [G], ci95 [G])}."""
    import numpy as np

    missing = [m for m in REQUIRED_METRICS if m not in summary]
    if missing:
        raise KeyError(f"summarize() lacks metrics {missing}")
    names = list(REQUIRED_METRICS) + sorted(m for m in summary if m not in REQUIRED_METRICS)
    rows = []
    for g in range(spec.grid_size):
        row: dict[str, Any] = {
            "dataset": dataset,
            "policy": policy,
            "sweep_param": spec.sweep_param,
            "sweep_value": float(spec.sweep_values[g]) if spec.sweep_param != NO_SWEEP else None,
            "episodes": spec.episodes,
        }
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
    """Static SimConfig of a sweep: horizon/warm-up in 1 ms slots, U user slots, max_servers = largest M."""
    if not math.isclose(C.SLOT_SECONDS, 1e-3):
        raise ValueError(f"--horizon_ms assumes 1 ms slots; constants.SLOT_SECONDS is {C.SLOT_SECONDS}")
    capacities = [g["server_capacity"] for g in spec.grid()]
    return SimConfig(
        num_slots=spec.horizon_ms,
        warmup_slots=spec.warmup_ms,
        drain_slots=spec.drain_ms,
        max_users=spec.max_users,
        max_servers=max(capacities),
        max_arrivals_per_slot=None,  # chosen by the simulator for the largest rate (P(N > A_max) <= 1e-9)
        scheduler=scheduler,
        stage1_sampling=stage1_sampling,
    )


def params_grid(spec: SweepSpec):
    """SimParams with a leading grid axis [G], one entry per swept value."""
    from prada_jax.sim.params import params_from_mapping, stack_params

    points = []
    for g in spec.grid():
        values = {k: v for k, v in g.items() if k != "server_prefill"}
        values["prefix_cache"] = g["server_prefill"] == "prefix"
        points.append(params_from_mapping(values))
    return stack_params(points)


def simulate_point(spec: SweepSpec, dataset: str, policy: str) -> list[dict[str, Any]]:
    """Run all swept values of one (dataset, policy) in one simulate_grid call; return its rows."""
    from prada_jax import traces
    from prada_jax.sim import metrics as sim_metrics
    from prada_jax.sim import run as sim_run

    start = time.perf_counter()
    trace = traces.load_trace(spec.trace_path(dataset))
    packed = traces.pack_traces(trace)
    flops_llm = spec.params["flops_llm"]
    if flops_llm is None:
        # D_psi's reference server time uses one FLOP/s value; a flops_llm sweep keeps the Table-3 one for it.
        flops_llm = C.FLOPS_LLM
    table, ps = policy_setup(spec, policy, dataset, trace, flops_llm)
    config = sim_config(spec, ps.scheduler, ps.stage1_sampling)
    metrics = sim_run.simulate_grid(packed, table, params_grid(spec), config, spec.episodes, spec.seed)
    summary = sim_metrics.summarize(metrics)
    return rows_from_summary(spec, dataset, policy, summary, time.perf_counter() - start)


class PolicyTableError(RuntimeError):
    """A learned policy table is missing, was trained for another beta, or could not be trained."""


def train_policy_table(dataset: str, beta: float, traces_dir: str, ckpt_dir: str, seed: int = 0) -> None:
    """Train on first use: run the training command (prada-train, prada_jax.cli.train) for one dataset at `beta`
    in a child process (its progress log streams).

    Runs the documented training entry point rather than re-implementing it, so a table trained here is the
    same as one from `prada-train --datasets=<d> --beta=<b> --seed=<s>` (or `python experiments/train.py ...`).
    The child imports this very copy of prada_jax (its root goes first on PYTHONPATH)."""
    from prada_jax import data_paths

    if data_paths.is_installed_data(ckpt_dir):
        raise PolicyTableError(
            f"no learned policy table for {dataset} among the tables shipped with the package ({ckpt_dir}, "
            f"read-only); pass --ckpt_dir=<a writable folder> to train it there at beta={beta:g}"
        )
    cmd = [
        sys.executable, "-m", "prada_jax.cli.train", f"--datasets={dataset}", f"--beta={beta!r}",
        f"--trace_dir={traces_dir}", f"--ckpt_dir={ckpt_dir}", f"--seed={seed}",
        "--frontier_betas=",  # only the table at `beta` is used here (no vmapped frontier betas: faster)
        "--resume",  # continue an interrupted first-use training (a no-op when nothing was saved yet)
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

    Loaded from <ckpt_dir>/<dataset>/policy_table.npz (written by experiments/train.py, whose eval.json records
    the beta it was trained for); trained on first use when absent. A table for another beta is an error
    (never overwritten): point --ckpt_dir elsewhere or set --table_beta.
    """
    from prada_jax.learn import tables as learn_tables

    table_path, eval_path = learned_table_paths(spec.ckpt_dir, dataset)
    if not os.path.exists(table_path):
        train_policy_table(dataset, spec.table_beta, spec.traces_dir, spec.ckpt_dir, spec.seed)
    if not os.path.exists(eval_path):
        raise PolicyTableError(f"{eval_path} not found: cannot tell which beta {table_path} was trained for")
    try:
        with open(eval_path, encoding="utf-8") as handle:
            trained_beta = float(json.load(handle)["beta"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PolicyTableError(f"{eval_path}: unreadable training record ({type(err).__name__}: {err})") from err
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
    """(PolicyTable, PolicySpec) of a policy name (POLICY_SPECS)."""
    from prada_jax.sim import policies as P

    ps = POLICY_SPECS[policy]
    if ps.table == "learned":
        table = learned_table(spec, dataset, trace)
    elif ps.table == "random":
        table = P.random_table(trace, RANDOM_POLICY_PROB, base=learned_table(spec, dataset, trace), flops_llm=flops_llm)
    elif ps.table == "all_slm":
        table = P.all_slm_table(trace, flops_llm=flops_llm)
    elif ps.table == "all_llm":
        table = P.all_llm_table(trace, flops_llm=flops_llm)
    elif ps.table == "router":
        table = P.router_table(trace, spec.router_llm_fraction, flops_llm=flops_llm)
    elif ps.table == "prm_threshold":
        table = P.prm_threshold_table(trace, spec.rsd_threshold, flops_llm=flops_llm)
    else:
        raise ValueError(f"policy {policy!r}: unknown table source {ps.table!r}")
    return table, ps


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
    """Run every (dataset, policy) point not already in out_dir; log each point's time and an ETA."""
    run_point = run_point or simulate_point
    if run_point is simulate_point:
        validate_inputs(spec)  # every trace and existing table, before anything is written
    lock = acquire_lock(out_dir)
    try:
        if run_point is simulate_point:
            train_missing_tables(spec)
        store = ResultStore(out_dir, spec, overwrite=overwrite, argv=argv, lock=lock)
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
    from prada_jax import traces

    learned = any(POLICY_SPECS[p].table in ("learned", "random") for p in spec.policies)
    for dataset in spec.datasets:
        trace = traces.load_trace(spec.trace_path(dataset))
        if learned and os.path.exists(learned_table_paths(spec.ckpt_dir, dataset)[0]):
            learned_table(spec, dataset, trace)


def train_missing_tables(spec: SweepSpec) -> None:
    """Train (in this process) the learned tables the sweep needs and does not have yet."""
    if not any(POLICY_SPECS[p].table in ("learned", "random") for p in spec.policies):
        return
    for dataset in spec.datasets:
        if not os.path.exists(learned_table_paths(spec.ckpt_dir, dataset)[0]):
            train_policy_table(dataset, spec.table_beta, spec.traces_dir, spec.ckpt_dir, spec.seed)


def _run_points(spec: SweepSpec, store: "ResultStore", run_point, out_dir: str) -> "ResultStore":
    points = spec.points()
    done = store.completed_points()
    todo = [p for p in points if p not in done]
    if done:
        logging.info("Resuming %s: %d of %d points already done", out_dir, len(points) - len(todo), len(points))
    logging.info(
        "Sweep %s over %s (%d values) x %d datasets x %d policies, %d episodes each",
        out_dir, spec.sweep_param, spec.grid_size, len(spec.datasets), len(spec.policies), spec.episodes,
    )
    start = time.perf_counter()
    for index, (dataset, policy) in enumerate(todo):
        t0 = time.perf_counter()
        rows = run_point(spec, dataset, policy)
        store.append_point(rows)
        took = time.perf_counter() - t0
        elapsed = time.perf_counter() - start
        remaining = len(todo) - index - 1
        eta = elapsed / (index + 1) * remaining
        logging.info(
            "point %d/%d %s/%s: %.1f s (%d grid values); elapsed %.1f s, ETA %.1f s for %d more",
            len(points) - len(todo) + index + 1, len(points), dataset, policy, took, spec.grid_size,
            elapsed, eta, remaining,
        )
    if not todo:
        logging.info("Nothing to do: all %d points are in %s", len(points), store.csv_path)
    store.write_json()  # (re)built from results.csv, also when nothing was left to do
    return store
