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

from prada_jax.sim.errors import SimParamsError


@struct.dataclass
class SlotDraws:
    num_arrivals: jnp.ndarray  # int32 (); Poisson(lambda) truncated at A_max (renormalised), by inversion
    problem: jnp.ndarray  # int32 [A] problem index of the a-th arrival
    distance_u: jnp.ndarray  # float32 [A] U(0,1) -> distance over the disk
    task_seed: jnp.ndarray  # uint32 [A] seed of the a-th arrival's per-step quality draws (see step_uniform)
    fading: jnp.ndarray  # float32 [U] |h|^2 ~ Exp(1), block fading of this slot
    stage1_u: jnp.ndarray  # float32 [U] Stage 1 sampling draws (stage1_sampling=True)
    sched_u: jnp.ndarray  # float32 [U] scheduler draws (scheduler="random")


# The arrival count of a slot is Poisson(lambda) truncated at A_max = SimConfig.max_arrivals_per_slot and
# renormalised; A_max must leave at most this much probability mass above it (validated, never silently dropped).
ARRIVAL_TAIL_TOLERANCE = 1e-9


# The largest A_max a simulation may draw per slot and episode. Each slot draws A_max arrival records per episode
# (and the inverse CDF over A_max + 1 counts), so A_max sets memory and time; a rate that needs more is absurd for
# this simulator (every slot admits at most max_users arrivals; nearly every task would be dropped).
MAX_ARRIVALS_LIMIT = 4096


def arrival_rate_problem(rate, max_users: int | None = None) -> str | None:
    """Why arrival rate(s) `rate` (Poisson tasks per slot) cannot be simulated (one line, with the value), or None:
    not finite, negative, or so large that its Poisson cap A_max would exceed MAX_ARRIVALS_LIMIT draws per slot."""
    rate = np.asarray(rate, np.float64).reshape(-1)
    if rate.size == 0:
        return None
    if not np.all(np.isfinite(rate)) or np.any(rate < 0):
        return f"must be finite and >= 0, got {rate[~np.isfinite(rate) | (rate < 0)][0]:g}"
    top = float(rate.max())
    # A_max >= rate; the check below runs scipy only for rates that can still fit (1e30 breaks its search).
    if top > MAX_ARRIVALS_LIMIT or required_max_arrivals(top) > MAX_ARRIVALS_LIMIT:
        users = f"; at most max_users={max_users} user slots take arrivals, so" if max_users else "; "
        return (f"{top:g} tasks per slot is absurd: its Poisson cap A_max (P(more arrivals in a slot) <= "
                f"{ARRIVAL_TAIL_TOLERANCE:g}) exceeds {MAX_ARRIVALS_LIMIT} draws per slot and episode{users} nearly "
                "every task would be dropped; use a rate below the service capacity")
    return None


def check_arrival_rate(rate, max_users: int | None = None) -> None:
    """SimParamsError naming SimParams.arrival_rate when `arrival_rate_problem` finds one."""
    problem = arrival_rate_problem(rate, max_users)
    if problem:
        raise SimParamsError(f"SimParams.arrival_rate {problem}")


def required_max_arrivals(rate, tolerance: float = ARRIVAL_TAIL_TOLERANCE) -> int:
    """Smallest A_max with P(Poisson(rate) > A_max) <= tolerance (float64, scipy), for the largest rate given."""
    from scipy.stats import poisson

    rate = float(np.max(np.asarray(rate, np.float64)))
    if not np.isfinite(rate) or rate < 0:
        raise ValueError(f"arrival rate must be finite and >= 0, got {rate}")
    if rate > 16 * MAX_ARRIVALS_LIMIT:
        raise ValueError(f"arrival rate {rate:g} per slot is beyond any A_max this simulator draws "
                         f"(limit {MAX_ARRIVALS_LIMIT}; see arrival_rate_problem)")
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


