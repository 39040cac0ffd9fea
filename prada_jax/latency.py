"""Roofline latency of LLM prefill and batched decode (docs/latency.md).

time of a forward pass = overhead + max(FLOPs / (peak FLOP/s x compute efficiency),
                                        bytes moved / (bandwidth x bandwidth efficiency))

Bytes moved are the weights (read once per forward pass, shared by every request in the batch) plus the
KV cache read and written; activations are neglected. FLOPs are 2 per multiply-accumulate of the linear
layers plus the attention products (QK^T and AV). Qwen2.5 uses grouped-query attention, so the KV cache
per token is 2 x layers x kv_heads x head_dim elements while the attention FLOPs use all query heads.

Batched-server model: a prefill runs alone at the whole device; decode iterations batch every request
in its decode phase, one token per request per iteration, so every request in the batch waits for the
whole iteration. All functions are pure jnp, broadcast over their array arguments and take the
hardware (prada_jax.hardware.Hardware) as traced leaves; architectures are static.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from prada_jax import constants as C
from prada_jax.hardware import Hardware


@struct.dataclass
class TransformerArch:
    """Decoder-only transformer shape (Qwen2 family: SwiGLU MLP, q/k/v biases, RMSNorm). All static."""

    name: str = struct.field(pytree_node=False)
    hidden: int = struct.field(pytree_node=False)
    layers: int = struct.field(pytree_node=False)
    heads: int = struct.field(pytree_node=False)
    kv_heads: int = struct.field(pytree_node=False)
    intermediate: int = struct.field(pytree_node=False)
    vocab: int = struct.field(pytree_node=False)
    tie_embeddings: bool = struct.field(pytree_node=False)
    bytes_per_param: int = struct.field(pytree_node=False, default=2)  # bf16 weights
    bytes_per_kv: int = struct.field(pytree_node=False, default=2)  # bf16 KV cache

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


# config.json of the Hugging Face releases (Qwen/Qwen2.5-Math-1.5B, Qwen/Qwen2.5-Math-7B); hidden and
# layers must agree with prada_jax.constants (tested).
QWEN25_MATH_1_5B = TransformerArch(
    name=C.QWEN25_MATH_1_5B.name, hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960,
    vocab=151936, tie_embeddings=True,
)
QWEN25_MATH_7B = TransformerArch(
    name=C.QWEN25_MATH_7B.name, hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944,
    vocab=152064, tie_embeddings=False,
)
# Shapes of the models in the published measurements (prada_jax/calibration/published_latency.csv), from the
# config.json of their Hugging Face releases. Llama and Mistral have no q/k/v biases; parameter_count adds them
# (q_dim + 2 kv_dim per layer, under 0.01 % of the weights), which the fit neglects.
_PUBLISHED_SHAPES = {
    # name: (hidden, layers, heads, kv_heads, intermediate, vocab, tied embeddings)
    "qwen2.5-1.5b": (1536, 28, 12, 2, 8960, 151936, True),  # Qwen/Qwen2.5-1.5B-Instruct
    "qwen2.5-3b": (2048, 36, 16, 2, 11008, 151936, True),  # Qwen/Qwen2.5-3B-Instruct
    "qwen2.5-7b": (3584, 28, 28, 4, 18944, 152064, False),  # Qwen/Qwen2.5-7B-Instruct
    "llama-2-7b": (4096, 32, 32, 32, 11008, 32000, False),  # meta-llama/Llama-2-7b-hf ("LLaMA 7B" of TensorRT-LLM)
    "llama-3-8b": (4096, 32, 32, 8, 14336, 128256, False),  # meta-llama/Meta-Llama-3-8B-Instruct
    "llama-3.2-1b": (2048, 16, 32, 8, 8192, 128256, True),  # meta-llama/Llama-3.2-1B-Instruct
    "llama-3.2-3b": (3072, 28, 24, 8, 8192, 128256, True),  # meta-llama/Llama-3.2-3B-Instruct
    "mistral-7b-v0.3": (4096, 32, 32, 8, 14336, 32768, False),  # mistralai/Mistral-7B-Instruct-v0.3
}
ARCH_PRESETS: dict[str, TransformerArch] = {
    "qwen2.5-math-1.5b": QWEN25_MATH_1_5B, "qwen2.5-math-7b": QWEN25_MATH_7B,
    **{name: TransformerArch(name=name, hidden=h, layers=v, heads=a, kv_heads=k, intermediate=i, vocab=w,
                             tie_embeddings=t)
       for name, (h, v, a, k, i, w, t) in _PUBLISHED_SHAPES.items()},
}


def arch_from_hf_config(config: dict, name: str = "from-config", bytes_per_param: int = 2) -> TransformerArch:
    """A TransformerArch from the keys of a Hugging Face Qwen2 config.json (as a dict)."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if head_dim * config["num_attention_heads"] != config["hidden_size"]:
        raise ValueError("prada_jax/latency.py: config head_dim x num_attention_heads != hidden_size; not a Qwen2 shape")
    return TransformerArch(
        name=name, hidden=config["hidden_size"], layers=config["num_hidden_layers"],
        heads=config["num_attention_heads"], kv_heads=config["num_key_value_heads"],
        intermediate=config["intermediate_size"], vocab=config["vocab_size"],
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        bytes_per_param=bytes_per_param, bytes_per_kv=bytes_per_param,
    )


