"""Run `simulate_grid` with its grid and episode axes sharded over devices (jax.sharding; one or many processes).

    from prada_jax import sharding
    metrics = sharding.simulate_grid_sharded(packed, table, params_grid, config, episodes=1024, seed=0)

Results are the same as `prada_jax.sim.simulate_grid(packed, table, params_grid, config, episodes, seed)`:
episode e always uses key e of `episode_keys(episodes, seed)`, and each episode runs on one device, so
nothing is reduced across devices. The episode count (and the grid size) are padded up to a multiple of
the mesh dimension with copies of the last key (grid point) and the padding is trimmed from the result.

One process with several local devices (GPUs, or CPU cores exposed as devices by `use_cpu_cores`, which the
command-line tools call first): `prada_jax.sim.simulate_grid` spreads its work over them by itself
(`spreads_over_devices`). XLA:CPU runs one device's program on about one core, so on a CPU host one device per
core is what uses the machine (1.5-1.7x on 2 cores, docs/performance.md). Several hosts: call
`initialize_distributed()` (or set PRADA_DISTRIBUTED=1 and call `maybe_initialize_distributed()`) first in every
process; it wraps `jax.distributed.initialize`, which reads the coordinator address / process count / process id
from its arguments, from the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID environment variables,
or from a cluster environment (SLURM, ...).
The mesh then spans `jax.devices()` (all hosts) and the result is gathered to every process. This path is
tested with 2 processes on localhost (2 CPU devices each, gloo collectives): tests/test_multiprocess.py,
whose worker tests/multiprocess_worker.py can also be run by hand (see docs/performance.md).

The device layer itself (meshes, padding, `spreads_over_devices`, the `shard_map` of one of sim.run's rollouts) is
prada_jax/sim/spread.py, below prada_jax.sim.run, which dispatches to it; this module builds the entry points above
on it and re-exports it.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from prada_jax.sim import run as sim_run
from prada_jax.sim import spread
from prada_jax.sim.metrics import EpisodeMetrics
from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.policies import PolicyTable
from prada_jax.sim.spread import (  # noqa: F401  (re-exported: the device layer, below sim.run)
    EPISODE_AXIS,
    GRID_AXIS,
    PAIRS_AXIS,
    ShardingError,
    grid_devices,
    make_mesh,
    mesh_shape,
    pad_to_multiple,
    spreads_over_devices,
)

DISTRIBUTED_ENV = "PRADA_DISTRIBUTED"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-host JAX job (`jax.distributed.initialize`); must run before any other JAX call.

    Unset arguments are taken from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID or from the
    cluster environment that jax detects (SLURM, Open MPI, Cloud TPU, ...).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def maybe_initialize_distributed(enabled: bool | None = None) -> bool:
    """Call `initialize_distributed()` if `enabled` (default: env PRADA_DISTRIBUTED in 1/true/yes).
    Returns whether it did."""
    if enabled is None:
        enabled = os.environ.get(DISTRIBUTED_ENV, "").strip().lower() in ("1", "true", "yes")
    if enabled:
        initialize_distributed()
    return bool(enabled)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def use_cpu_cores(count: int = 0) -> int:
    """Expose `count` CPU devices to JAX (0: one per available core) so that `simulate_grid` uses every core.

    Must run before the first JAX computation (JAX fixes its devices then); an explicit
    XLA_FLAGS=--xla_force_host_platform_device_count wins. Returns the CPU device count asked for. Only the CPU
    platform is affected: on a GPU host the GPUs stay the default devices.
    """
    if count < 0:
        raise ShardingError(f"--cpu_devices must be >= 0 (0: one per core), got {count}")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return int(os.environ["XLA_FLAGS"].split("xla_force_host_platform_device_count=")[1].split()[0])
    count = count or available_cores()
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as err:  # a JAX computation already ran: the device count is fixed
        raise ShardingError(f"--cpu_devices={count}: JAX's devices are already initialised; set it before the "
                            f"first JAX computation") from err
    return count


def simulate_grid_sharded(packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, episodes: int,
                          seed: int, mesh: Mesh | None = None) -> EpisodeMetrics:
    """`simulate_grid` with grid points and episodes spread over `mesh` (default `make_mesh`, all devices).

    Same arguments and result (NumPy leaves [G, E]) as `prada_jax.sim.simulate_grid`; the trace and the
    policy table are replicated on every device.
    """
    config = sim_run._check(packed, table, params_grid, config)
    keys = np.asarray(sim_run.episode_keys(episodes, seed))

    def first(cfg, stop):
        fn, args, trim = prepare_sharded(packed, table, params_grid, cfg, episodes, seed, mesh, stop)
        return trim(fn(*args))

    def pairs(cfg, over, stop):  # the exact cap's re-runs, over this process's devices
        return sim_run._pairs_at(packed, table, params_grid, cfg, keys, *over, stop)

    return sim_run.exact_cap(first, pairs, config)


def prepare_sharded(packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, episodes: int,
                    seed: int, mesh: Mesh | None = None, stop_on_overflow: bool = False):
    """(jitted fn, sharded args, trim) with `trim(fn(*args))` == `simulate_grid_sharded(...)` at one fixed cap
    (with SimConfig.max_candidates=None: the first cap of sim.run.candidate_ladder, without the re-runs).

    Split out so that benchmarks can time `fn.lower(*args).compile()` apart from the run.
    """
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ShardingError(f"episodes must be a positive integer, got {episodes!r}")
    if jnp.ndim(params_grid.bandwidth_bps) != 1:
        raise ShardingError("simulate_grid_sharded needs params with a leading grid axis [G]; use param_grid")
    config = sim_run._check(packed, table, params_grid, config)
    config = sim_run.with_cap(config, sim_run.candidate_ladder(config)[0])
    return spread.grid_program(sim_run._simulate_grid, packed, table, params_grid, config,
                               sim_run.episode_keys(episodes, seed), mesh, stop_on_overflow)


def prepare_grid(packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, episodes: int, seed: int):
    """(fn, args, trim) for what `simulate_grid` runs at one fixed cap (the ladder's first when max_candidates is
    None, without the exact cap's re-runs): `prepare_sharded` over the local devices when it spreads
    (`spreads_over_devices`), else the single-device jit. For benchmarks that time the compile apart."""
    if spreads_over_devices():
        return prepare_sharded(packed, table, params_grid, config, episodes, seed)
    config = sim_run._check(packed, table, params_grid, config)
    config = sim_run.with_cap(config, sim_run.candidate_ladder(config)[0])

    def grid_rollout(packed_, table_, params_, keys):
        return sim_run._simulate_grid(packed_, table_, params_, config, keys)

    return jax.jit(grid_rollout), (packed, table, params_grid, sim_run.episode_keys(episodes, seed)), lambda out: out


def simulate_pairs_sharded(packed, table: PolicyTable, params: SimParams, config: SimConfig, keys,
                           stop_on_overflow: bool = False) -> EpisodeMetrics:
    """`sim.run._simulate_pairs` (episode n at grid point params[n] with key keys[n], leaves [N]) spread over the local
    devices; N must be a multiple of the device count (sim.run.rerun_batch pads it). The exact cap's re-runs."""
    return spread.run_pairs(sim_run._simulate_pairs, packed, table, params, config, keys, stop_on_overflow)


def local_device_summary() -> dict:
    """Process / device counts for logs and benchmark records."""
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "global_devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
    }


__all__ = [
    "ShardingError", "available_cores", "use_cpu_cores", "spreads_over_devices", "grid_devices", "prepare_grid",
    "initialize_distributed", "maybe_initialize_distributed", "pad_to_multiple", "mesh_shape",
    "make_mesh", "simulate_grid_sharded", "simulate_pairs_sharded", "prepare_sharded", "local_device_summary", "GRID_AXIS", "EPISODE_AXIS",
]
