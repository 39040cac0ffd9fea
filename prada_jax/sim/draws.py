"""Per-slot random draws, from `fold_in(episode_key, t)`.

The JAX simulator and the NumPy oracle (tests/reference_sim.py) consume exactly these draws, so they
can be compared event by event.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SlotDraws:
    num_arrivals: jnp.ndarray  # int32 (); Poisson(lambda) by inversion, before the A_max cap
    problem: jnp.ndarray  # int32 [A] problem index of the a-th arrival
    distance_u: jnp.ndarray  # float32 [A] U(0,1) -> distance over the disk
    step_uniforms: jnp.ndarray  # float32 [A, K] quality-model draws, one per step
    fading: jnp.ndarray  # float32 [U] |h|^2 ~ Exp(1), block fading of this slot
    stage1_u: jnp.ndarray  # float32 [U] Stage 1 sampling draws (stage1_sampling=True)
    sched_u: jnp.ndarray  # float32 [U] scheduler draws (scheduler="random")


def poisson_support(max_arrivals: int) -> int:
    """Arrival counts are drawn exactly up to this bound (far above A_max; see SimParams validation)."""
    return 4 * max_arrivals + 16


def poisson_inverse_cdf(uniform, rate, support: int):
    """Poisson(rate) by inversion of one uniform, exact for counts < `support` (saturates there).

    Cheaper to compile than jax.random.poisson (no rejection loops) and identical in the oracle.
    """
    j = jnp.arange(support, dtype=jnp.float32)
    rate = jnp.asarray(rate, jnp.float32)
    log_pmf = -rate + j * jnp.log(jnp.maximum(rate, 1e-30)) - jax.lax.lgamma(j + 1.0)
    cdf = jnp.cumsum(jnp.where(rate > 0, jnp.exp(log_pmf), jnp.where(j == 0, 1.0, 0.0)))
    return jnp.sum(uniform > cdf).astype(jnp.int32)


def slot_draws(episode_key, t, arrival_rate, num_problems: int, max_steps: int, max_users: int,
               max_arrivals: int) -> SlotDraws:
    """All random numbers slot t needs. Shapes are static; `arrival_rate` may be traced."""
    # One uniform vector per slot, sliced into the named draws (a single threefry call keeps compiles short).
    a, k, u = max_arrivals, max_steps, max_users
    sizes = (1, a, a, a * k, u, u, u)
    flat = jax.random.uniform(jax.random.fold_in(episode_key, t), (sum(sizes),), jnp.float32)
    parts = jnp.split(flat, list(itertools.accumulate(sizes))[:-1])
    n_u, p_u, d_u, s_u, f_u, s1_u, sc_u = parts
    return SlotDraws(
        num_arrivals=poisson_inverse_cdf(n_u[0], arrival_rate, poisson_support(max_arrivals)),
        problem=jnp.minimum(jnp.floor(p_u * num_problems), num_problems - 1).astype(jnp.int32),
        distance_u=d_u,
        step_uniforms=s_u.reshape(a, k),
        fading=-jnp.log1p(-f_u),  # Exp(1) by inversion; u < 1 so it is finite
        stage1_u=s1_u,
        sched_u=sc_u,
    )


def episode_draws(episode_key, num_slots: int, arrival_rate, num_problems: int, max_steps: int,
                  max_users: int, max_arrivals: int) -> SlotDraws:
    """Draws for slots 0..num_slots-1 stacked on a leading axis (used by the oracle)."""
    fn = lambda t: slot_draws(episode_key, t, arrival_rate, num_problems, max_steps, max_users, max_arrivals)
    return jax.vmap(fn)(jnp.arange(num_slots))
