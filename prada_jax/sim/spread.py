"""How a batched rollout spreads over devices: the device layer under `prada_jax.sim.run` (which dispatches to it when
one process sees several local devices) and `prada_jax.sharding` (the public multi-device API, which re-exports it).

A rollout is one of run.py's jitted batch programs, `rollout(packed, table, params, config, keys, stop_on_overflow)`
(`_simulate_grid`: leaves [G, E]; `_simulate_pairs`: leaves [N]), passed in by the caller, so this module imports
nothing from run.py. Under `shard_map` every device runs it on its own grid points / episodes / pairs, with no
communication; the axes are padded up to a multiple of the mesh with copies of the last entry, and the padding is
trimmed from the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.policies import PolicyTable

GRID_AXIS, EPISODE_AXIS = "grid", "episodes"
PAIRS_AXIS = "pairs"


class ShardingError(ValueError):
    """A mesh or padding request that cannot be satisfied."""


def spreads_over_devices() -> bool:
    """Whether `simulate_grid` runs sharded: one process that sees several local devices."""
    return jax.process_count() == 1 and jax.local_device_count() > 1


def grid_devices() -> int:
    """How many devices `simulate_grid` runs on (for benchmark records)."""
    return jax.local_device_count() if spreads_over_devices() else 1


def pad_to_multiple(count: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= count (count >= 1)."""
    if count < 1 or multiple < 1:
        raise ShardingError(f"pad_to_multiple needs count >= 1 and multiple >= 1, got {count}, {multiple}")
    return -(-count // multiple) * multiple


def mesh_shape(num_devices: int, grid_size: int, episodes: int) -> tuple[int, int]:
    """(grid devices, episode devices) with product num_devices that wastes the least padded work;
    ties go to more episode sharding (episodes are usually the larger axis)."""
    if num_devices < 1:
        raise ShardingError(f"need at least one device, got {num_devices}")
    best = None
    for g in range(1, num_devices + 1):
        if num_devices % g:
            continue
        e = num_devices // g
        work = pad_to_multiple(grid_size, g) * pad_to_multiple(episodes, e)
        if best is None or work < best[0] or (work == best[0] and e > best[2]):
            best = (work, g, e)
    return best[1], best[2]


def make_mesh(grid_size: int, episodes: int, devices: Sequence | None = None) -> Mesh:
    """A 2-D ("grid", "episodes") mesh over `devices` (default: all devices, every host)."""
    devices = list(jax.devices() if devices is None else devices)
    g, e = mesh_shape(len(devices), grid_size, episodes)
    return Mesh(np.asarray(devices, dtype=object).reshape(g, e), (GRID_AXIS, EPISODE_AXIS))


def _pad_axis0(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` with copies of the last entry."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)], axis=0)


def _put(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Global array from a host array every process holds in full (works on one or many hosts)."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _shard_map(fn, mesh: Mesh, in_specs, out_specs):
    """`jax.shard_map` without the replication / varying-axis check (the simulator has no collectives, and
    the check rejects while loops whose carry starts from constants)."""
    if hasattr(jax, "shard_map"):  # jax >= 0.6
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def grid_program(rollout: Callable, packed, table: PolicyTable, params_grid: SimParams, config: SimConfig, keys,
                 mesh: Mesh | None = None, stop_on_overflow: bool = False):
    """(jitted fn, sharded args, trim): `trim(fn(*args))` is `rollout(packed, table, params_grid, config, keys,
    stop_on_overflow)` (leaves [G, E], as NumPy) with the grid points and the episodes spread over `mesh` (default
    `make_mesh`, all devices); the trace and the policy table are replicated on every device. `config` is at one
    fixed cap. Split in three so that benchmarks can time `fn.lower(*args).compile()` apart from the run."""
    grid_size = int(np.shape(params_grid.bandwidth_bps)[0])
    episodes = int(np.shape(keys)[0])
    mesh = make_mesh(grid_size, episodes) if mesh is None else mesh
    if tuple(mesh.axis_names) != (GRID_AXIS, EPISODE_AXIS):
        raise ShardingError(f"mesh axes must be {(GRID_AXIS, EPISODE_AXIS)}, got {mesh.axis_names}")
    g_pad = pad_to_multiple(grid_size, mesh.shape[GRID_AXIS])
    e_pad = pad_to_multiple(episodes, mesh.shape[EPISODE_AXIS])

    replicated = NamedSharding(mesh, PartitionSpec())
    by_grid = NamedSharding(mesh, PartitionSpec(GRID_AXIS))
    by_episode = NamedSharding(mesh, PartitionSpec(EPISODE_AXIS))
    out_sharding = NamedSharding(mesh, PartitionSpec(GRID_AXIS, EPISODE_AXIS))

    keys = _pad_axis0(np.asarray(keys), e_pad)
    params_host = jax.tree.map(lambda leaf: _pad_axis0(np.asarray(leaf), g_pad), params_grid)
    args = (
        jax.tree.map(lambda leaf: _put(np.asarray(leaf), replicated), packed),
        jax.tree.map(lambda leaf: _put(np.asarray(leaf), replicated), table),
        jax.tree.map(lambda leaf: _put(leaf, by_grid), params_host),
        _put(keys, by_episode),
    )

    def trim(out):
        return jax.tree.map(lambda leaf: _to_host(leaf)[:grid_size, :episodes], out)

    return _sharded_grid_fn(rollout, config, out_sharding, stop_on_overflow), args, trim


@functools.lru_cache(maxsize=32)
def _sharded_grid_fn(rollout: Callable, config: SimConfig, out_sharding: NamedSharding, stop_on_overflow: bool):
    """jit of the grid rollout, [G, E] outputs laid out over the mesh (cached per rollout, config and layout).

    `shard_map`: every device runs `rollout` on its own [G/g] grid points and [E/e] keys, with no communication.
    (Letting GSPMD partition the plain jit instead put an all-reduce of the "any episode still running" predicate
    into every iteration of the vmapped while loops -- the bisection and fixed-point loops of every slot -- and
    all-gathers around top_k: identical results, but thousands of cross-device, and with several processes
    cross-host, collectives per rollout.) The slot loop's own "any episode still draining" test runs over each
    device's own batch (sim.run._slot_loop), not over the mesh, so each device stops on its own.
    """
    mesh = out_sharding.mesh

    def fn(packed, table, params, keys):
        return rollout(packed, table, params, config, keys, stop_on_overflow)

    local = _shard_map(fn, mesh, in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(GRID_AXIS),
                                           PartitionSpec(EPISODE_AXIS)),
                       out_specs=PartitionSpec(GRID_AXIS, EPISODE_AXIS))
    return jax.jit(local, out_shardings=out_sharding)


def run_pairs(rollout: Callable, packed, table: PolicyTable, params: SimParams, config: SimConfig, keys,
              stop_on_overflow: bool = False):
    """`rollout(packed, table, params, config, keys, stop_on_overflow)` of episode pairs (episode n at grid point
    params[n] with key keys[n], leaves [N]) spread over the local devices, as NumPy leaves [N]; N must be a multiple
    of the device count (sim.run.rerun_batch pads it). The exact cap's re-runs."""
    devices = jax.local_devices()
    n = int(np.shape(keys)[0])
    if n % len(devices):
        raise ShardingError(f"{n} episode pairs do not split over {len(devices)} devices")
    mesh = Mesh(np.asarray(devices, dtype=object), (PAIRS_AXIS,))
    by_pair = NamedSharding(mesh, PartitionSpec(PAIRS_AXIS))
    replicated = NamedSharding(mesh, PartitionSpec())
    args = (jax.tree.map(lambda leaf: _put(np.asarray(leaf), replicated), packed),
            jax.tree.map(lambda leaf: _put(np.asarray(leaf), replicated), table),
            jax.tree.map(lambda leaf: _put(np.asarray(leaf), by_pair), params),
            _put(np.asarray(keys), by_pair))
    out = _sharded_pairs_fn(rollout, config, by_pair, stop_on_overflow)(*args)
    return jax.tree.map(np.asarray, out)


@functools.lru_cache(maxsize=32)
def _sharded_pairs_fn(rollout: Callable, config: SimConfig, by_pair: NamedSharding, stop_on_overflow: bool):
    """jit of `shard_map(rollout)` over the pairs: each device runs its own pairs, no communication (as
    `_sharded_grid_fn`)."""
    def fn(packed, table, params, keys):
        return rollout(packed, table, params, config, keys, stop_on_overflow)

    spec = PartitionSpec(PAIRS_AXIS)
    local = _shard_map(fn, by_pair.mesh, in_specs=(PartitionSpec(), PartitionSpec(), spec, spec), out_specs=spec)
    return jax.jit(local, out_shardings=by_pair)