# ---- parameter and byte counts (Python ints: exact) ----

def layer_linear_weights(arch: TransformerArch) -> int:
    """Weights of one decoder layer's matrices: q, k, v, o projections and the 3 SwiGLU matrices."""
    attention = arch.hidden * (arch.q_dim + 2 * arch.kv_dim) + arch.q_dim * arch.hidden
    return attention + 3 * arch.hidden * arch.intermediate


def parameter_count(arch: TransformerArch) -> int:
    """All parameters: layers (matrices, q/k/v biases, 2 RMSNorms), final norm, embedding, LM head."""
    per_layer = layer_linear_weights(arch) + (arch.q_dim + 2 * arch.kv_dim) + 2 * arch.hidden
    embeddings = arch.vocab * arch.hidden * (1 if arch.tie_embeddings else 2)
    return arch.layers * per_layer + arch.hidden + embeddings


def weight_params_per_forward(arch: TransformerArch) -> int:
    """Parameters read by one forward pass: every parameter except an untied input-embedding table,
    of which a forward pass gathers only one row per token (a tied table is read whole by the LM head)."""
    gathered_only = 0 if arch.tie_embeddings else arch.vocab * arch.hidden
    return parameter_count(arch) - gathered_only


def weight_bytes_per_forward(arch: TransformerArch) -> int:
    """Weight bytes read by one forward pass (weight_params_per_forward x arch.bytes_per_param)."""
    return weight_params_per_forward(arch) * arch.bytes_per_param


def _weight_bytes(arch: TransformerArch, bytes_per_param=None):
    """Weight bytes per forward pass; `bytes_per_param` (traced, e.g. a SimParams leaf) overrides the arch's."""
    if bytes_per_param is None:
        return float(weight_bytes_per_forward(arch))
    return float(weight_params_per_forward(arch)) * _f32(bytes_per_param)


def kv_bytes_per_token(arch: TransformerArch) -> int:
    """KV-cache bytes of one token: K and V, every layer, kv_heads x head_dim each (grouped-query)."""
    return 2 * arch.layers * arch.kv_dim * arch.bytes_per_kv


def matmul_flops_per_token(arch: TransformerArch) -> int:
    """2 FLOPs per multiply-accumulate of the layers' matrices (the LM head is counted separately)."""
    return 2 * arch.layers * layer_linear_weights(arch)


def lm_head_flops(arch: TransformerArch) -> int:
    """Logits of one token: 2 x hidden x vocab."""
    return 2 * arch.hidden * arch.vocab


def attention_flops_per_key(arch: TransformerArch) -> int:
    """QK^T and AV of one query token against one cached key, all layers and query heads: 4 v q_dim."""
    return 4 * arch.layers * arch.q_dim


# ---- work of one forward pass ----

def _f32(x):
    return jnp.asarray(x, jnp.float32)


def prefill_work(context, cached, arch: TransformerArch, bytes_per_param=None):
    """(FLOPs, bytes) to extend a KV cache from `cached` to `context` tokens and get the next token's logits.

    New token i (cached < i <= context) attends to i keys, so attention costs 4 v q_dim sum_i i
    = 2 v q_dim (context (context+1) - cached (cached+1)). Logits only for the last token (serving engines
    and `logits_to_keep=1`). Bytes: weights once + the KV of all `context` tokens (cached read, new written).
    """
    m, c = _f32(context), _f32(cached)
    new = m - c
    flops = (
        float(matmul_flops_per_token(arch)) * new
        + float(lm_head_flops(arch)) * (new > 0)
        + 0.5 * float(attention_flops_per_key(arch)) * (m * (m + 1.0) - c * (c + 1.0))
    )
    bytes_moved = (_weight_bytes(arch, bytes_per_param) + float(kv_bytes_per_token(arch)) * m) * (new > 0)
    return flops, bytes_moved


