"""The candidate table a learned Stage-2 scheduler sees, and the feasibility projection that makes any action legal.

Shared by the registered scheduler `learned` (prada_jax.sim.learned_scheduler) and the environment it is trained in
(prada_jax.env.multiuser, which imports it as prada_jax.env.table), so training and deployment read the same
features and apply the same projection (docs/learned_scheduler.md).

Rows are the C candidates Stage 2 considers (`slot_view.candidates`: oldest first, the validity mask marks real
rows). Every feature is in utility units (PRM units, beta x seconds) before a signed log compression, so one
policy serves every beta, bandwidth and capacity of the training ranges.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from prada_jax import costs
from prada_jax.sim import stage2 as S2
from prada_jax.sim.params import SimConfig
from prada_jax.sim.slot_view import Candidates, SlotView, candidates, theorem2

# Row features, in this order (ROW_FEATURES) followed by the slot's global features (GLOBAL_FEATURES), which are
# repeated on every row so that the observation is one [C, NUM_FEATURES] array.
ROW_FEATURES = ("value_gap", "upload_cost", "queue_cost", "server_cost", "wait_cost", "log_snr", "feasible",
                "t2_local", "t2_queue", "t2_immediate", "valid")
GLOBAL_FEATURES = ("free_slot_fraction", "available_bw_fraction", "log_bandwidth", "capacity", "arrival_rate",
                   "log_beta", "candidate_load", "draining")
NUM_FEATURES = len(ROW_FEATURES) + len(GLOBAL_FEATURES)
VALID_COLUMN = ROW_FEATURES.index("valid")
T2_COLUMNS = tuple(ROW_FEATURES.index(n) for n in ("t2_local", "t2_queue", "t2_immediate"))
NUM_DECISIONS = 3  # S2.LOCAL_D, S2.QUEUE_D, S2.IMMEDIATE_D
UTILITY_SCALE = 10.0  # utility units are multiplied by this before the signed log (value gaps ~0.01-0.3)
# The candidate count is scaled by a constant, not by the cap C: the learned scheduler's decisions then do not depend
# on C whenever no slot overflows it, so the exact candidate cap (SimConfig.max_candidates=None) stays exact for it.
# 16 is the cap the shipped weights were trained at (DEFAULT_ENV_CONFIG), so their inputs are unchanged.
CANDIDATE_LOAD_SCALE = 16.0
INFINITE_COST = 1e3  # stands in for an infinite queueing delay (a channel that never clears) before compression


def symlog(x):
    """sign(x) log(1 + |x|): keeps small costs linear and compresses the tails (costs span ~6 decades)."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


@struct.dataclass
class CandidateTable:
    """One slot's C candidates: the policy's observation, and what the projection needs."""

    obs: jnp.ndarray  # float32 [C, NUM_FEATURES]
    cands: Candidates
    theorem2: S2.Stage2Out  # Theorem 2 on the same candidates (its decisions are features, its price is reused)
    b: jnp.ndarray  # float32 [C] eq. 30 at mu = 1: B*_i = b_i / s at price mu = s^2
    never_clears: jnp.ndarray  # bool [C] a queue would never be served (the channel never clears gamma_th)


