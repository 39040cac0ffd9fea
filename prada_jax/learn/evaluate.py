"""Single-user evaluation (paper Figure 4): accuracy vs computation cost per task.

Accuracy uses the latent quality model: expected accuracy = mean_n prod_k p_{a_k}[n, k].
Computation follows the actual path: the context grows by the tokens of whichever model ran each step; the SLM
prefills the query on its first local step and ingests LLM-written tokens before its next local step; every
server step prefills its whole context (mode "full"). Policies: All-SLM, All-LLM, pi_theta (greedy), Random at
pi_theta's offload rate, RSD-style online PRM threshold (SLM step, PRM-1.5B check on the server counted with
costs.prm_check_seconds, LLM regenerates the step when prm_after_slm < threshold). Numbers come back as dicts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from prada_jax import constants as C
from prada_jax import costs
from prada_jax.traces import PackedTraces

S, L = C.SLM_ARCH, C.LLM_ARCH


def subset(packed: PackedTraces, problems) -> PackedTraces:
    """The problems selected by a bool mask or an index array."""
    idx = np.flatnonzero(problems) if np.asarray(problems).dtype == bool else np.asarray(problems)
    return jax.tree.map(lambda x: x[idx], packed)


def expected_accuracy(packed: PackedTraces, actions):
    """mean_n prod_k p_{a_k}[n, k] for actions [N, K] (0 = SLM, 1 = LLM), or P(LLM) in [0, 1] per step."""
    a = jnp.asarray(actions, jnp.float32)
    p = (1.0 - a) * packed.slm_step_success + a * packed.llm_step_success
    return jnp.mean(jnp.prod(jnp.where(packed.step_mask, p, 1.0), axis=1))


def path_flops(packed: PackedTraces, actions, rsd_threshold=None):
    """Per-problem FLOPs [N] of (SLM, LLM, PRM) along the actual path; with `rsd_threshold`, the RSD baseline
    (actions are then ignored: the SLM always drafts, the PRM checks, the LLM regenerates rejected steps)."""
    if rsd_threshold is None:
        return _path_flops(packed, jnp.asarray(actions, jnp.int32), None)
    return _path_flops(packed, None, jnp.float32(rsd_threshold))


@jax.jit
def _path_flops(packed: PackedTraces, actions, rsd_threshold):
    n_s, n_l = packed.slm_step_tokens.T, packed.llm_step_tokens.T  # [K, N]
    mask, score = packed.step_mask.T, packed.prm_after_slm.T
    rsd = rsd_threshold is not None
    acts = (score < rsd_threshold).astype(jnp.int32) if rsd else jnp.asarray(actions, jnp.int32).T

    def step(carry, x):
        ctx, cached = carry
        a, ns, nl, valid = x
        draft = costs.ingest_flops(cached, ctx, S.hidden, S.layers) + costs.step_flops(ctx, S.hidden, S.layers, ns)
        server = costs.prefill_flops(ctx, L.hidden, L.layers) + costs.step_flops(ctx, L.hidden, L.layers, nl)
        if rsd:
            slm_f, llm_f = draft, jnp.where(a == 1, server, 0.0)
            prm_f = costs.prefill_flops(ctx + ns, C.PRM_ONLINE_ARCH.hidden, C.PRM_ONLINE_ARCH.layers)
            new_cached = jnp.where(a == 1, ctx, ctx + ns)  # a rejected draft is discarded
        else:
            slm_f, llm_f, prm_f = jnp.where(a == 0, draft, 0.0), jnp.where(a == 1, server, 0.0), jnp.zeros_like(ctx)
            new_cached = jnp.where(a == 0, ctx + ns, cached)
        new_ctx = ctx + jnp.where(a == 1, nl, ns)
        out = tuple(jnp.where(valid, f, 0.0) for f in (slm_f, llm_f, prm_f))
        return (jnp.where(valid, new_ctx, ctx), jnp.where(valid, new_cached, cached)), out

    ctx0 = packed.query_tokens.astype(jnp.float32)
    _, (slm, llm, prm) = jax.lax.scan(step, (ctx0, jnp.zeros_like(ctx0)), (acts, n_s, n_l, mask))
    return slm.sum(0), llm.sum(0), prm.sum(0)


def summarize(packed: PackedTraces, actions, flops=None, flops_slm=C.FLOPS_SLM, flops_llm=C.FLOPS_LLM) -> dict:
    """Accuracy, offload fraction and per-task computation (ms and TFLOP) of deterministic actions [N, K]."""
    flops = path_flops(packed, actions) if flops is None else flops
    out = _summary(packed, jnp.asarray(actions, jnp.float32), flops, flops_slm, flops_llm)
    return {k: float(v) for k, v in jax.device_get(out).items()}


@jax.jit
def _summary(packed, a, flops, flops_slm, flops_llm):
    slm, llm, prm = flops
    mask = packed.step_mask
    return {
        "accuracy": expected_accuracy(packed, a),
        "offload_fraction": jnp.where(mask, a, 0.0).sum() / mask.sum(),
        "compute_ms_per_task": 1e3 * jnp.mean(slm / flops_slm + (llm + prm) / flops_llm),
        "slm_ms_per_task": 1e3 * jnp.mean(slm / flops_slm),
        "llm_ms_per_task": 1e3 * jnp.mean(llm / flops_llm),
        "prm_ms_per_task": 1e3 * jnp.mean(prm / flops_llm),
        "tflop_per_task": 1e-12 * jnp.mean(slm + llm + prm),
    }


def random_policy(packed: PackedTraces, rate, key, samples: int = 64) -> dict:
    """Offload each step independently with probability `rate`: exact expected accuracy, Monte-Carlo cost."""
    fl = _random_flops(packed, jnp.float32(rate), key, samples)
    res = summarize(packed, jnp.full(packed.step_mask.shape, rate), flops=fl)
    res["offload_fraction"] = float(rate)
    return res


@functools.partial(jax.jit, static_argnums=3)
def _random_flops(packed, rate, key, samples):
    draws = jax.random.bernoulli(key, rate, (samples,) + packed.step_mask.shape).astype(jnp.int32)
    fl = jax.vmap(lambda a: _path_flops(packed, a, None))(draws)
    return tuple(f.mean(0) for f in fl)


def rsd_policy(packed: PackedTraces, threshold: float) -> dict:
    """RSD-style online PRM: regenerate with the LLM when prm_after_slm < threshold (PRM check always paid)."""
    actions = jnp.where(packed.step_mask, packed.prm_after_slm < threshold, False).astype(jnp.int32)
    res = summarize(packed, actions, flops=path_flops(packed, None, rsd_threshold=threshold))
    res["threshold"] = float(threshold)
    return res


def rsd_thresholds(packed: PackedTraces, rates=(0.05, 0.1, 0.2, 0.3, 0.5)) -> list[float]:
    """Thresholds at the given quantiles of prm_after_slm over real steps (offload rates ~ `rates`)."""
    scores = np.asarray(packed.prm_after_slm)[np.asarray(packed.step_mask)]
    return [float(np.quantile(scores, r)) for r in rates]


def single_user(packed: PackedTraces, pi_actions, key, rsd_rates=(0.05, 0.1, 0.2, 0.3, 0.5)) -> dict:
    """Figure 4 numbers: all_slm, all_llm, pi_theta, random (same offload rate), rsd (list over thresholds)."""
    mask = packed.step_mask
    pi = summarize(packed, jnp.where(mask, pi_actions, 0))
    return {
        "num_problems": int(mask.shape[0]),
        "all_slm": summarize(packed, jnp.zeros(mask.shape, jnp.int32)),
        "all_llm": summarize(packed, mask.astype(jnp.int32)),
        "pi_theta": pi,
        "random": random_policy(packed, pi["offload_fraction"], key),
        "rsd": [rsd_policy(packed, t) for t in rsd_thresholds(packed, rsd_rates)],
    }