def decode_iteration_work(contexts, active, arch: TransformerArch):
    """(FLOPs, bytes) of one batched decode iteration; requests on the last axis.

    Request j feeds one token that attends to contexts[j] cached keys plus itself. Weights are read once
    for the whole batch (if any request is active); each request reads its own KV cache.
    """
    keys = _f32(contexts) + 1.0
    on = jnp.asarray(active, bool)
    per_token = float(matmul_flops_per_token(arch)) + float(lm_head_flops(arch))
    per_request_flops = per_token + float(attention_flops_per_key(arch)) * keys
    flops = jnp.sum(jnp.where(on, per_request_flops, 0.0), axis=-1)
    kv = jnp.sum(jnp.where(on, float(kv_bytes_per_token(arch)) * keys, 0.0), axis=-1)
    bytes_moved = jnp.where(jnp.any(on, axis=-1), float(weight_bytes_per_forward(arch)) + kv, 0.0)
    return flops, bytes_moved


def batched_decode_work(batch_size, context, arch: TransformerArch):
    """(FLOPs, bytes) of one decode iteration with `batch_size` requests all at `context` cached tokens."""
    b, keys = _f32(batch_size), _f32(context) + 1.0
    per_token = float(matmul_flops_per_token(arch)) + float(lm_head_flops(arch))
    flops = b * (per_token + float(attention_flops_per_key(arch)) * keys)
    kv = b * float(kv_bytes_per_token(arch)) * keys
    bytes_moved = jnp.where(b > 0, float(weight_bytes_per_forward(arch)) + kv, 0.0)
    return flops, bytes_moved


# ---- roofline times ----

def compute_seconds(flops, hw: Hardware):
    return flops / hw.effective_flops


def memory_seconds(bytes_moved, hw: Hardware):
    return bytes_moved / hw.effective_bandwidth


def roofline_seconds(flops, bytes_moved, hw: Hardware):
    """One forward pass: overhead + max(compute time, memory time); zero when there is no work."""
    busy = (flops > 0) | (bytes_moved > 0)
    bound = jnp.maximum(compute_seconds(flops, hw), memory_seconds(bytes_moved, hw))
    return jnp.where(busy, hw.overhead_seconds + bound, 0.0)


def prefill_seconds(context, cached, arch: TransformerArch, hw: Hardware, bytes_per_param=None):
    """Prefill of tokens cached..context, alone on the device (0 when nothing is new)."""
    return roofline_seconds(*prefill_work(context, cached, arch, bytes_per_param), hw)


def decode_iteration_seconds(contexts, active, arch: TransformerArch, hw: Hardware):
    """One batched decode iteration for the active requests on the last axis (each gets one token)."""
    return roofline_seconds(*decode_iteration_work(contexts, active, arch), hw)


def batched_decode_iteration_seconds(batch_size, context, arch: TransformerArch, hw: Hardware):
    """Per-iteration time, hence per-token time of every request, with `batch_size` requests in flight at
    `context` tokens. Non-decreasing in batch_size: more requests never make a request faster."""
    return roofline_seconds(*batched_decode_work(batch_size, context, arch), hw)


def _sum_of_positive_part(d0, d1, count):
    """sum_{i=0}^{count-1} max(d0 + d1 i, 0) in closed form (d linear in i, so one sign change at most)."""
    count = _f32(count)
    safe_d1 = jnp.where(d1 == 0, 1.0, d1)
    root = -d0 / safe_d1  # d(root) = 0
    lo = jnp.where(d1 > 0, jnp.clip(jnp.ceil(root), 0.0, count), 0.0)
    hi = jnp.where(d1 < 0, jnp.clip(jnp.floor(root) + 1.0, 0.0, count), count)
    flat = d1 == 0
    lo = jnp.where(flat, 0.0, lo)
    hi = jnp.where(flat, jnp.where(d0 > 0, count, 0.0), hi)
    n = jnp.maximum(hi - lo, 0.0)
    return d0 * n + d1 * n * (lo + hi - 1.0) / 2.0


def _sum_of_max_of_lines(p0, p1, q0, q1, count):
    """sum_{i=0}^{count-1} max(p0 + p1 i, q0 + q1 i), exact, without a loop over i."""
    count = _f32(count)
    q_sum = q0 * count + q1 * count * (count - 1.0) / 2.0
    return q_sum + _sum_of_positive_part(p0 - q0, p1 - q1, count)


def decode_tokens_seconds(first_keys, tokens, arch: TransformerArch, hw: Hardware, other_requests=0,
                          other_context_tokens=0, bytes_per_param=None):
    """`tokens` decode iterations of one request whose first iteration attends to `first_keys` keys (then
    first_keys + 1, ...), sharing each iteration with `other_requests` requests holding
    `other_context_tokens` cached tokens in all (held fixed over the step)."""
    r, other_keys = _f32(other_requests), _f32(other_context_tokens)
    per_token = float(matmul_flops_per_token(arch)) + float(lm_head_flops(arch))
    attn = float(attention_flops_per_key(arch))
    flops0 = per_token * (1.0 + r) + attn * (_f32(first_keys) + other_keys)
    bytes0 = _weight_bytes(arch, bytes_per_param) + float(kv_bytes_per_token(arch)) * (_f32(first_keys) + other_keys)
    busy = _sum_of_max_of_lines(
        compute_seconds(flops0, hw), compute_seconds(attn, hw),
        memory_seconds(bytes0, hw), memory_seconds(float(kv_bytes_per_token(arch)), hw), tokens,
    )
    return busy + hw.overhead_seconds * _f32(tokens)


