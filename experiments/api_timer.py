"""Time the public API's default in whichever prada_jax is importable (this checkout, or an older revision's
worktree on PYTHONPATH: it uses only long-standing public calls), for `bench.py --api_check`.

    python experiments/api_timer.py --data_root=. --devices=2 --episodes=1024 --repeats=2

`simulate_grid` of `SimConfig(num_slots, warmup_slots, max_users, scheduler="prada")` (everything else default),
gsm8k with the shipped PRADA table from --data_root, one grid point (Table 3), over --devices CPU devices
(revisions whose simulate_grid does not spread by itself get `sharding.simulate_grid_sharded`). Prints one JSON
line: first call (compile + run) and the timed calls' wall and process CPU seconds.
"""

import argparse
import json
import os
import resource
import time


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_root", default=".", help="folder with traces/gsm8k.npz and checkpoints/gsm8k/")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=1024)
    ap.add_argument("--slots", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    # Your own XLA_FLAGS (e.g. a vector width) are kept; the device count is this timer's.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}".strip()
    import jax
    import numpy as np

    from prada_jax import sharding, sim
    from prada_jax.learn.tables import load_table
    from prada_jax.traces import load_trace, pack_traces

    packed = pack_traces(load_trace(os.path.join(args.data_root, "traces", "gsm8k.npz")))
    table = load_table(os.path.join(args.data_root, "checkpoints", "gsm8k", "policy_table.npz"))
    grid = sim.stack_params([sim.make_params()])
    config = sim.SimConfig(num_slots=args.slots, warmup_slots=args.slots // 10, max_users=64, scheduler="prada")
    spreads = hasattr(sharding, "spreads_over_devices")  # older revisions shard only when asked

    def call():
        if spreads or args.devices == 1:
            return jax.block_until_ready(sim.simulate_grid(packed, table, grid, config, args.episodes, 0))
        return jax.block_until_ready(sharding.simulate_grid_sharded(packed, table, grid, config, args.episodes, 0))

    start = time.perf_counter()
    metrics = call()
    first = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(args.repeats):
        start, cpu0 = time.perf_counter(), cpu_seconds()
        metrics = call()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu0)
    summary = sim.summarize(metrics)
    out = {"devices": jax.device_count(), "episodes": args.episodes, "slots": args.slots, "first_s": first,
           "wall_s": walls, "cpu_s": cpus, "accuracy": float(summary["accuracy"][0][0]),
           "completed": int(np.sum(np.asarray(metrics.completed))), "load_average": list(os.getloadavg())}
    if hasattr(metrics, "candidate_cap"):
        caps, counts = np.unique(np.asarray(metrics.candidate_cap), return_counts=True)
        out["episodes_by_cap"] = {int(c): int(n) for c, n in zip(caps, counts)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
