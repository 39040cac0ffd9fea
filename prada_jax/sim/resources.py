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

import jax
import jax.numpy as jnp
import numpy as np

from prada_jax.sim import latency_models
from prada_jax.sim.state import init_state

TEMP_FACTOR = 4.0  # XLA temporaries per episode / carried state bytes (bench: 17 KB / 5.3 KB = 3.2, rounded up)
ARRIVAL_BYTES = 32  # per A_max entry and episode: problem, distance, task seed, CDF entry and comparisons
FIXED_BYTES = 256 * 2**20  # compiled program, trace arrays, tables, runtime: not per episode


def state_bytes(max_users: int, max_steps: int) -> int:
    """Bytes of one episode's carried state (users + totals) at U user slots and K steps per problem."""
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


def step_time_problem(packed, params, config) -> str | None:
    """Why some step of the trace would take longer than float32 (the simulator's dtype) can add up over an
    episode (one line naming the parameter that makes it so and its value), or None.

    The worst step is bounded from above: the longest context (query + every step's longer output) and the most
    new tokens, on the server with max_users - 1 other requests of that context, and no cache. Step times grow
    with both, so every step of the trace takes at most this long. Its total over max_users users and every slot
    must stay finite, or totals such as server_work_s turn into inf or NaN (a utilisation of NaN while the
    occupancy reads 0.99999)."""
    slm = np.asarray(packed.slm_step_tokens, np.float64)
    llm = np.asarray(packed.llm_step_tokens, np.float64)
    context = float(np.max(np.asarray(packed.query_tokens, np.float64) + np.maximum(slm, llm).sum(axis=1)))
    new_tokens = float(max(slm.max(), llm.max(), 1.0))
    model = latency_models.get(config.latency_model)
    others = float(max(config.max_users - 1, 0))
    load = latency_models.ServerLoad(other_requests=jnp.float32(others),
                                     other_context_tokens=jnp.float32(others * context))
    ctx, tok = jnp.float32(context), jnp.float32(new_tokens)

    def worst(p):
        return (model.local_step(ctx, 0, tok, p), model.server_step(ctx, 0, tok, p.replace(prefix_cache=False), load),
                model.prm_check(ctx, tok, p, load))

    grid = np.ndim(params.bandwidth_bps) == 1
    with jax.numpy_dtype_promotion("standard"):
        local, server, prm = (np.asarray(x, np.float64).reshape(-1) for x in
                              (jax.vmap(worst)(params) if grid else worst(params)))
    budget = float(np.finfo(np.float32).max) / (max(config.max_users, 1) * (config.num_slots + config.drain_slots))
    for name, seconds in (("server", np.maximum(server, prm)), ("edge", local)):
        bad = ~(np.isfinite(seconds) & (seconds <= budget))
        if bad.any():
            g = int(np.argmax(bad))
            if config.latency_model == "flops":
                leaf = "flops_llm" if name == "server" else "flops_slm"
                value = f"{leaf}={np.asarray(getattr(params, leaf)).reshape(-1)[g]:g}"
            else:
                value = f"{name}_* hardware leaves (peak_flops, memory_bandwidth, efficiencies) at grid point {g}"
            return (f"SimParams.{value} makes one {'LLM' if name == 'server' else 'SLM'} step take up to "
                    f"{seconds[g]:.3g} s, which float32 (the simulator's dtype) cannot add up over "
                    f"{config.max_users} users x {config.num_slots + config.drain_slots} slots (limit {budget:.3g} s "
                    "a step); use a faster device")
    return None
