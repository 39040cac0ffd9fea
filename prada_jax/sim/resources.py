"""Memory a simulate_grid call needs, estimated before any work, and the check that it fits.

The estimate of one call ([G] grid points x E episodes) is G x E x bytes per episode, where an episode holds its
carried state (`init_state`, exact), XLA's temporaries of the slot step (measured by `prada-bench`: about 17 KB per
episode at U = 64 against 5.3 KB of state, docs/performance.md; taken as TEMP_FACTOR x the state) and the arrival
draws of a slot (A_max records and the inverse CDF over A_max + 1 counts, ARRIVAL_BYTES each). A call that cannot
fit into the memory available is refused with one line naming what to reduce, instead of running out of memory
after minutes (or after results metadata was written).
"""

from __future__ import annotations

import os

import numpy as np

TEMP_FACTOR = 4.0  # XLA temporaries per episode / carried state bytes (bench: 17 KB / 5.3 KB = 3.2, rounded up)
ARRIVAL_BYTES = 32  # per A_max entry and episode: problem, distance, task seed, CDF entry and comparisons
FIXED_BYTES = 256 * 2**20  # compiled program, trace arrays, tables, runtime: not per episode


def state_bytes(max_users: int, max_steps: int) -> int:
    """Bytes of one episode's carried state (users + totals) at U user slots and K steps per problem."""
    import jax

    from prada_jax.sim.state import init_state

    shapes = jax.eval_shape(lambda: init_state(int(max_users), int(max_steps)))
    return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in jax.tree.leaves(shapes)))


def bytes_per_episode(max_users: int, max_steps: int, max_arrivals: int) -> float:
    return state_bytes(max_users, max_steps) * (1.0 + TEMP_FACTOR) + ARRIVAL_BYTES * (int(max_arrivals) + 1)


def estimate_bytes(max_users: int, max_steps: int, max_arrivals: int, grid: int, episodes: int) -> float:
    """Estimated peak bytes of one simulate_grid call (float: 1e9 episodes stay representable)."""
    return FIXED_BYTES + float(grid) * float(episodes) * bytes_per_episode(max_users, max_steps, max_arrivals)


def available_bytes() -> int | None:
    """Memory the simulation may use: the accelerator's free memory (jax memory_stats) when it reports it, else
    the host's MemAvailable (/proc/meminfo), else its physical memory; None when nothing tells. The environment
    variable PRADA_MEMORY_LIMIT_BYTES overrides it (tests, shared machines)."""
    override = os.environ.get("PRADA_MEMORY_LIMIT_BYTES")
    if override:
        return int(float(override))
    try:
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and stats.get("bytes_limit"):
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - a backend without memory_stats
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def memory_problem(max_users: int, max_steps: int, max_arrivals: int, grid: int, episodes: int) -> str | None:
    """Why a simulate_grid call of this size cannot fit into the available memory (one line: the estimate and
    what it is made of), or None."""
    need = estimate_bytes(max_users, max_steps, max_arrivals, grid, episodes)
    have = available_bytes()
    if have is None or need <= have:
        return None
    per = bytes_per_episode(max_users, max_steps, max_arrivals)
    return (f"needs about {human_bytes(need)} ({episodes} episodes x {grid} grid points x {human_bytes(per)} per "
            f"episode at max_users={max_users}, A_max={max_arrivals} arrivals per slot), more than the "
            f"{human_bytes(have)} available")
