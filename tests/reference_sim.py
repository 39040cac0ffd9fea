"""Plain NumPy/Python reference ("oracle") of the PRADA slot simulator: one episode, one user at a time.

It implements docs/design.md "Simulator semantics" and docs/simulator.md independently of prada_jax.sim
(explicit loops, float64, a real list scheduler with a heap), consuming the same per-slot random draws
(prada_jax.sim.draws) so the JAX simulator must reproduce its metrics. Only the cost formulas are shared
(they have their own unit tests).
"""

from __future__ import annotations

import heapq
import math

import jax
import numpy as np

from prada_jax import constants as C
from prada_jax import costs
from prada_jax.latency import QWEN25_MATH_1_5B, QWEN25_MATH_7B  # shapes only (the formulas are below)
from prada_jax.sim.draws import episode_draws, required_max_arrivals
from prada_jax.sim.schedulers import SCHEDULERS  # only the `compacts` declaration (which schedulers have a cap)

FREE, READY, LOCAL, UPLOAD, SERVE, QUEUED = 0, 1, 2, 3, 4, 5
MIN_BANDWIDTH_FRACTION = 1e-6


def f(x):
    """Evaluate a prada_jax.costs formula on Python numbers, as a float64 number."""
    return float(np.asarray(x, np.float64))


def db_to_linear(db):
    return 10.0 ** (db / 10.0)


def local_seconds(ctx, cached, tokens, flops):
    return f(costs.local_step_seconds(np.float64(ctx), np.float64(cached), np.float64(tokens), flops))


def server_seconds(ctx, cached, tokens, flops, prefix):
    return f(costs.server_step_seconds(np.float64(ctx), np.float64(cached), np.float64(tokens), flops, prefix))


def prm_seconds(ctx, tokens, flops):
    return f(costs.prm_check_seconds(np.float64(ctx), np.float64(tokens), flops))


# ---- Roofline latency model, float64, own code (the JAX side: prada_jax/latency.py via sim/latency_models.py) ----