def bits_to_uniform(bits):
    """uint32 -> float32 uniform in [0, 1) from the top 24 bits (exactly representable, never 1)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def step_uniform(task_seed, step):
    """The quality-model uniform of step `step` of the task with `task_seed`: a 32-bit integer hash
    ("lowbias32", C. Wellons) of seed + step x golden-ratio constant, then its top 24 bits. Cheap, stateless, and
    computed identically (in uint32 arithmetic) by the oracle."""
    x = jnp.asarray(task_seed, jnp.uint32) + jnp.asarray(step, jnp.uint32) * jnp.uint32(0x9E3779B9)
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return bits_to_uniform(x)


def _prefix_is_stable() -> bool:
    """Whether the first n words of `jax.random.bits(key, (m,))` equal `jax.random.bits(key, (n,))` (n <= m): true
    for the partitionable threefry (each word is a function of its own index), checked once on concrete keys."""
    global _PREFIX_STABLE
    if _PREFIX_STABLE is None:
        with jax.ensure_compile_time_eval():
            key = jax.random.PRNGKey(12345)
            full = np.asarray(jax.random.bits(key, (37,), jnp.uint32))
            part = np.asarray(jax.random.bits(key, (20,), jnp.uint32))
        _PREFIX_STABLE = bool(np.array_equal(full[:20], part))
    return _PREFIX_STABLE


_PREFIX_STABLE = None


def _bits_prefix(key, total: int, need: int):
    """The first `need` words of `jax.random.bits(key, (total,))`, computing only those when the PRNG allows it."""
    if need < total and _prefix_is_stable():
        return jax.random.bits(key, (need,), jnp.uint32)
    return jax.random.bits(key, (total,), jnp.uint32)[:need]


def _rotate_left(x, d: int):
    return (x << jnp.uint32(d)) | (x >> jnp.uint32(32 - d))


def _threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32 (20 rounds), the hash under jax's default PRNG, written out in jnp: the same words as
    jax's own lowering, which on CPU runs its rounds as a rolled loop (a while loop of small kernels inside the
    slot step); unrolled, XLA fuses the whole hash into the kernel that consumes it."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x1, x2


def _fast_prng() -> bool:
    """Whether `_slot_bits` may compute the words itself: jax's threefry with the partitionable layout (word i of
    `bits(key, (n,))` is the hash of the 64-bit counter i; checked against jax once, `_prefix_is_stable`)."""
    global _FAST_PRNG
    if _FAST_PRNG is None:
        _FAST_PRNG = (jax.config.jax_default_prng_impl == "threefry2x32" and bool(jax.config.jax_threefry_partitionable)
                      and _prefix_is_stable())
    return _FAST_PRNG


_FAST_PRNG = None


def _slot_bits(episode_key, t, total: int, need: int):
    """The first `need` words of `jax.random.bits(jax.random.fold_in(episode_key, t), (total,))`.

    For a raw threefry key (uint32[2], what `jax.random.PRNGKey`/`split` return) the hash is computed here,
    unrolled (`_threefry2x32`): fold_in(key, t) = threefry(key, (0, t)), and word i = the xor of threefry(key,
    (0, i)). The same words as jax's (tests/test_sim_run.py compares them); other keys take jax's path."""
    key = jnp.asarray(episode_key)
    if not (_fast_prng() and key.dtype == jnp.uint32 and key.shape == (2,)):
        return _bits_prefix(jax.random.fold_in(episode_key, t), total, need)
    t = jnp.asarray(t).astype(jnp.uint32)
    f1, f2 = _threefry2x32(key[0], key[1], jnp.zeros((), jnp.uint32), t)
    b1, b2 = _threefry2x32(f1, f2, jnp.zeros((need,), jnp.uint32), jnp.arange(need, dtype=jnp.uint32))
    return b1 ^ b2


def materialized(t, fn):
    """`fn()` (a pytree of arrays), computed once per slot and stored.

    XLA:CPU fuses cheap elementwise work into every kernel that reads it and drops optimisation barriers, so a hash
    or a logarithm read by several kernels, or through a gather into the U user slots, is recomputed by each of
    them (scalar code in a gather). A conditional is a fusion boundary: `fn` runs inside one on `t >= 0`, which
    always holds for a slot index (the other branch returns zeros of the same shapes). The values are those of
    `fn()`. When `t` is batched (vmapped over slots, as in `episode_draws`) the conditional becomes a select of the
    two branches, with the same values."""
    def zeros():
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fn))

    return jax.lax.cond(jnp.asarray(t) >= 0, fn, zeros)


def slot_draws(episode_key, t, arrival_rate, num_problems: int, max_steps: int, max_users: int,
               max_arrivals: int, stage1: bool = True, sched: bool = True) -> SlotDraws:
    """All random numbers slot t needs. Shapes are static; `arrival_rate` may be traced.

    One threefry call of random bits per slot, sliced into the named draws. An arrival's K per-step quality draws
    are not drawn here (most of the A_max arrival rows are unused): each arrival gets one 32-bit seed and its
    step-k uniform is `step_uniform(seed, k)`, computed when the step ends.

    `stage1=False` / `sched=False` (static) skip the trailing words of the Stage-1 and scheduler uniforms when the
    caller does not read them (their fields are then zeros); the other draws are unchanged (see `_bits_prefix`).
    """
    del max_steps  # the per-step draws come from task_seed
    a, u = max_arrivals, max_users
    sizes = (1, a, a, a, u, u, u)
    total = sum(sizes)
    need = total if sched else (total - u if stage1 else total - 2 * u)

    def draw():
        bits = _slot_bits(episode_key, t, total, need)
        bits = jnp.concatenate([bits, jnp.zeros((total - need,), jnp.uint32)]) if need < total else bits
        parts = jnp.split(bits, list(itertools.accumulate(sizes))[:-1])
        n_b, p_b, d_b, seed_b, f_b, s1_b, sc_b = parts
        n_u, p_u, d_u, f_u, s1_u, sc_u = (bits_to_uniform(x) for x in (n_b, p_b, d_b, f_b, s1_b, sc_b))
        return SlotDraws(
            num_arrivals=poisson_inverse_cdf(n_u[0], arrival_rate, max_arrivals),
            problem=jnp.minimum(jnp.floor(p_u * num_problems), num_problems - 1).astype(jnp.int32),
            distance_u=d_u,
            task_seed=seed_b,
            fading=-jnp.log1p(-f_u),  # Exp(1) by inversion; u < 1 so it is finite
            stage1_u=s1_u,
            sched_u=sc_u,
        )

    return materialized(t, draw)  # computed once, not by each kernel that reads a draw


def episode_draws(episode_key, num_slots: int, arrival_rate, num_problems: int, max_steps: int,
                  max_users: int, max_arrivals: int) -> SlotDraws:
    """Draws for slots 0..num_slots-1 stacked on a leading axis (used by the oracle)."""
    def fn(t):
        return slot_draws(episode_key, t, arrival_rate, num_problems, max_steps, max_users, max_arrivals)

    return jax.vmap(fn)(jnp.arange(num_slots))
