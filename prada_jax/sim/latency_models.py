"""Latency models of the slot simulator: how long a local SLM step, a server LLM step and an online PRM check take.

`SimConfig.latency_model` names one registered model (static: a recompile per model):

* "flops" (default): the paper's eqs. 14-18 (`prada_jax/costs.py`): FLOPs / `flops_slm` or `flops_llm`; every
  server slot gets the whole `flops_llm`, so the load of the server does not matter.
* "roofline": `prada_jax/latency.py` on the traced hardware leaves of SimParams (`server_*`, `edge_*`, filled from
  the presets of `prada_jax/hardware.py`), with the Qwen2.5-Math 1.5B (SLM, and the 1.5B online PRM) and 7B (LLM)
  architectures. A server step is the prefill of the uncached context (run alone on the device) plus the decode of
  the new tokens in batched decode iterations shared with the other requests in service (docs/latency.md,
  "Wiring into the simulator").

A model is registered once (`register`); adding a third one is one `LatencyModel` and one `register` call (plus its
float64 twin in tests/reference_sim.py: ORACLE_LATENCY_MODELS, checked name by name).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
from flax import struct

from prada_jax import costs, latency
from prada_jax.latency import QWEN25_MATH_1_5B, QWEN25_MATH_7B, TransformerArch
from prada_jax.sim.named import Registry
from prada_jax.sim.params import params_hardware

FLOPS, ROOFLINE = "flops", "roofline"

# Roofline architectures. The online PRM of RSD (Skywork-o1-Open-PRM-Qwen-2.5-1.5B) is a Qwen2.5-1.5B with a value
# head: the 1.5B shape is used (its LM head on the last token is a negligible over-count of a scalar head).
SLM_ARCH: TransformerArch = QWEN25_MATH_1_5B
LLM_ARCH: TransformerArch = QWEN25_MATH_7B
PRM_ARCH: TransformerArch = QWEN25_MATH_1_5B


@struct.dataclass
class ServerLoad:
    """What a server request shares the server with, per user row [U] (valid on rows admitted this slot).

    other_requests: requests in service besides this one (holding a server slot: UPLOAD or SERVE, or admitted in
        the same slot); other_context_tokens: the sum of their contexts (tokens before their current step).
    """

    other_requests: jnp.ndarray  # float32 [U]
    other_context_tokens: jnp.ndarray  # float32 [U]


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    """local_step(context, slm_cached, new_tokens, params) -> seconds of an SLM step on the edge device;
    server_step(context, server_cached, new_tokens, params, load) -> seconds of an LLM step on the server;
    prm_check(context, draft_tokens, params, load) -> seconds of the online PRM scoring context + draft (RSD).
    All broadcast over [U] and are pure jnp (traced params)."""

    name: str
    local_step: Callable
    server_step: Callable
    prm_check: Callable
    description: str


LATENCY_MODELS: Registry[LatencyModel] = Registry("latency model")


def register(model: LatencyModel) -> LatencyModel:
    return LATENCY_MODELS.add(model.name, model)


def get(name: str) -> LatencyModel:
    return LATENCY_MODELS.lookup(name)


def server_load(in_service, context) -> ServerLoad:
    """ServerLoad of every row from the mask of requests in service [U] (after this slot's admissions)."""
    n = jnp.sum(in_service).astype(jnp.float32)
    ctx = jnp.sum(jnp.where(in_service, context, 0)).astype(jnp.float32)
    mine = in_service.astype(jnp.float32)
    return ServerLoad(other_requests=n - mine,
                      other_context_tokens=ctx - jnp.where(in_service, context, 0).astype(jnp.float32))


# ---- "flops": the paper (eqs. 14-18) ----

def _flops_local(context, slm_cached, new_tokens, params):
    return costs.local_step_seconds(context, slm_cached, new_tokens, params.flops_slm)


def _flops_server(context, server_cached, new_tokens, params, load):
    del load  # every server slot has the whole flops_llm
    return costs.server_step_seconds(context, server_cached, new_tokens, params.flops_llm, params.prefix_cache)


def _flops_prm(context, draft_tokens, params, load):
    del load
    return costs.prm_check_seconds(context, draft_tokens, params.flops_llm)


# ---- "roofline": prada_jax/latency.py on the traced hardware leaves ----

def _roofline_local(context, slm_cached, new_tokens, params):
    """Prefill of the tokens the SLM has not cached, then decode of the step at batch 1 on the edge device."""
    return latency.step_seconds(context, slm_cached, new_tokens, SLM_ARCH, params_hardware(params, "edge"),
                                bytes_per_param=params.edge_bytes_per_param)


def _roofline_server(context, server_cached, new_tokens, params, load):
    """Prefill of the uncached context alone on the server, then new_tokens - 1 decode iterations batched with
    `load.other_requests` requests (their contexts held fixed at admission)."""
    cached = jnp.where(params.prefix_cache, server_cached, 0)
    return latency.step_seconds(context, cached, new_tokens, LLM_ARCH, params_hardware(params, "server"),
                                load.other_requests, load.other_context_tokens,
                                bytes_per_param=params.server_bytes_per_param)


def _roofline_prm(context, draft_tokens, params, load):
    """One prefill of context + draft by the 1.5B PRM, alone on the server (prefills do not batch)."""
    del load
    total = jnp.asarray(context) + jnp.asarray(draft_tokens)
    return latency.prefill_seconds(total, 0, PRM_ARCH, params_hardware(params, "server"),
                                   bytes_per_param=params.server_bytes_per_param)


register(LatencyModel(FLOPS, _flops_local, _flops_server, _flops_prm,
                      "paper eqs. 14-18: FLOPs / flops_slm or flops_llm, each server slot at the full flops_llm"))
register(LatencyModel(ROOFLINE, _roofline_local, _roofline_server, _roofline_prm,
                      "roofline (prada_jax/latency.py) on the server_*/edge_* hardware leaves; batched server decode"))


# ---- D_psi (PolicyTable.server_seconds) under a latency model ----

def reference_server_seconds(trace, params, model: str = ROOFLINE):
    """The server time of every (problem, step) [N, K] under latency model `model`: the all-SLM reference context
    (query + earlier SLM steps), full prefill, alone on the server (0 on padding). With "flops" it equals
    policies.reference_server_seconds(trace, params.flops_llm). PRADA's queueing-delay estimate (TQ) reads
    D_psi from the table, so a roofline run should use a table whose D_psi comes from here
    (`with_reference_server_seconds`), not the FLOPs-model one the table builders store."""
    slm = jnp.asarray(trace.slm_step_tokens)
    ctx = jnp.asarray(trace.query_tokens)[:, None] + jnp.cumsum(slm, axis=1) - slm
    alone = ServerLoad(other_requests=jnp.zeros(ctx.shape, jnp.float32),
                       other_context_tokens=jnp.zeros(ctx.shape, jnp.float32))
    tl = get(model).server_step(ctx, 0, jnp.asarray(trace.llm_step_tokens), params.replace(prefix_cache=False), alone)
    mask = jnp.arange(slm.shape[1])[None, :] < jnp.asarray(trace.num_steps)[:, None]
    return jnp.where(mask, tl, 0.0).astype(jnp.float32)


def with_reference_server_seconds(table, trace, params, model: str = ROOFLINE):
    """`table` (a PolicyTable) with D_psi replaced by reference_server_seconds(trace, params, model)."""
    return table.replace(server_seconds=reference_server_seconds(trace, params, model))
