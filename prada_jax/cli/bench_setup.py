"""What a benchmark run simulates: a registered policy's table (with a checkpoint-free stand-in for learned ones), the
benchmark SimConfig and the Table-3 grid. Flag-free, so that bench.py and studies/stage2_cost.py share it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from prada_jax import constants as C
from prada_jax import traces
from prada_jax.data_paths import output_folder_problem
from prada_jax.sim import SimConfig, make_params, param_grid, registry, stack_params
from prada_jax.sim.draws import required_max_arrivals


def build_table(trace, policy: str):
    """PolicyTable of a registered policy, with the PRM-gain stand-in for the learned Stage-1 table."""
    ctx = registry.TableContext(learned=lambda: registry.prm_gain_table(trace))
    return registry.get_policy(policy).build_table(trace, ctx)


def setup(dataset: str, policy: str, traces_dir: str, dataset_flag: str = "dataset"):
    """(trace, packed, table, scheduler, stage1_sampling) of `<traces_dir>/<dataset>.npz` and a registered policy
    name; ValueError naming the flag (--policy, --<dataset_flag>) when either is unknown or the trace is bad."""
    if policy not in registry.POLICIES:
        raise ValueError(f"--policy={policy!r}: choose from {list(registry.POLICIES)}")
    path = os.path.join(traces_dir, f"{dataset}.npz")
    if not os.path.exists(path):
        raise ValueError(f"--{dataset_flag}={dataset!r}: {path} not found")
    entry = registry.get_policy(policy)
    trace = traces.load_trace(path)
    return trace, traces.pack_traces(trace), build_table(trace, policy), entry.scheduler, entry.stage1_sampling


def make_config(horizon: int, warmup: int, max_users: int, scheduler: str, sampling: bool,
                max_candidates: int | None = None):
    """Benchmark config: Table-3 arrival cap, no drain phase (throughput of the slot step over the horizon); the
    exact candidate cap unless `max_candidates` fixes one."""
    return SimConfig(num_slots=horizon, warmup_slots=warmup, max_users=max_users, scheduler=scheduler,
                     stage1_sampling=sampling, drain_slots=0, max_candidates=max_candidates,
                     max_arrivals_per_slot=required_max_arrivals(C.DEFAULT_ARRIVAL_RATE))


def default_grid(**axes):
    """Table-3 defaults, one grid point unless axes are given."""
    return param_grid(**axes) if axes else stack_params([make_params()])


def check_flags(values: Mapping[str, Any]) -> None:
    """Every size / count / seed flag of a benchmark run in range, before anything is printed or run; ValueError
    naming the flag otherwise. `values`: flag name -> value (absl's FLAGS.flag_values_dict()); flags of the
    --sweep_check and --profile parts are only checked when those parts run. Nothing is clipped or raised silently
    (a --repeats=0 is an error, not one run)."""
    def integer(name: str, low: int, high: int | None = None, bound: str | None = None) -> int:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value >= high):
            raise ValueError(f"--{name} must be an integer {bound or f'>= {low}'}, got {value!r}")
        return value

    horizon = integer("horizon_ms", 1)
    warmup = integer("warmup_ms", 0)
    if warmup >= horizon:
        raise ValueError(f"--warmup_ms ({warmup}) must be < --horizon_ms ({horizon})")
    for name in ("max_users", "users_episodes", "repeats"):
        integer(name, 1)
    if C.seed_problem(values.get("seed")):
        raise ValueError(f"--seed {C.seed_problem(values.get('seed'))}")
    integer("oracle_episodes", 0)
    if values.get("oracle_horizon_ms") is not None:
        integer("oracle_horizon_ms", 1)
    if values.get("profile"):
        integer("profile_episodes", 1)
        integer("profile_horizon_ms", 1)
    if values.get("sweep_check"):
        for name in ("sweep_episodes", "sweep_full_horizon_ms"):
            integer(name, 1)
        sweep_horizon = integer("sweep_horizon_ms", 1)
        sweep_warmup = integer("sweep_warmup_ms", 0)
        if sweep_warmup >= sweep_horizon:
            raise ValueError(f"--sweep_warmup_ms ({sweep_warmup}) must be < --sweep_horizon_ms ({sweep_horizon})")
        target = values["sweep_target_s"]
        if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
            raise ValueError(f"--sweep_target_s must be finite and > 0, got {target!r}")
        if not values["sweep_datasets"]:
            raise ValueError("--sweep_datasets: no dataset given")
        try:
            bandwidths = [float(v) for v in values["sweep_values"]]
        except ValueError:
            raise ValueError(f"--sweep_values: numbers expected, got {values['sweep_values']}") from None
        if not bandwidths or not all(math.isfinite(b) and b > 0 for b in bandwidths):
            raise ValueError(f"--sweep_values: finite bandwidths > 0 (bit/s) expected, got {values['sweep_values']}")
    out = values.get("out")
    if out:
        if os.path.isdir(out):
            raise ValueError(f"--out={out} is a directory, not a JSON file path")
        problem = output_folder_problem(os.path.dirname(os.path.abspath(out)))
        if problem:
            raise ValueError(f"--out={out}: {problem}")