def step_seconds(context, cached, new_tokens, arch: TransformerArch, hw: Hardware, other_requests=0,
                 other_context_tokens=0, bytes_per_param=None):
    """One reasoning step: prefill of context (beyond `cached`), which yields the first new token, then
    new_tokens - 1 decode iterations at contexts context+1, ... (growing), batched with other requests.

    At least the last context token is always prefilled (cached is clamped to context - 1). `bytes_per_param`
    (traced) overrides the arch's weight bytes per parameter (quantised weights); the KV cache keeps bytes_per_kv.
    """
    m = _f32(context)
    c = jnp.minimum(_f32(cached), m - 1.0)
    n = jnp.maximum(_f32(new_tokens), 1.0)
    decode = decode_tokens_seconds(m + 1.0, n - 1.0, arch, hw, other_requests, other_context_tokens, bytes_per_param)
    return prefill_seconds(m, c, arch, hw, bytes_per_param) + decode


# ---- fit of effective rates to a measured table (float64 NumPy + SciPy, outside jit) ----

@struct.dataclass
class LatencyFit:
    """Effective FLOP/s and bytes/s (and per-pass overhead) fitted to measured times, with residuals."""

    effective_flops: float
    effective_bandwidth: float
    overhead_seconds: float
    log_residuals: object  # log(model / measured) per point, table order (prefill rows then decode rows)
    rms_log_residual: float


def table_work(table: dict, arch: TransformerArch):
    """(FLOPs, bytes, measured seconds) float64 arrays of a measure_latency.py table: prefill rows then decode."""
    import numpy as np

    flops, bytes_moved, seconds = [], [], []
    for row in table["prefill"]:
        f, b = prefill_work(row["context"], 0, arch)
        flops.append(float(f)), bytes_moved.append(float(b)), seconds.append(row["seconds_median"])
    for row in table["decode"]:
        f, b = batched_decode_work(row["batch"], row["context"], arch)
        flops.append(float(f)), bytes_moved.append(float(b)), seconds.append(row["seconds_median"])
    return np.asarray(flops), np.asarray(bytes_moved), np.asarray(seconds)


def fit_effective_rates(flops, bytes_moved, seconds, fit_overhead: bool = True) -> LatencyFit:
    """Least squares on log time of t = overhead + max(flops / F_eff, bytes / B_eff) over F_eff, B_eff
    (and overhead >= 0 when fit_overhead). Started from the pure-roofline bounds F >= max(flops / t)."""
    import numpy as np
    from scipy.optimize import least_squares

    flops, bytes_moved, seconds = (np.asarray(x, np.float64) for x in (flops, bytes_moved, seconds))
    if np.any(seconds <= 0) or flops.shape != seconds.shape or bytes_moved.shape != seconds.shape:
        raise ValueError("prada_jax/latency.py: fit_effective_rates needs positive times, one per (flops, bytes) row")

    def model(x):
        overhead = np.exp(x[2]) if fit_overhead else 0.0
        return overhead + np.maximum(flops / np.exp(x[0]), bytes_moved / np.exp(x[1]))

    def residuals(x):
        return np.log(model(x)) - np.log(seconds)

    start = [np.log(np.max(flops / seconds)), np.log(np.max(bytes_moved / seconds))]
    if fit_overhead:
        start.append(np.log(0.1 * np.min(seconds)))
    best = None
    for shift in (0.0, -1.0, -2.0):  # a few starts: max() makes the objective piecewise smooth
        result = least_squares(residuals, np.asarray(start) + np.r_[shift, shift, [0.0] * fit_overhead], method="lm")
        if best is None or result.cost < best.cost:
            best = result
    res = residuals(best.x)
    return LatencyFit(
        effective_flops=float(np.exp(best.x[0])), effective_bandwidth=float(np.exp(best.x[1])),
        overhead_seconds=float(np.exp(best.x[2])) if fit_overhead else 0.0,
        log_residuals=res, rms_log_residual=float(np.sqrt(np.mean(res ** 2))),
    )


def fitted_hardware(fit: LatencyFit, peaks: Hardware) -> Hardware:
    """`peaks` with the efficiencies and overhead implied by `fit` (efficiency = effective / peak)."""
    return peaks.replace(
        compute_efficiency=fit.effective_flops / peaks.peak_flops,
        bandwidth_efficiency=fit.effective_bandwidth / peaks.memory_bandwidth,
        overhead_seconds=fit.overhead_seconds,
    )
