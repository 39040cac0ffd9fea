"""Cost and channel models as pure jnp functions (paper eqs. 4-5, 14-18, 30, 33).

All times in seconds, bandwidth in bit/s, lengths in tokens. Every function broadcasts over arrays.
"""

from __future__ import annotations

import jax.numpy as jnp

from prada_jax import constants as C


def prefill_flops(m, hidden, layers):
    """Eq. 14: FLOPs to prefill a context of m tokens, v (2 m^2 o + 2 m o + 4 m o^2)."""
    m = jnp.asarray(m, jnp.float32)
    o = jnp.float32(hidden)
    return layers * (2.0 * m * m * o + 2.0 * m * o + 4.0 * m * o * o)


def decode_token_flops(m, hidden, layers):
    """Eq. 15: FLOPs to decode one token against a KV cache of m tokens, v (o^2 + m o)."""
    m = jnp.asarray(m, jnp.float32)
    o = jnp.float32(hidden)
    return layers * (o * o + m * o)


def step_flops(m, hidden, layers, new_tokens):
    """Eq. 16 with the layer factor v: sum of eq. 15 over n new tokens after a context of m.

    v [n o^2 + o n (2 m + n - 1) / 2]  (the paper drops v; design notes 2.1).
    """
    m = jnp.asarray(m, jnp.float32)
    n = jnp.asarray(new_tokens, jnp.float32)
    o = jnp.float32(hidden)
    return layers * (n * o * o + o * n * (2.0 * m + n - 1.0) / 2.0)


def ingest_flops(cached, m, hidden, layers):
    """FLOPs to extend a KV cache from `cached` to `m` tokens: prefill(m) - prefill(cached)."""
    return prefill_flops(m, hidden, layers) - prefill_flops(cached, hidden, layers)


def local_step_seconds(context, slm_cached, new_tokens, flops_slm, arch=C.SLM_ARCH):
    """TS (eq. 18) plus the SLM ingesting tokens it has not cached yet (query or LLM-written tokens)."""
    flops = ingest_flops(slm_cached, context, arch.hidden, arch.layers) + step_flops(
        context, arch.hidden, arch.layers, new_tokens
    )
    return flops / flops_slm


def server_step_seconds(context, server_cached, new_tokens, flops_llm, prefix_cache, arch=C.LLM_ARCH):
    """TL (eq. 17) plus the server prefill of the uploaded context.

    prefix_cache False (default, "full"): the server holds no KV cache and prefills all `context` tokens.
    prefix_cache True ("prefix"): it prefills only the tokens beyond `server_cached`.
    """
    cached = jnp.where(prefix_cache, server_cached, 0)
    flops = ingest_flops(cached, context, arch.hidden, arch.layers) + step_flops(
        context, arch.hidden, arch.layers, new_tokens
    )
    return flops / flops_llm


def prm_check_seconds(context, new_tokens, flops_server, arch=C.PRM_ONLINE_ARCH):
    """Online PRM (RSD baseline): one prefill of context + candidate step on the server."""
    return prefill_flops(jnp.asarray(context) + jnp.asarray(new_tokens), arch.hidden, arch.layers) / flops_server


def spectral_efficiency(snr):
    """log2(1 + gamma), bit/s/Hz (eq. 4)."""
    return jnp.log2(1.0 + snr)


def upload_bits(context_tokens):
    """L = 32 * L_bar bits (eq. 5)."""
    return C.BITS_PER_TOKEN * jnp.asarray(context_tokens, jnp.float32)


def upload_seconds(context_tokens, bandwidth, snr):
    """TC = 32 L_bar / (B_i log2(1 + gamma)) (eqs. 4-5, 25)."""
    return upload_bits(context_tokens) / (bandwidth * spectral_efficiency(snr))


def optimal_bandwidth(context_tokens, snr, beta, mu):
    """Eq. 30: B* = sqrt(32 beta L_bar / (mu log2(1 + gamma)))."""
    return jnp.sqrt(upload_bits(context_tokens) * beta / (mu * spectral_efficiency(snr)))


def priced_upload_cost(context_tokens, snr, beta, mu):
    """beta TC(B*) + mu B* = 2 sqrt(32 beta mu L_bar / log2(1 + gamma)) (design notes 2.6)."""
    return 2.0 * jnp.sqrt(upload_bits(context_tokens) * beta * mu / spectral_efficiency(snr))


def value_gap(advantage_server, prob_server, min_local_prob=1e-6):
    """Eq. 33: Q(x,1) - Q(x,0) = A(x,1) / pi(0|x).

    pi(0|x) is floored at `min_local_prob` only to avoid dividing by zero when the policy is certain.
    """
    return advantage_server / jnp.maximum(1.0 - prob_server, min_local_prob)


def db_to_linear(db):
    return 10.0 ** (jnp.asarray(db, jnp.float32) / 10.0)


def mean_snr_linear(distance, snr_db, path_loss_exponent):
    """Per-user mean SNR: snr_db at the median distance, path loss d^-eta around it."""
    d = jnp.maximum(distance, C.MIN_DISTANCE)
    return db_to_linear(snr_db - 10.0 * path_loss_exponent * jnp.log10(d / C.MEDIAN_DISTANCE))


def user_distance(uniform):
    """Distance of a user placed uniformly over the cell disk, from a U(0,1) draw."""
    return C.CELL_RADIUS * jnp.sqrt(uniform)


def faded_snr(mean_linear, exponential_draw):
    """Rayleigh block fading: gamma = mean * |h|^2 with |h|^2 ~ Exp(1), redrawn every slot."""
    return mean_linear * exponential_draw
