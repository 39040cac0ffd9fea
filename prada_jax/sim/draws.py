"""Per-slot random draws, from `fold_in(episode_key, t)`.

The JAX simulator and the NumPy oracle (tests/reference_sim.py) consume exactly these draws, so they
can be compared event by event.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class SlotDraws:
    num_arrivals: jnp.ndarray  # int32 (); Poisson(lambda) truncated at A_max (renormalised), by inversion
    problem: jnp.ndarray  # int32 [A] problem index of the a-th arrival
    distance_u: jnp.ndarray  # float32 [A] U(0,1) -> distance over the disk
    step_uniforms: jnp.ndarray  # float32 [A, K] quality-model draws, one per step
    fading: jnp.ndarray  # float32 [U] |h|^2 ~ Exp(1), block fading of this slot
    stage1_u: jnp.ndarray  # float32 [U] Stage 1 sampling draws (stage1_sampling=True)
    sched_u: jnp.ndarray  # float32 [U] scheduler draws (scheduler="random")


# The arrival count of a slot is Poisson(lambda) truncated at A_max = SimConfig.max_arrivals_per_slot and
# renormalised; A_max must leave at most this much probability mass above it (validated, never silently dropped).
ARRIVAL_TAIL_TOLERANCE = 1e-9


def required_max_arrivals(rate, tolerance: float = ARRIVAL_TAIL_TOLERANCE) -> int:
    """Smallest A_max with P(Poisson(rate) > A_max) <= tolerance (float64, scipy), for the largest rate given."""
    from scipy.stats import poisson

    rate = float(np.max(np.asarray(rate, np.float64)))
    if not np.isfinite(rate) or rate < 0:
        raise ValueError(f"arrival rate must be finite and >= 0, got {rate}")
    a = max(int(rate), 1)
    while poisson.sf(a, rate) > tolerance:
        a += 1
    return a


def arrival_tail_mass(rate, max_arrivals: int) -> float:
    """P(Poisson(rate) > max_arrivals) for the largest rate given (the mass the truncated draw renormalises)."""
    from scipy.stats import poisson

    return float(poisson.sf(int(max_arrivals), float(np.max(np.asarray(rate, np.float64)))))


def poisson_inverse_cdf(uniform, rate, max_count: int):
    """Poisson(rate) truncated to {0..max_count} and renormalised, by inversion of one uniform in [0, 1).

    The CDF is divided by its last entry, so it ends at exactly 1.0 and a float32 uniform can never land above
    it (no spurious burst at the cap). Validation keeps the truncated mass below ARRIVAL_TAIL_TOLERANCE.
    Cheaper to compile than jax.random.poisson (no rejection loops) and identical in the oracle.
    """
    j = jnp.arange(max_count + 1, dtype=jnp.float32)
    rate = jnp.asarray(rate, jnp.float32)
    log_pmf = -rate + j * jnp.log(jnp.maximum(rate, 1e-30)) - jax.lax.lgamma(j + 1.0)
    cdf = jnp.cumsum(jnp.where(rate > 0, jnp.exp(log_pmf), jnp.where(j == 0, 1.0, 0.0)))
    cdf = cdf / cdf[-1]
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
        num_arrivals=poisson_inverse_cdf(n_u[0], arrival_rate, max_arrivals),
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
