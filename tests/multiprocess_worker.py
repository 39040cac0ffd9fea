"""One process of the 2-process `simulate_grid_sharded` test (tests/test_multiprocess.py); not a test itself.

    python tests/multiprocess_worker.py OUT.npz LOCAL_DEVICES

with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (read by
`sharding.initialize_distributed`). Every process runs the same sharded rollouts over the devices of all
processes (default mesh: with 2 processes x 2 local devices, 3 grid points and 7 episodes it is 1 x 4, so
the episodes are split across processes) and writes its gathered [G, E] metrics to OUT.npz:
`sharded.<field>` from `simulate_grid_sharded`, `prepared.<field>` from `trim(fn(*args))` of
`prepare_sharded`, plus `info.*` about the processes and the layout of the un-gathered output. The problem
(trace, table, grid, config, episodes, seed) is `problem()`, which the parent test also uses for its
single-process reference.
"""

from __future__ import annotations

import os
import sys
import time


def problem():
    """(packed, table, params_grid, config, episodes, seed): tiny, with both axes needing padding."""
    from sim_helpers import mixed_table, tiny

    from prada_jax.sim import SimConfig, param_grid
    from prada_jax.traces import pack_traces

    trace = tiny(seed=0)
    packed, table = pack_traces(trace), mixed_table(trace, 0)
    config = SimConfig(num_slots=80, warmup_slots=10, max_users=6, max_servers=3, drain_slots=60,
                       max_candidates=6)
    grid = param_grid(bandwidth_bps=[1e5, 1e6, 4e7], arrival_rate=[0.5], server_capacity=[2])
    return packed, table, grid, config, 7, 3  # 3 grid points, 7 episodes: neither divides 2 or 4 devices


def _log(start: float, what: str) -> None:
    print(f"[worker {os.environ.get('JAX_PROCESS_ID')}] {time.monotonic() - start:6.1f} s  {what}", file=sys.stderr,
          flush=True)


def main(out_path: str, local_devices: int) -> None:
    start = time.monotonic()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={local_devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # jax's default; stated for clarity

    from prada_jax import sharding

    sharding.initialize_distributed()  # coordinator / count / id from the JAX_* environment
    _log(start, "initialized")
    import numpy as np

    packed, table, grid, config, episodes, seed = problem()
    summary = sharding.local_device_summary()
    arrays = {f"info.{k}": np.asarray(v) for k, v in summary.items() if k != "platform"}

    mesh = sharding.make_mesh(int(np.shape(grid.bandwidth_bps)[0]), episodes)
    arrays["info.mesh"] = np.asarray([mesh.shape[sharding.GRID_AXIS], mesh.shape[sharding.EPISODE_AXIS]])
    _log(start, "problem built")
    got = sharding.simulate_grid_sharded(packed, table, grid, config, episodes, seed)
    arrays.update({f"sharded.{k}": np.asarray(getattr(got, k)) for k in got.__dataclass_fields__})

    _log(start, "simulate_grid_sharded done")
    fn, args, trim = sharding.prepare_sharded(packed, table, grid, config, episodes, seed)
    out = fn(*args)  # the same computation simulate_grid_sharded runs; kept apart to record the layout
    arrays["info.raw_fully_addressable"] = np.asarray(out.completed.is_fully_addressable)
    arrays["info.raw_local_shards"] = np.asarray(len(out.completed.addressable_shards))
    arrays["info.raw_shard_shape"] = np.asarray(out.completed.addressable_shards[0].data.shape)
    arrays["info.raw_global_shape"] = np.asarray(out.completed.shape)
    prepared = trim(out)
    arrays.update({f"prepared.{k}": np.asarray(getattr(prepared, k)) for k in prepared.__dataclass_fields__})

    tmp = out_path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out_path)
    _log(start, "written")
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