def arch_work(arch):
    """Per-architecture constants from its shape: (weight parameters read per forward pass, matmul FLOPs per token,
    LM-head FLOPs per token, attention FLOPs per (query, key), KV bytes per token)."""
    h, q, kv = arch.hidden, arch.heads * (arch.hidden // arch.heads), arch.kv_heads * (arch.hidden // arch.heads)
    matrices = h * q + 2 * h * kv + q * h + 3 * h * arch.intermediate
    layer = matrices + q + 2 * kv + 2 * h
    table = arch.vocab * h
    params = arch.layers * layer + h + (table if arch.tie_embeddings else 2 * table)
    read = params - (0 if arch.tie_embeddings else table)  # an untied input embedding is gathered, not read whole
    return (float(read), 2.0 * arch.layers * matrices, 2.0 * h * arch.vocab, 4.0 * arch.layers * q,
            2.0 * arch.layers * kv * arch.bytes_per_kv)


def pass_seconds(flops, nbytes, hw):
    """One forward pass on hw = (peak FLOP/s, bytes/s, compute eff., bandwidth eff., overhead s)."""
    if flops <= 0 and nbytes <= 0:
        return 0.0
    peak, bw, ce, be, overhead = hw
    return overhead + max(flops / (peak * ce), nbytes / (bw * be))


def prefill_pass_seconds(m, c, arch, hw, bpp):
    """Prefill of tokens c+1..m (token i attends to i keys), logits of the last one, all KV moved once."""
    read, mm, lm, attn, kvb = arch_work(arch)
    if m - c <= 0:
        return 0.0
    flops = mm * (m - c) + lm + attn * sum(range(c + 1, m + 1))
    return pass_seconds(flops, read * bpp + kvb * m, hw)


def roofline_step_seconds(m, cached, n, arch, hw, bpp, others=0, others_ctx=0):
    """Prefill (alone) of the uncached context, then n - 1 batched decode iterations, one at a time."""
    read, mm, lm, attn, kvb = arch_work(arch)
    m, c, n = float(m), float(min(cached, m - 1)), max(int(n), 1)
    t = prefill_pass_seconds(int(m), int(c), arch, hw, bpp)
    for i in range(n - 1):
        keys = m + 1 + i  # the token fed in iteration i attends to the cache and itself
        flops = (mm + lm) * (1 + others) + attn * (keys + others_ctx)
        t += pass_seconds(flops, read * bpp + kvb * (keys + others_ctx), hw)
    return t


def hw_of(p, side):
    return tuple(float(p[f"{side}_{k}"]) for k in ("peak_flops", "memory_bandwidth", "compute_efficiency",
                                                      "bandwidth_efficiency", "overhead_s"))


def roofline_local(ctx, cached, tokens, p):
    return roofline_step_seconds(ctx, cached, tokens, QWEN25_MATH_1_5B, hw_of(p, "edge"), float(p["edge_bytes_per_param"]))


def roofline_server(ctx, cached, tokens, p, others, others_ctx):
    cached = cached if p["prefix_cache"] else 0
    return roofline_step_seconds(ctx, cached, tokens, QWEN25_MATH_7B, hw_of(p, "server"),
                                 float(p["server_bytes_per_param"]), others, others_ctx)


def roofline_prm(ctx, tokens, p, others, others_ctx):
    return prefill_pass_seconds(ctx + tokens, 0, QWEN25_MATH_1_5B, hw_of(p, "server"), float(p["server_bytes_per_param"]))


def calibrated_hw(p, side, phase):
    """hw_of(p, side) with the published fit (prada_jax/calibration/published_fit.json) of the preset whose peaks
    the leaves hold, else the side's fallback: efficiencies multiplied, the phase's overhead added."""
    from prada_jax.calibration.published import load_fit
    from prada_jax.hardware import HARDWARE_PRESETS

    fit = load_fit()
    peak, bw, ce, be, overhead = hw_of(p, side)
    cal = fit["fallback"][side]
    for name, f in fit["devices"].items():
        hw = HARDWARE_PRESETS[name]
        if abs(bw / hw.memory_bandwidth - 1) < 1e-4 and abs(peak / hw.peak_flops - 1) < 1e-4:
            cal = f
            break
    return (peak, bw, ce * cal["compute_efficiency"], be * cal["bandwidth_efficiency"],
            overhead + cal["prefill_overhead_s" if phase == "prefill" else "decode_overhead_s"])


def calibrated_step_seconds(m, cached, n, arch, p, side, bpp, others=0, others_ctx=0):
    """roofline_step_seconds with the prefill on the prefill calibration and each decode pass on the decode one."""
    read, mm, lm, attn, kvb = arch_work(arch)
    hw_d = calibrated_hw(p, side, "decode")
    m, c, n = float(m), float(min(cached, m - 1)), max(int(n), 1)
    t = prefill_pass_seconds(int(m), int(c), arch, calibrated_hw(p, side, "prefill"), bpp)
    for i in range(n - 1):
        keys = m + 1 + i
        flops = (mm + lm) * (1 + others) + attn * (keys + others_ctx)
        t += pass_seconds(flops, read * bpp + kvb * (keys + others_ctx), hw_d)
    return t


def calibrated_local(ctx, cached, tokens, p):
    return calibrated_step_seconds(ctx, cached, tokens, QWEN25_MATH_1_5B, p, "edge", float(p["edge_bytes_per_param"]))


def calibrated_server(ctx, cached, tokens, p, others, others_ctx):
    cached = cached if p["prefix_cache"] else 0
    return calibrated_step_seconds(ctx, cached, tokens, QWEN25_MATH_7B, p, "server", float(p["server_bytes_per_param"]),
                                   others, others_ctx)


def calibrated_prm(ctx, tokens, p, others, others_ctx):
    return prefill_pass_seconds(ctx + tokens, 0, QWEN25_MATH_1_5B, calibrated_hw(p, "server", "prefill"),
                                float(p["server_bytes_per_param"]))


# The oracle twin of every registered latency model (prada_jax.sim.latency_models.LATENCY_MODELS):
# name -> (local(ctx, slm_cached, tokens, p), server(ctx, server_cached, tokens, p, others, others_ctx),
#          prm(ctx, draft_tokens, p, others, others_ctx)).
ORACLE_LATENCY_MODELS = {
    "flops": (lambda ctx, cached, tok, p: local_seconds(ctx, cached, tok, p["flops_slm"]),
              lambda ctx, cached, tok, p, o, oc: server_seconds(ctx, cached, tok, p["flops_llm"], p["prefix_cache"]),
              lambda ctx, tok, p, o, oc: prm_seconds(ctx, tok, p["flops_llm"])),
    "roofline": (roofline_local, roofline_server, roofline_prm),
    "calibrated": (calibrated_local, calibrated_server, calibrated_prm),
}


def upload_seconds(tokens, bw, snr):
    return C.BITS_PER_TOKEN * tokens / (bw * math.log2(1.0 + snr))


def step_uniform_np(seed: int, k: int) -> float:
    """The per-step quality uniform of a task (draws.step_uniform), in plain Python integers mod 2**32."""
    m = 0xFFFFFFFF
    x = (seed + k * 0x9E3779B9) & m
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    x ^= x >> 16
    return (x >> 8) * 2.0**-24


def slots_for(seconds, dt):
    return int(min(max(math.ceil(seconds / dt), 1), 2 ** 30))


class User:
    def __init__(self):
        self.phase = FREE


def sorted_desc(keys):
    """Indices sorted by descending key, ties by lower index."""
    return sorted(range(len(keys)), key=lambda i: (-keys[i], i))


def fifo_order(cands, users, t):
    """FIFO by the slot the current request entered the queue (a fresh nominee enters now), then user index."""
    return sorted(cands, key=lambda i: (users[i].entry if users[i].phase == QUEUED else t, i))


def candidate_inputs(cands, users, gamma, feasible, table):
    """Per considered candidate: SNR used (faded, or mean when infeasible), feasibility, context, eq. 33 gap, D_psi."""
    snr = [gamma[i] if feasible[i] else users[i].mean_snr for i in cands]
    feas = [feasible[i] for i in cands]
    ctx = [users[i].context for i in cands]
    gap, dur = [], []
    for i in cands:
        u = users[i]
        adv = float(table["advantage"][u.problem, u.step])
        pi1 = float(table["nominate_prob"][u.problem, u.step])
        gap.append(adv / max(1.0 - pi1, 1e-6))
        dur.append(float(table["server_seconds"][u.problem, u.step]))
    return snr, feas, ctx, gap, dur


def queue_delays(cands, users, snr, feas, ctx, gap, dur, p, config, free_slots, inflight_left, stats=None):
    """TQ per candidate: list scheduling on a heap of server free times, the self-consistent priority order
    (falling back to Remark 2's order when it cycles), and the channel wait of infeasible candidates."""
    beta = float(p["beta"])
    bw_total = float(p["bandwidth_bps"])
    M = int(p["server_capacity"])
    n = len(cands)
    tc_ref = [upload_seconds(ctx[j], bw_total, snr[j]) for j in range(n)]
    w0 = [gap[j] - beta * tc_ref[j] for j in range(n)]
    mean_dur = sum(dur[j] + tc_ref[j] for j in range(n)) / n

    # List scheduling of equal jobs on M server slots (a heap of free times); positions up to max(j, F) for j < n.
    n_pos = max(n, free_slots + 1)
    heap = [0.0] * free_slots + sorted(inflight_left)
    heap = heap[:M]
    heapq.heapify(heap)
    tq_pos = []
    for _ in range(n_pos):
        start = heapq.heappop(heap)
        tq_pos.append(start)
        heapq.heappush(heap, start + mean_dur)
    tq_cf = [tq_pos[max(j, free_slots)] for j in range(n)]

    rank0 = [0] * n
    for r, j in enumerate(sorted_desc(w0)):
        rank0[j] = r
    rank, prev, converged = rank0, rank0, False
    for it in range(config.tq_iterations):  # noqa: B007 (read after the loop)
        s0 = [min(beta * tq_cf[rank[j]], w0[j]) for j in range(n)]
        new = [0] * n
        for r, j in enumerate(sorted_desc(s0)):
            new[j] = r
        if new == rank:
            converged = True
            break
        if new == prev or new == rank0:  # a cycle: stop early
            break
        prev, rank = rank, new
    if stats is not None:
        stats["tq_hit_max"] = stats.get("tq_hit_max", 0) + int(it == config.tq_iterations - 1 and not converged)
    if not converged:
        rank = rank0  # the order cycles: fall back to Remark 2's gain order
    if stats is not None:
        stats["tq_cycles"] = stats.get("tq_cycles", 0) + int(not converged)
    tq = [tq_cf[rank[j]] for j in range(n)]
    gamma_th = db_to_linear(float(p["snr_threshold_db"]))
    for j, i in enumerate(cands):
        if not feas[j]:  # cannot be served before the channel clears: dt / P(feasible)
            p_ok = math.exp(-gamma_th / max(users[i].mean_snr, 1e-30))
            tq[j] = max(tq[j], config.slot_seconds / p_ok if p_ok > 0 else math.inf)
    return tq, w0


def prada_schedule(cands, users, gamma, feasible, table, p, config, free_slots, available, total_cands, inflight_left,
                   stats=None):
    """Theorem 2 on the compacted candidate list `cands` (user indices). Returns {user: (decision, bw)}."""
    beta = float(p["beta"])
    beta_e = max(beta, 1e-12)
    n = len(cands)
    if n == 0:
        return {}
    snr, feas, ctx, gap, dur = candidate_inputs(cands, users, gamma, feasible, table)
    if free_slots <= 0:
        case = 2
    elif total_cands <= free_slots:
        case = 3
    else:
        case = 1
    tq, w0 = queue_delays(cands, users, snr, feas, ctx, gap, dur, p, config, free_slots, inflight_left, stats)

    cc = [C.BITS_PER_TOKEN * ctx[j] / math.log2(1.0 + snr[j]) for j in range(n)]

    # Price search in s = sqrt(mu) over the sorted breakpoints (docs/simulator.md, "Price"), in float64.
    price = 0.0 if config.queue_pays_price else 1.0
    bb = [math.sqrt(beta_e * cc[j]) for j in range(n)]  # B*_j = bb_j / s
    q = [beta * tq[j] for j in range(n)]

    def scores(s):
        w = [gap[j] - 2.0 * bb[j] * s for j in range(n)]
        wbar = [q[j] - price * bb[j] * s for j in range(n)]
        return w, wbar

    brk = {}
    for j in range(n):
        if not feas[j] or bb[j] <= 0.0:
            continue
        tj = gap[j] / (2.0 * bb[j])
        if case == 1 and not config.queue_pays_price:
            tj = min(tj, q[j] / bb[j])
        if tj > 0.0:
            brk[j] = tj
    order = sorted(brk, key=lambda j: (-brk[j], j))  # descending breakpoints, ties to the lower index

    def admitted_set(s, allowed):
        """Theorem 2's admitted set at s when `allowed` are the candidates with score >= 0 there."""
        if case == 3:
            return set(allowed)
        if case == 2:
            return set()
        w, wbar = scores(s)
        ranked = sorted(allowed, key=lambda j: (-min(w[j], wbar[j]), j))
        return set(ranked[:free_slots])

    def fits(adm, s):
        return sum(bb[j] for j in adm) <= available * s

    n_t = len(order)
    lo, hi = 0, n_t + 1  # breakpoint index j: the first j of `order` are admissible at s = brk[order[j-1]]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        s_mid = brk[order[mid - 1]]
        if fits(admitted_set(s_mid, order[:mid]), s_mid):
            lo = mid
        else:
            hi = mid
    j_star = lo
    s_right = brk[order[j_star - 1]] if j_star > 0 else math.inf
    s_left = brk[order[j_star]] if j_star < n_t else 0.0
    allowed = order[:j_star]
    admitted_s = admitted_set(s_right, allowed) if j_star > 0 else set()
    s_best, demand = s_right, sum(bb[j] for j in admitted_s)

    def closed_form(s_best, admitted_s, demand):
        s_try = max(demand / max(available, 1e-30) * (1.0 + 1e-6), s_left)  # as stage2.PRICE_ROUNDING
        adm_try = admitted_set(s_try, allowed)
        if s_try < s_best and fits(adm_try, s_try):
            return s_try, adm_try, sum(bb[j] for j in adm_try)
        return s_best, admitted_s, demand

    s_best, admitted_s, demand = closed_form(s_best, admitted_s, demand)
    lo = max(s_left, min((bb[j] for j in allowed), default=0.0) / max(available, 1e-30))
    for _ in range(config.price_segment_halvings):  # geometric halvings of the final segment
        mid = math.sqrt(max(lo, 1e-30) * s_best)
        adm_mid = admitted_set(mid, allowed)
        if math.isfinite(s_best) and mid < s_best and fits(adm_mid, mid):
            s_best, admitted_s, demand = mid, adm_mid, sum(bb[j] for j in adm_mid)
        else:
            lo = mid
    s_best, admitted_s, demand = closed_form(s_best, admitted_s, demand)
    if not math.isfinite(s_best):
        s_best = 0.0
    admitted = [j in admitted_s for j in range(n)]
    bstar = [bb[j] / s_best if admitted[j] else 0.0 for j in range(n)]
    w, wbar = scores(s_best)
    if stats is not None:
        stats[f"case{case}"] = stats.get(f"case{case}", 0) + 1
        stats["infeasible"] = stats.get("infeasible", 0) + sum(not x for x in feas)
        if case != 2 and any(admitted):
            used = sum(b for a, b in zip(admitted, bstar) if a)
            stats["bw_binding"] = stats.get("bw_binding", 0) + int(used > 0.999 * available)
    out = {}
    for j, i in enumerate(cands):
        if admitted[j]:
            out[i] = (2, bstar[j])
        elif case == 2 or not feas[j]:
            out[i] = (1 if math.isfinite(tq[j]) and w0[j] >= beta * tq[j] else 0, 0.0)
        elif case == 1 and w[j] >= wbar[j]:
            out[i] = (1, 0.0)
        else:
            out[i] = (0, 0.0)
    return out


class SlotInputs:
    """What an oracle Stage-2 scheduler sees in one slot."""

    def __init__(self, cands, users, gamma, feasible, tb, p, config, free_slots, available, min_bw, t, sched_u,
                 inflight_left, stats):
        self.cands, self.users, self.gamma, self.feasible, self.tb, self.p = cands, users, gamma, feasible, tb, p
        self.config, self.free_slots, self.available, self.min_bw, self.t = config, free_slots, available, min_bw, t
        self.sched_u, self.inflight_left, self.stats = sched_u, inflight_left, stats


def candidate_cap(config, count: int) -> int:
    """Candidates a compacting scheduler considers: all of them with SimConfig.max_candidates=None (the oracle has
    no compiled shapes, so it is the exact reference of the JAX simulator's adaptive cap), else the fixed cap."""
    return count if config.max_candidates is None else config.max_candidates


def oracle_prada(s: SlotInputs) -> dict:
    users, config, stats = s.users, s.config, s.stats
    decisions = {}
    ordered = sorted(s.cands, key=lambda i: (-users[i].wait, i))
    cap = candidate_cap(config, len(ordered))
    considered = ordered[:cap]
    for i in ordered[cap:]:
        decisions[i] = (1 if users[i].phase == QUEUED else 0, 0.0)
    decisions.update(prada_schedule(considered, users, s.gamma, s.feasible, s.tb, s.p, config, s.free_slots,
                                    s.available, len(s.cands), s.inflight_left, stats))
    if stats is not None and len(ordered) > cap:
        stats["overflow"] = stats.get("overflow", 0) + 1
    return decisions


def oracle_fifo(s: SlotInputs) -> dict:
    eligible = fifo_order([i for i in s.cands if s.feasible[i] and s.available >= s.min_bw], s.users, s.t)
    admitted = eligible[: s.free_slots]
    return {i: ((2, s.available / len(admitted)) if i in admitted else (1, 0.0)) for i in s.cands}


def oracle_random(s: SlotInputs) -> dict:
    decisions, admitted = {}, []
    for i in s.cands:
        choice = min(int(math.floor(float(s.sched_u[i]) * 3.0)), 2)
        if choice == 2 and s.feasible[i] and s.available >= s.min_bw and len(admitted) < s.free_slots:
            admitted.append(i)
        decisions[i] = (choice, 0.0)
    for i in s.cands:
        if decisions[i][0] == 2 and i not in admitted:
            decisions[i] = (1, 0.0)
        elif i in admitted:
            decisions[i] = (2, s.available / len(admitted))
    return decisions


def oracle_prada_exact(s: SlotInputs) -> dict:
    """Problem (28) per slot with the float64 twin of the exact solver (tests/reference_exact.py)."""
    import reference_exact as RX

    users, config = s.users, s.config
    decisions = {}
    ordered = sorted(s.cands, key=lambda i: (-users[i].wait, i))
    cap = candidate_cap(config, len(ordered))
    considered = ordered[:cap]
    for i in ordered[cap:]:
        decisions[i] = (1 if users[i].phase == QUEUED else 0, 0.0)
    if not considered:
        return decisions
    snr, feas, ctx, gap, dur = candidate_inputs(considered, users, s.gamma, s.feasible, s.tb)
    tq, _ = queue_delays(considered, users, snr, feas, ctx, gap, dur, s.p, config, s.free_slots, s.inflight_left)
    never = [not math.isfinite(x) for x in tq]
    data = RX.slot_data([True] * len(considered), feas, gap, ctx, snr, [0.0 if nv else x for nv, x in zip(never, tq)],
                        s.free_slots, s.available, float(s.p["bandwidth_bps"]), float(s.p["beta"]))
    admitted, _, _ = RX.twin_solve(data)
    decision, bandwidth = RX.decisions_for(admitted, data, s.available)
    for j, i in enumerate(considered):
        dec = 0 if (never[j] and decision[j] == 1) else int(decision[j])
        decisions[i] = (dec, float(bandwidth[j]))
    return decisions


def _learned_features(considered, s: SlotInputs, snr, feas, ctx, gap, dur, tq, t2):
    """Float64 twin of prada_jax.env.table.candidate_table's observation ([C, features])."""
    from prada_jax.env import table as T

    p, config, users = s.p, s.config, s.users
    beta = float(p["beta"])
    u = T.UTILITY_SCALE
    def symlog(x):
        return math.copysign(math.log1p(abs(x)), x)
    rows = np.zeros((len(considered), len(T.ROW_FEATURES)))  # padding rows (all zero) change no valid row's logits
    for j, i in enumerate(considered):
        tc_ref = upload_seconds(ctx[j], float(p["bandwidth_bps"]), snr[j])
        q = min(beta * tq[j], T.INFINITE_COST) if math.isfinite(tq[j]) else min(beta * T.INFINITE_COST, T.INFINITE_COST)
        dec = t2[i][0]
        rows[j] = [symlog(u * gap[j]), symlog(u * beta * tc_ref), symlog(u * q), symlog(u * beta * dur[j]),
                   symlog(u * beta * users[i].wait * config.slot_seconds), math.log10(max(snr[j], 1e-6)) / 3.0,
                   float(feas[j]), float(dec == 0), float(dec == 1), float(dec == 2), 1.0]
    m = max(int(p["server_capacity"]), 1)
    glob = [s.free_slots / m, s.available / float(p["bandwidth_bps"]), (math.log10(float(p["bandwidth_bps"])) - 7.0) / 2.0,
            m / 10.0, float(p["arrival_rate"]) / 3.0, math.log10(max(beta, 1e-12)) / 2.0,
            len(s.cands) / T.CANDIDATE_LOAD_SCALE, float(s.t >= config.num_slots)]
    return np.concatenate([rows, np.tile(glob, (len(considered), 1))], axis=1)


def learned_logits(weights, obs):
    """Float64 twin of prada_jax.env.policy.CandidatePolicy's logits (DeepSets residual over Theorem 2)."""
    from prada_jax.env import table as T
    from prada_jax.env.policy import PRIOR_SCALE

    w = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in weights.items()}
    def dense(name, x):
        return x @ w[name]["kernel"] + w[name]["bias"]
    def relu(x):
        return np.maximum(x, 0.0)
    valid = obs[:, T.VALID_COLUMN] > 0.5
    h = relu(dense("embed_1", relu(dense("embed_0", obs))))
    pooled = (h * valid[:, None]).sum(0) / max(valid.sum(), 1.0)
    ctx = np.concatenate([pooled, obs[0, len(T.ROW_FEATURES):]])
    z = relu(dense("head_0", np.concatenate([h, np.tile(ctx, (h.shape[0], 1))], axis=1)))
    return PRIOR_SCALE * obs[:, list(T.T2_COLUMNS)] + dense("head_out", z)


