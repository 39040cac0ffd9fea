"""Stage-2 schedulers, registered once by name (the simulator, the sweep, the benchmark and the tests read this).

A scheduler is a pure function `decide(view, config) -> (decision [U] int32, bandwidth [U] float32)` over the
slot's `SlotView`, plus the *protocol* it serves: "offload" (PRADA's semantics: Stage 1 nominates steps, Stage 2
runs them locally, queues them or uploads them for the LLM) or "draft_verify" (RSD: every step is drafted
locally, then queued for an online PRM check on the server). Adding a scheduler = one function, one
`register(...)` call here (or in your own module) and its oracle twin in tests/reference_sim.py
(docs/extending.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from prada_jax import costs
from prada_jax.sim import stage2 as S2
from prada_jax.sim.draws import SlotDraws
from prada_jax.sim.named import Registry
from prada_jax.sim.params import SimConfig, SimParams
from prada_jax.sim.policies import PolicyTable
from prada_jax.sim.protocols import DRAFT_VERIFY, OFFLOAD, PROTOCOLS  # noqa: F401  (re-exported)
from prada_jax.sim.state import QUEUED, SERVE, UPLOAD, Users

# Baseline schedulers admit only if at least this fraction of B is free (an equal share of ~0 would never end).
MIN_BANDWIDTH_FRACTION = 1e-6


@struct.dataclass
class SlotView:
    """What Stage 2 sees in slot t: the users, this slot's candidates and channel, and the free resources."""

    users: Users
    cand: jnp.ndarray  # bool [U] candidates (nominated READY users and QUEUED users)
    gamma: jnp.ndarray  # float32 [U] faded SNR of this slot
    feasible: jnp.ndarray  # bool [U] gamma >= gamma_th
    draws: SlotDraws
    table: PolicyTable
    params: SimParams
    t: jnp.ndarray  # int32 slot index
    inflight: jnp.ndarray  # bool [U] UPLOAD or SERVE
    free_slots: jnp.ndarray  # int32 F = M - in flight
    available_bw: jnp.ndarray  # float32 B minus the bandwidth held by uploads in progress


@dataclasses.dataclass(frozen=True)
class Scheduler:
    name: str
    decide: Callable[[SlotView, SimConfig], tuple]
    protocol: str
    description: str
    reads_sched_draws: bool = True  # decide reads view.draws.sched_u (False: the slot draws skip those words)
    compacts: bool = True  # decide sees at most config.max_candidates candidates (`candidates`); False: all of them


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")