def candidate_table(view: SlotView, config: SimConfig, arrival_rate) -> CandidateTable:
    """Observation of slot `view.t`: the candidate rows (value gap, upload cost at full B, Theorem 2's queueing
    delay estimate TQ, server-step time, wait tau, SNR, channel feasibility, Theorem 2's decision one-hot, validity)
    and the free server slots and available bandwidth."""
    p = view.params
    c = candidates(view, config)
    t2 = theorem2(view, config, c)
    beta = jnp.asarray(p.beta, jnp.float32)
    beta_e = jnp.maximum(beta, 1e-12)
    tc_ref = costs.upload_seconds(c.context, p.bandwidth_bps, c.snr)
    tq = jnp.where(jnp.isfinite(t2.tq), t2.tq, INFINITE_COST)
    wait_s = view.users.wait_slots[c.idx].astype(jnp.float32) * config.slot_seconds
    u = UTILITY_SCALE
    valid = c.valid.astype(jnp.float32)
    rows = jnp.stack([
        symlog(u * c.value_gap), symlog(u * beta * tc_ref), symlog(u * jnp.minimum(beta * tq, INFINITE_COST)),
        symlog(u * beta * c.server_seconds), symlog(u * beta * wait_s), jnp.log10(jnp.maximum(c.snr, 1e-6)) / 3.0,
        c.feasible.astype(jnp.float32),
        (t2.decision == S2.LOCAL_D).astype(jnp.float32), (t2.decision == S2.QUEUE_D).astype(jnp.float32),
        (t2.decision == S2.IMMEDIATE_D).astype(jnp.float32), valid,
    ], axis=-1)
    rows = jnp.where(c.valid[:, None], rows, 0.0)  # padding rows are zeros (their raw costs may be inf)
    m = jnp.maximum(p.server_capacity, 1).astype(jnp.float32)
    glob = jnp.stack([
        view.free_slots.astype(jnp.float32) / m, view.available_bw / p.bandwidth_bps,
        (jnp.log10(p.bandwidth_bps) - 7.0) / 2.0, m / 10.0, jnp.asarray(arrival_rate, jnp.float32) / 3.0,
        jnp.log10(beta_e) / 2.0, jnp.sum(view.cand).astype(jnp.float32) / CANDIDATE_LOAD_SCALE,
        (view.t >= config.num_slots).astype(jnp.float32),
    ])
    obs = jnp.concatenate([rows, jnp.broadcast_to(glob, (rows.shape[0], glob.shape[0]))], axis=-1)
    return CandidateTable(obs=obs.astype(jnp.float32), cands=c, theorem2=t2,
                          b=costs.optimal_bandwidth(c.context, c.snr, beta_e, 1.0),
                          never_clears=~jnp.isfinite(t2.tq))


def project(view: SlotView, table: CandidateTable, action):
    """Feasibility projection of an action ([C] in {local, queue, immediate}; invalid rows are ignored) onto a legal
    Stage-2 decision. Returns (decision [C] int32, bandwidth [C] float32).

    1. An immediate request needs a usable channel and available bandwidth: otherwise it queues.
    2. At most F = M - in flight immediate requests: the oldest F (candidate order) keep it, the rest queue.
    3. A queue that would never be served (the channel never clears gamma_th) runs locally instead.
    4. Bandwidth (eq. 30 with the price search of `prada`): if the admitted set is Theorem 2's, it gets Theorem 2's
       bandwidth; otherwise B*_i = b_i / s with s the larger of Theorem 2's price and the smallest price at which
       the admitted set fits into the available bandwidth (so sum B*_i <= B_av always).
    """
    c, t2, b = table.cands, table.theorem2, table.b
    action = jnp.clip(jnp.asarray(action, jnp.int32), 0, NUM_DECISIONS - 1)
    want = c.valid & (action == S2.IMMEDIATE_D)
    can = want & c.feasible & (b > 0.0) & (view.available_bw > 0.0)
    admitted = can & (jnp.cumsum(can) - 1 < view.free_slots)
    decision = jnp.where(admitted, S2.IMMEDIATE_D, jnp.where(want, S2.QUEUE_D, action))
    decision = jnp.where((decision == S2.QUEUE_D) & table.never_clears, S2.LOCAL_D, decision)
    decision = jnp.where(c.valid, decision, S2.LOCAL_D).astype(jnp.int32)

    same_as_t2 = jnp.all(admitted == (c.valid & (t2.decision == S2.IMMEDIATE_D)))
    demand = jnp.sum(jnp.where(admitted, b, 0.0))
    s_t2 = jnp.where(jnp.isfinite(t2.log10_mu), 10.0 ** (0.5 * t2.log10_mu), 0.0)
    s_fit = demand / jnp.maximum(view.available_bw, 1e-30) * (1.0 + S2.PRICE_ROUNDING)
    s = jnp.maximum(s_t2, s_fit)
    bandwidth = jnp.where(admitted, b / jnp.where(admitted & (s > 0.0), s, 1.0), 0.0)
    bandwidth = jnp.where(same_as_t2, jnp.where(admitted, t2.bandwidth, 0.0), bandwidth)
    return decision, bandwidth.astype(jnp.float32)


def theorem2_action(table: CandidateTable):
    """The action that reproduces Theorem 2 (the `prada` scheduler) through the projection: its own decisions."""
    return table.theorem2.decision