def oracle_learned(s: SlotInputs) -> dict:
    """The learned scheduler: Theorem 2 (its decisions are features, its price is reused), the float64 policy on the
    candidate table with the shipped weights, greedy, and the feasibility projection (prada_jax.env.table.project)."""
    from prada_jax.env.policy import load_weights

    users, config = s.users, s.config
    decisions = {}
    ordered = sorted(s.cands, key=lambda i: (-users[i].wait, i))
    cap = candidate_cap(config, len(ordered))
    considered = ordered[:cap]
    for i in ordered[cap:]:
        decisions[i] = (1 if users[i].phase == QUEUED else 0, 0.0)
    if not considered:
        return decisions
    t2 = prada_schedule(considered, users, s.gamma, s.feasible, s.tb, s.p, config, s.free_slots, s.available,
                        len(s.cands), s.inflight_left)
    snr, feas, ctx, gap, dur = candidate_inputs(considered, users, s.gamma, s.feasible, s.tb)
    tq, _ = queue_delays(considered, users, snr, feas, ctx, gap, dur, s.p, config, s.free_slots, s.inflight_left)
    obs = _learned_features(considered, s, snr, feas, ctx, gap, dur, tq, t2)
    action = np.argmax(learned_logits(load_weights(), obs), axis=1)
    beta_e = max(float(s.p["beta"]), 1e-12)
    bb = [math.sqrt(beta_e * C.BITS_PER_TOKEN * ctx[j] / math.log2(1.0 + snr[j])) for j in range(len(considered))]
    # Projection: immediate needs a usable channel and bandwidth, the oldest F keep it; a queue that is never served
    # runs locally; bandwidth at Theorem 2's price, raised until the admitted set fits (Theorem 2's own if the same).
    admitted = []
    for j, i in enumerate(considered):
        dec = int(action[j])
        if dec == 2:
            if feas[j] and bb[j] > 0 and s.available > 0 and len(admitted) < s.free_slots:
                admitted.append(j)
            else:
                dec = 1
        if dec == 1 and not math.isfinite(tq[j]):
            dec = 0
        decisions[i] = (dec, 0.0)
    t2_admitted = [j for j, i in enumerate(considered) if t2[i][0] == 2]
    if admitted == t2_admitted:
        for j in admitted:
            decisions[considered[j]] = t2[considered[j]]
        return decisions
    s_t2 = next((bb[j] / t2[considered[j]][1] for j in t2_admitted), 0.0)
    s_fit = sum(bb[j] for j in admitted) / max(s.available, 1e-30) * (1.0 + 1e-6)
    price = max(s_t2, s_fit)
    for j in admitted:
        decisions[considered[j]] = (2, bb[j] / price)
    return decisions


