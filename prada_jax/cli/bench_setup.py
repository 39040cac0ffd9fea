"""What a benchmark run simulates: a registered policy's table (with a checkpoint-free stand-in for learned ones), the
benchmark SimConfig and the Table-3 grid. Flag-free, so that bench.py and experiments/stage2_cost.py share it."""

from __future__ import annotations

import os

from prada_jax.sim import registry


def build_table(trace, policy: str):
    """PolicyTable of a registered policy, with the PRM-gain stand-in for the learned Stage-1 table."""
    ctx = registry.TableContext(learned=lambda: registry.prm_gain_table(trace))
    return registry.get_policy(policy).build_table(trace, ctx)


def setup(dataset: str, policy: str, traces_dir: str):
    """(trace, packed, table, scheduler, stage1_sampling) of `<traces_dir>/<dataset>.npz` and a registered policy
    name; ValueError naming the flag when either is unknown."""
    from prada_jax import traces

    if policy not in registry.POLICIES:
        raise ValueError(f"--policy={policy!r}: choose from {list(registry.POLICIES)}")
    path = os.path.join(traces_dir, f"{dataset}.npz")
    if not os.path.exists(path):
        raise ValueError(f"--dataset={dataset!r}: {path} not found")
    entry = registry.get_policy(policy)
    trace = traces.load_trace(path)
    return trace, traces.pack_traces(trace), build_table(trace, policy), entry.scheduler, entry.stage1_sampling


def make_config(horizon: int, warmup: int, max_users: int, scheduler: str, sampling: bool):
    """Benchmark config: Table-3 arrival cap, no drain phase (throughput of the slot step over the horizon)."""
    from prada_jax import constants as C
    from prada_jax.sim import SimConfig
    from prada_jax.sim.draws import required_max_arrivals

    return SimConfig(num_slots=horizon, warmup_slots=warmup, max_users=max_users, scheduler=scheduler,
                     stage1_sampling=sampling, drain_slots=0,
                     max_arrivals_per_slot=required_max_arrivals(C.DEFAULT_ARRIVAL_RATE))


def default_grid(**axes):
    """Table-3 defaults, one grid point unless axes are given."""
    from prada_jax.sim import make_params, param_grid, stack_params

    return param_grid(**axes) if axes else stack_params([make_params()])
