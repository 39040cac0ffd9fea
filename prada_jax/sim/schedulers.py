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

import jax.numpy as jnp

from prada_jax.sim import stage2 as S2
from prada_jax.sim.learned_scheduler import decide_learned
from prada_jax.sim.params import SCHEDULERS, SimConfig
from prada_jax.sim.protocols import DRAFT_VERIFY, OFFLOAD, PROTOCOLS  # noqa: F401  (re-exported)
from prada_jax.sim.slot_view import (  # noqa: F401  (re-exported: the pieces every scheduler shares)
    Candidates,
    SlotView,
    candidates,
    channel_wait_seconds,
    compact,
    inflight_seconds,
    make_view,
    scatter,
    theorem2,
)
from prada_jax.sim.stage2_exact import exact_stage2
from prada_jax.sim.state import QUEUED, Users

# Baseline schedulers admit only if at least this fraction of B is free (an equal share of ~0 would never end).
MIN_BANDWIDTH_FRACTION = 1e-6


@dataclasses.dataclass(frozen=True)
class Scheduler:
    name: str
    decide: Callable[[SlotView, SimConfig], tuple]
    protocol: str
    description: str
    reads_sched_draws: bool = True  # decide reads view.draws.sched_u (False: the slot draws skip those words)
    compacts: bool = True  # decide sees at most config.max_candidates candidates (`candidates`); False: all of them


def register(name: str, decide: Callable, protocol: str = OFFLOAD, description: str = "",
             reads_sched_draws: bool = True, compacts: bool = True) -> Scheduler:
    """Register a Stage-2 scheduler under `name` (once; a second registration of a name is an error).

    `reads_sched_draws=False` promises that `decide` never reads `view.draws.sched_u`, so the slot draws can skip
    those U words (a speed-up; the other draws are unchanged). Leave it True when in doubt. `compacts=False` promises
    that `decide` never reads `config.max_candidates` (it sees all candidates), so no slot overflows a cap and the
    exact cap (SimConfig.max_candidates=None) runs it once. SCHEDULERS, which this fills, is defined in
    prada_jax/sim/params.py, where SimConfig checks its `scheduler` name against it."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"scheduler {name!r}: protocol {protocol!r} is not one of {sorted(PROTOCOLS)}")
    return SCHEDULERS.add(name, Scheduler(name, decide, protocol, description, reads_sched_draws, compacts))


def get(name: str) -> Scheduler:
    return SCHEDULERS.lookup(name)


# ------------------------------------------------------------------------------------------------------------
# The registered schedulers (on the shared pieces of prada_jax/sim/slot_view.py)
# ------------------------------------------------------------------------------------------------------------


def fifo_queue_key(users: Users, t):
    """FIFO order: the slot at which the *current* request entered the queue; a fresh nominee enters now."""
    return jnp.where(users.phase == QUEUED, users.queue_entry, t)


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