def register(name: str, decide: Callable, protocol: str = OFFLOAD, description: str = "",
             reads_sched_draws: bool = True, compacts: bool = True) -> Scheduler:
    """Register a Stage-2 scheduler under `name` (once; a second registration of a name is an error).

    `reads_sched_draws=False` promises that `decide` never reads `view.draws.sched_u`, so the slot draws can skip
    those U words (a speed-up; the other draws are unchanged). Leave it True when in doubt. `compacts=False` promises
    that `decide` never reads `config.max_candidates` (it sees all candidates), so no slot overflows a cap and the
    exact cap (SimConfig.max_candidates=None) runs it once."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"scheduler {name!r}: protocol {protocol!r} is not one of {sorted(PROTOCOLS)}")
    return SCHEDULERS.add(name, Scheduler(name, decide, protocol, description, reads_sched_draws, compacts))


def get(name: str) -> Scheduler:
    return SCHEDULERS.lookup(name)


def make_view(users: Users, cand, gamma, feasible, draws, table, params: SimParams, t) -> SlotView:
    inflight = (users.phase == UPLOAD) | (users.phase == SERVE)
    held = jnp.sum(jnp.where(users.phase == UPLOAD, users.bandwidth, 0.0))
    return SlotView(users=users, cand=cand, gamma=gamma, feasible=feasible, draws=draws, table=table, params=params,
                    t=jnp.asarray(t, jnp.int32), inflight=inflight,
                    free_slots=jnp.maximum(params.server_capacity - jnp.sum(inflight), 0),
                    available_bw=jnp.maximum(params.bandwidth_bps - held, 0.0))


# ------------------------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------------------------


def channel_wait_seconds(mean_snr, params: SimParams, slot_seconds: float):
    """Expected wait for a slot whose faded SNR clears gamma_th: slot length / P(feasible), with
    P(feasible) = exp(-gamma_th / mean SNR) under Rayleigh block fading (+inf when it is 0)."""
    p_feasible = jnp.exp(-costs.db_to_linear(params.snr_threshold_db) / jnp.maximum(mean_snr, 1e-30))
    return jnp.where(p_feasible > 0, slot_seconds / jnp.maximum(p_feasible, 1e-30), jnp.inf)


def fifo_queue_key(users: Users, t):
    """FIFO order: the slot at which the *current* request entered the queue; a fresh nominee enters now."""
    return jnp.where(users.phase == QUEUED, users.queue_entry, t)


def compact(cand, wait_slots, num: int, max_wait: int):
    """Indices of at most `num` candidates, oldest (longest waiting) first, ties by lower user index.

    The integer scores are ranked as float32 when that is exact (< 2**24; `max_wait` bounds wait_slots): XLA:CPU
    lowers an int32 top_k to a full sort but a float32 one to its fast TopK kernel; the indices are identical.
    """
    u = cand.shape[0]
    score = jnp.where(cand, wait_slots * u + (u - 1 - jnp.arange(u, dtype=jnp.int32)), -1)
    if (max_wait + 1) * u < 2**24:
        score = score.astype(jnp.float32)
    _, idx = jax.lax.top_k(score, num)
    return idx, cand[idx]


@struct.dataclass
class Candidates:
    """The C candidates a compacted scheduler considers (oldest first), with the inputs of section 4.2."""

    idx: jnp.ndarray  # int32 [C] user index
    valid: jnp.ndarray  # bool [C]
    feasible: jnp.ndarray  # bool [C]
    value_gap: jnp.ndarray  # float32 [C] eq. 33
    server_seconds: jnp.ndarray  # float32 [C] D_psi
    context: jnp.ndarray  # int32 [C] tokens to upload
    snr: jnp.ndarray  # float32 [C] faded SNR, or the mean SNR where the channel is below the threshold
    channel_wait: jnp.ndarray  # float32 [C] expected wait for a usable channel


def candidates(view: SlotView, config: SimConfig) -> Candidates:
    u = view.users
    idx, valid = compact(view.cand, u.wait_slots, config.max_candidates, config.num_slots + config.drain_slots)
    p, k = u.problem[idx], u.step[idx]
    return Candidates(
        idx=idx, valid=valid, feasible=view.feasible[idx],
        value_gap=costs.value_gap(view.table.advantage[p, k], view.table.nominate_prob[p, k]),
        server_seconds=view.table.server_seconds[p, k], context=u.context[idx],
        snr=jnp.where(view.feasible[idx], view.gamma[idx], u.mean_snr[idx]),
        channel_wait=channel_wait_seconds(u.mean_snr[idx], view.params, config.slot_seconds),
    )


def inflight_seconds(view: SlotView, config: SimConfig):
    """[U] remaining seconds of in-flight requests (when their server slot is released), +inf elsewhere."""
    return jnp.where(view.inflight, view.users.busy_slots * config.slot_seconds, jnp.inf)


def scatter(view: SlotView, c: Candidates, decision_c, bandwidth_c):
    """[C] decisions back to [U]. Candidates beyond the C considered: queued requests keep waiting; new nominees,
    which Stage 2 could not consider, run locally (a nomination is no commitment, section 4.1.1)."""
    u_count = view.cand.shape[0]
    decision = jnp.where(view.users.phase == QUEUED, S2.QUEUE_D, S2.LOCAL_D).astype(jnp.int32)
    decision = decision.at[c.idx].set(jnp.where(c.valid, decision_c, decision[c.idx]))
    bandwidth = jnp.zeros((u_count,), jnp.float32).at[c.idx].set(jnp.where(c.valid, bandwidth_c, 0.0))
    return decision, bandwidth


# ------------------------------------------------------------------------------------------------------------
# The registered schedulers
# ------------------------------------------------------------------------------------------------------------


def theorem2(view: SlotView, config: SimConfig, c: Candidates) -> S2.Stage2Out:
    """Theorem 2's per-candidate output ([C] decisions, eq.-30 bandwidth, price) over the candidates `c`."""
    return S2.prada_stage2(
        valid=c.valid, feasible=c.feasible, value_gap=c.value_gap, server_seconds=c.server_seconds,
        context=c.context, snr=c.snr, inflight_seconds=inflight_seconds(view, config), channel_wait=c.channel_wait,
        num_candidates=jnp.sum(view.cand), free_slots=view.free_slots, server_capacity=view.params.server_capacity,
        available_bw=view.available_bw, total_bw=view.params.bandwidth_bps, beta=view.params.beta,
        max_servers=config.max_servers, tq_iterations=config.tq_iterations, segment_halvings=config.price_segment_halvings,
        queue_pays_price=config.queue_pays_price,
    )


