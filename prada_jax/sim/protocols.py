"""Collaboration protocols: what a READY step does before Stage 2, what a server request costs, and what a finished
local step means. The slot step (step.py) calls these hooks and knows no protocol by name.

* "offload" (PRADA, section 4): Stage 1 nominates steps; nominees are Stage-2 candidates (queued requests too); a
  server request uploads the context and the LLM writes the step.
* "draft_verify" (RSD, the reward-guided speculative decoding baseline): every step is drafted by the SLM; the
  finished draft queues for an online PRM check on the server, which accepts it or has the LLM rewrite the step.

A protocol is registered once (`register`); a scheduler names the protocol it serves (schedulers.register).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from prada_jax.sim.named import Registry
from prada_jax.sim.policies import nominated
from prada_jax.sim.state import QUEUED

OFFLOAD, DRAFT_VERIFY = "offload", "draft_verify"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The protocol hooks (pure jnp functions of the slot's arrays).

    split_ready(users, ready, table, draws, config) -> (go_local [U], candidate [U])
    server_request(users, slm_tokens, llm_tokens, table, params, latency, load)
        -> (upload_tokens, server_seconds, serve_on_llm); `latency` is the configured latency model
        (latency_models.LatencyModel) and `load` its ServerLoad (what the request shares the server with)
    local_steps_are_drafts: a finished local step is a draft that becomes a server request (QUEUED) instead of
        ending the step; a server request that rewrites the step leaves the SLM's cache at the old context.
    """

    name: str
    split_ready: Callable
    server_request: Callable
    local_steps_are_drafts: bool
    description: str


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def register(protocol: Protocol) -> Protocol:
    return PROTOCOLS.add(protocol.name, protocol)


def get(name: str) -> Protocol:
    return PROTOCOLS.lookup(name)


def _offload_split(users, ready, table, draws, config):
    nominate = ready & nominated(table, users.problem, users.step, draws.stage1_u, config.stage1_sampling)
    return ready & ~nominate, nominate | (users.phase == QUEUED)


def _offload_request(users, slm_tokens, llm_tokens, table, params, latency, load):
    server_s = latency.server_step(users.context, users.server_cached, llm_tokens, params, load)
    return users.context, server_s, jnp.ones(users.context.shape, bool)


def _draft_verify_split(users, ready, table, draws, config):
    return ready, users.phase == QUEUED  # every step is drafted locally; finished drafts wait for their check


def _draft_verify_request(users, slm_tokens, llm_tokens, table, params, latency, load):
    # Upload context + drafted step; the PRM scores it; if it rejects (table: pi >= 0.5), the LLM rewrites the step.
    reject = table.nominate_prob[users.problem, users.step] >= 0.5
    server_s = latency.prm_check(users.context, slm_tokens, params, load) + jnp.where(
        reject, latency.server_step(users.context, users.server_cached, llm_tokens, params, load), 0.0)
    return users.context + slm_tokens, server_s, reject


register(Protocol(OFFLOAD, _offload_split, _offload_request, False,
                  "PRADA: Stage 1 nominates, Stage 2 runs locally, queues or uploads for the LLM"))
register(Protocol(DRAFT_VERIFY, _draft_verify_split, _draft_verify_request, True,
                  "RSD: the SLM drafts every step, an online PRM check on the server accepts or has the LLM rewrite"))