# The oracle twin of every registered scheduler (prada_jax.sim.schedulers.SCHEDULERS): name -> (decide, protocol).
ORACLE_SCHEDULERS = {
    "prada": (oracle_prada, "offload"),
    "fifo": (oracle_fifo, "offload"),
    "random": (oracle_random, "offload"),
    "prada_exact": (oracle_prada_exact, "offload"),
    "rsd": (oracle_fifo, "draft_verify"),
    "learned": (oracle_learned, "offload"),
}


def simulate_reference(trace, table, params, config, key, stats=None, hook=None) -> dict:
    """One episode; returns the EpisodeMetrics fields as Python numbers. `trace` is a TraceData,
    `table` a PolicyTable, `params` scalar SimParams, `config` a SimConfig, `key` the episode key."""
    tb = {k: np.asarray(getattr(table, k), np.float64) for k in ("nominate_prob", "advantage", "server_seconds")}
    p = {k: np.asarray(getattr(params, k)).item() for k in params.__dataclass_fields__}
    N, K = trace.slm_step_tokens.shape
    U, dt, T, W = config.max_users, config.slot_seconds, config.num_slots, config.warmup_slots
    a_max = config.max_arrivals_per_slot or required_max_arrivals(float(p["arrival_rate"]))
    d = jax.tree.map(np.asarray, episode_draws(key, T + config.drain_slots, params.arrival_rate, N, K, U, a_max))
    gamma_th = db_to_linear(p["snr_threshold_db"])
    M, B = int(p["server_capacity"]), float(p["bandwidth_bps"])
    rsd = ORACLE_SCHEDULERS[config.scheduler][1] == "draft_verify"
    lat_local, lat_server, lat_prm = ORACLE_LATENCY_MODELS[config.latency_model]
    users = [User() for _ in range(U)]
    tot = dict(arrived=0, dropped=0, completed=0, correct=0, processing_s=0.0, communication_s=0.0, queuing_s=0.0,
               sojourn_s=0.0, offloaded_steps=0, executed_steps=0, server_work_s=0.0, server_compute_s=0.0,
               bandwidth_used_bit=0.0, server_slot_busy_s=0.0, bandwidth_reserved_bit=0.0,
               candidate_overflow_slots=0, max_candidates_seen=0)
    compacts = SCHEDULERS.lookup(config.scheduler).compacts  # the scheduler considers at most the cap

    def counted_open():
        return any(u.phase != FREE and u.arrival >= W for u in users)

    t = 0
    while t < T or (t < T + config.drain_slots and counted_open()):
        window = W <= t < T
        # Arrivals (none after the horizon): lowest-index free slots.
        n_arr = int(d.num_arrivals[t]) if t < T else 0
        a = 0
        for u in users:
            if a >= n_arr:
                break
            if u.phase != FREE:
                continue
            prob = int(d.problem[t, a])
            u.phase, u.problem, u.step = READY, prob, 0
            u.context, u.slm_cached, u.server_cached = int(trace.query_tokens[prob]), 0, 0
            u.on_track, u.on_server = True, False
            u.busy, u.upload, u.bw, u.wait, u.entry = 0, 0, 0.0, 0, t
            u.proc = u.comm = u.queue = u.step_proc = u.step_comm = 0.0
            u.offloaded, u.arrival = 0, t
            u.seed = int(d.task_seed[t, a])
            dist = C.CELL_RADIUS * math.sqrt(float(d.distance_u[t, a]))
            u.mean_snr = db_to_linear(
                p["snr_db"] - 10.0 * p["path_loss_exponent"] * math.log10(max(dist, C.MIN_DISTANCE) / C.MEDIAN_DISTANCE))
            a += 1
        if window:
            tot["arrived"] += n_arr
            tot["dropped"] += n_arr - a

        gamma = [u.mean_snr * float(d.fading[t, i]) if u.phase != FREE else 0.0 for i, u in enumerate(users)]
        feasible = [g >= gamma_th for g in gamma]

        # Stage 1.
        decisions = {}  # user -> (decision, bandwidth)
        cands = []
        for i, u in enumerate(users):
            if u.phase == READY:
                if rsd:
                    decisions[i] = (0, 0.0)
                    continue
                pi1 = tb["nominate_prob"][u.problem, u.step]
                nominate = (float(d.stage1_u[t, i]) < pi1) if config.stage1_sampling else (pi1 > 0.5)
                if nominate:
                    cands.append(i)
                else:
                    decisions[i] = (0, 0.0)
            elif u.phase == QUEUED:
                cands.append(i)

        # Stage 2.
        tot["max_candidates_seen"] = max(tot["max_candidates_seen"], len(cands))
        tot["candidate_overflow_slots"] += int(compacts and len(cands) > candidate_cap(config, len(cands)))
        inflight = [u for u in users if u.phase in (UPLOAD, SERVE)]
        free_slots = max(M - len(inflight), 0)
        available = max(B - sum(u.bw for u in users if u.phase == UPLOAD), 0.0)
        min_bw = MIN_BANDWIDTH_FRACTION * B
        slot = SlotInputs(cands, users, gamma, feasible, tb, p, config, free_slots, available, min_bw, t,
                          d.sched_u[t], [u.busy * dt for u in inflight], stats)
        decisions.update(ORACLE_SCHEDULERS[config.scheduler][0](slot))

        # Apply decisions.
        if stats is not None:
            for i, (dec, _) in decisions.items():
                key = ("local", "queue", "immediate")[dec] + ("_cand" if i in cands else "")
                stats[key] = stats.get(key, 0) + 1
        # Requests in service after this slot's admissions: each admitted request's server time is fixed now,
        # sharing the decode batch with the others (their contexts before their current step, held fixed).
        service = [j for j, u in enumerate(users) if u.phase in (UPLOAD, SERVE)]
        service += [j for j, (dec, _) in decisions.items() if dec == 2]
        service_ctx = sum(users[j].context for j in service)
        for i, (dec, bw) in decisions.items():
            u = users[i]
            slm_tok = int(trace.slm_step_tokens[u.problem, u.step])
            llm_tok = int(trace.llm_step_tokens[u.problem, u.step])
            others, others_ctx = len(service) - 1, service_ctx - u.context
            if dec == 0:
                ts = lat_local(u.context, u.slm_cached, slm_tok, p)
                u.phase, u.on_server, u.busy, u.wait = LOCAL, False, slots_for(ts, dt), 0
                u.step_proc, u.step_comm = ts, 0.0  # booked when the step ends
            elif dec == 2:
                if rsd:
                    reject = tb["nominate_prob"][u.problem, u.step] >= 0.5
                    tc = upload_seconds(u.context + slm_tok, bw, gamma[i])
                    tl = lat_prm(u.context, slm_tok, p, others, others_ctx)
                    if reject:
                        tl += lat_server(u.context, u.server_cached, llm_tok, p, others, others_ctx)
                    on_llm = bool(reject)
                else:
                    tc = upload_seconds(u.context, bw, gamma[i])
                    tl = lat_server(u.context, u.server_cached, llm_tok, p, others, others_ctx)
                    on_llm = True
                u.phase, u.on_server, u.bw, u.wait = UPLOAD, on_llm, bw, 0
                u.busy, u.upload = slots_for(tc + tl, dt), slots_for(tc, dt)
                u.step_proc, u.step_comm = tl, tc
                if window:
                    tot["server_compute_s"] += tl
                    tot["server_work_s"] += tc + tl
                    tot["bandwidth_used_bit"] += bw * tc
            else:
                if u.phase != QUEUED:
                    u.entry = t
                u.phase = QUEUED
                u.wait += 1
                u.queue += dt

        if window:
            tot["server_slot_busy_s"] += sum(u.phase in (UPLOAD, SERVE) for u in users) * dt
            tot["bandwidth_reserved_bit"] += sum(u.bw for u in users if u.phase == UPLOAD) * dt

        # Progress by one slot.
        for u in users:
            if u.phase not in (LOCAL, UPLOAD, SERVE):
                continue
            u.busy -= 1
            if u.phase == UPLOAD:
                u.upload -= 1
                if u.upload <= 0:
                    u.phase, u.bw = SERVE, 0.0
            if u.busy > 0:
                continue
            u.proc += u.step_proc
            u.comm += u.step_comm
            if rsd and u.phase == LOCAL:
                u.phase, u.entry, u.wait = QUEUED, t + 1, 0  # the drafted step waits for the PRM check
                continue
            k = u.step
            u.offloaded += int(u.on_server)
            if u.on_server:
                ok = step_uniform_np(u.seed, k) < trace.llm_step_success[u.problem, k]
                new_ctx = u.context + int(trace.llm_step_tokens[u.problem, k])
                if rsd:
                    u.slm_cached = u.context
                u.server_cached = new_ctx
            else:
                ok = step_uniform_np(u.seed, k) < trace.slm_step_success[u.problem, k]
                new_ctx = u.context + int(trace.slm_step_tokens[u.problem, k])
                u.slm_cached = new_ctx
            u.on_track = u.on_track and bool(ok)
            u.context, u.step = new_ctx, k + 1
            if u.step >= trace.num_steps[u.problem]:
                u.phase = FREE
                if u.arrival >= W:
                    tot["completed"] += 1
                    tot["correct"] += int(u.on_track)
                    tot["processing_s"] += u.proc
                    tot["communication_s"] += u.comm
                    tot["queuing_s"] += u.queue
                    tot["sojourn_s"] += (t + 1 - u.arrival) * dt
                    tot["offloaded_steps"] += u.offloaded
                    tot["executed_steps"] += int(trace.num_steps[u.problem])
            else:
                u.phase = READY
        if hook is not None:
            hook(t, users)
        t += 1

    # Censoring: counted tasks still in the system add what they accumulated and their elapsed time.
    open_users = [u for u in users if u.phase != FREE and u.arrival >= W]
    tot["unfinished"] = len(open_users)
    for u in open_users:
        tot["processing_s"] += u.proc
        tot["communication_s"] += u.comm
        tot["queuing_s"] += u.queue
        tot["sojourn_s"] += (t - u.arrival) * dt
        tot["offloaded_steps"] += u.offloaded
        tot["executed_steps"] += u.step
    tot["drain_s"] = (t - T) * dt
    return tot