def decide_prada(view: SlotView, config: SimConfig):
    """Theorem 2 (the paper's rule) over the C oldest candidates."""
    c = candidates(view, config)
    out = theorem2(view, config, c)
    return scatter(view, c, out.decision, out.bandwidth)


def decide_fifo(view: SlotView, config: SimConfig):
    """Every candidate wants the server; free slots go to the oldest requests (FIFO), equal bandwidth shares."""
    return S2.fifo_stage2(view.cand, view.feasible, fifo_queue_key(view.users, view.t), view.free_slots,
                          view.available_bw, MIN_BANDWIDTH_FRACTION * view.params.bandwidth_bps)


def decide_random(view: SlotView, config: SimConfig):
    """Local / queue / immediate uniformly at random per candidate (the paper's ablation)."""
    return S2.random_stage2(view.cand, view.feasible, view.draws.sched_u, view.free_slots, view.available_bw,
                            MIN_BANDWIDTH_FRACTION * view.params.bandwidth_bps)


def decide_prada_exact(view: SlotView, config: SimConfig):
    """Problem (28) solved per slot (docs/exact_stage2.md): the admitted set maximising the summed values
    with the optimal sqrt(c) bandwidth split, the same queueing-delay estimate as the paper's rule."""
    from prada_jax.sim.stage2_exact import exact_stage2

    c = candidates(view, config)
    tq, _ = S2.queue_delay_estimate(
        c.valid, c.feasible, c.value_gap, c.server_seconds, c.context, c.snr, inflight_seconds(view, config),
        view.free_slots, view.params.server_capacity, view.params.bandwidth_bps, view.params.beta, c.channel_wait,
        max_servers=config.max_servers, tq_iterations=config.tq_iterations)
    never = ~jnp.isfinite(tq)  # a channel that never clears: no queue option (only infeasible candidates)
    out = exact_stage2(c.valid, c.feasible, c.value_gap, c.context, c.snr, jnp.where(never, 0.0, tq),
                       view.free_slots, view.available_bw, view.params.bandwidth_bps, view.params.beta,
                       max_servers=config.max_servers)
    decision = jnp.where(never & (out.decision == S2.QUEUE_D), S2.LOCAL_D, out.decision)
    return scatter(view, c, decision, out.bandwidth)


def decide_learned(view: SlotView, config: SimConfig):
    """The PPO-trained scheduler (prada_jax.env.policy, docs/learned_scheduler.md): a greedy permutation-equivariant
    policy over the candidate table, made legal by the environment's feasibility projection."""
    from prada_jax.env.policy import decide_learned as decide

    return decide(view, config)


register("prada", decide_prada, OFFLOAD, "Theorem 2: local / queue / immediate, closed-form bandwidth, price mu",
         reads_sched_draws=False)
register("fifo", decide_fifo, OFFLOAD, "FIFO admission of every nominee (All-LLM, pi-only, router)",
         reads_sched_draws=False, compacts=False)
register("random", decide_random, OFFLOAD, "uniformly random local / queue / immediate (ablation)", compacts=False)
register("prada_exact", decide_prada_exact, OFFLOAD,
         "problem (28) per slot: best admitted set with the sqrt(c) bandwidth split (near-exact, certified bound)",
         reads_sched_draws=False)
register("rsd", decide_fifo, DRAFT_VERIFY, "reward-guided speculative decoding: FIFO queue of online PRM checks",
         reads_sched_draws=False, compacts=False)
register("learned", decide_learned, OFFLOAD,
         "PPO-trained residual over Theorem 2 on the candidate table (shipped weights; docs/learned_scheduler.md)",
         reads_sched_draws=False)
