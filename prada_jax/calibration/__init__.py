"""Calibration: fitted trace statistics, published targets and the FlopsSLM calibration.

- `refit.py` fits `fitted_stats.json` from `../shared/data` (only the numbers are committed).
- `PUBLISHED_ACCURACY`: greedy CoT accuracy of Qwen2.5-Math-1.5B/7B-Instruct (Qwen2.5-Math technical
  report, arXiv:2409.12122, English table; see shared/data/SOURCES.md). The synthetic quality model is
  calibrated to these (all-SLM / all-LLM expected accuracy).
- `PAPER_ALL_SLM_DELAY_MS`: the PRADA paper's Table 2 All-SLM processing delay (ms/task); FlopsSLM is
  chosen so that the shipped gsm8k trace reproduces the gsm8k figure (design notes 2.3).
"""

from __future__ import annotations

import json
import os

import numpy as np

from prada_jax import constants as C

# fraction correct, per dataset: (SLM = Qwen2.5-Math-1.5B-Instruct, LLM = Qwen2.5-Math-7B-Instruct).
# "math500" uses the report's MATH (5000) column: MATH-500 is a representative subset of it.
PUBLISHED_ACCURACY = {
    "gsm8k": {"slm_accuracy": 0.848, "llm_accuracy": 0.952},
    "math500": {"slm_accuracy": 0.758, "llm_accuracy": 0.836},
    "gaokao2023en": {"slm_accuracy": 0.655, "llm_accuracy": 0.668},
    "mmlu_stem": {"slm_accuracy": 0.575, "llm_accuracy": 0.719},
}

# PRADA paper, Table 2, All-SLM "Avg. Processing Delay (ms/task)". math500 is not in Table 2.
PAPER_ALL_SLM_DELAY_MS = {"gsm8k": 3.1, "gaokao2023en": 5.8, "mmlu_stem": 5.6}
FLOPS_CALIBRATION_DATASET = "gsm8k"


def all_slm_flops_per_problem(query_tokens, slm_step_tokens, num_steps) -> np.ndarray:
    """SLM FLOPs per problem when every step runs locally (float64 [N]).

    Step 0 prefills the query (eq. 14) then decodes its tokens (eq. 16); step k > 0 decodes on top of the
    KV cache (context = query + earlier SLM tokens, nothing left to ingest). Uses
    `prada_jax.costs.local_step_seconds` with FlopsSLM = 1 so the result is in FLOPs.
    """
    from prada_jax import costs  # local import: keeps `import prada_jax.calibration` free of jax

    query = np.asarray(query_tokens, np.int64)
    tokens = np.asarray(slm_step_tokens, np.int64)
    steps = np.asarray(num_steps, np.int64)
    if tokens.ndim != 2 or query.shape != (tokens.shape[0],) or steps.shape != query.shape:
        raise ValueError(
            f"all_slm_flops_per_problem: shapes query {query.shape}, step tokens {tokens.shape}, "
            f"num_steps {steps.shape} do not match [N], [N, K], [N]"
        )
    mask = np.arange(tokens.shape[1])[None, :] < steps[:, None]
    context = query[:, None] + np.cumsum(tokens, axis=1) - tokens  # before step k
    cached = np.where(np.arange(tokens.shape[1])[None, :] == 0, 0, context)  # query ingested on step 0
    flops = np.asarray(costs.local_step_seconds(context, cached, tokens, 1.0), np.float64)
    return np.sum(np.where(mask, flops, 0.0), axis=1)


def calibrate_flops_slm(mean_flops_per_task: float, target_delay_ms: float) -> float:
    """FlopsSLM (FLOP/s) such that mean all-SLM processing delay equals `target_delay_ms`."""
    if not target_delay_ms > 0:
        raise ValueError(f"calibrate_flops_slm: target_delay_ms must be > 0, got {target_delay_ms}")
    return float(mean_flops_per_task) / (target_delay_ms * 1e-3)


def predicted_delay_ms(mean_flops_per_task: float, flops_slm: float = C.FLOPS_SLM) -> float:
    """All-SLM processing delay (ms/task) implied by a FlopsSLM value."""
    return float(mean_flops_per_task) / flops_slm * 1e3


PROMPT_OVERHEAD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompt_overhead.json")
MAX_PROMPT_OVERHEAD_TOKENS = 2048  # plausible range: 0 .. a few few-shot exemplars (~300-500 tokens each)


def prompt_overhead(dataset: str, path: str = PROMPT_OVERHEAD_PATH) -> int:
    """Fitted extra prompt tokens per query for `dataset` (0 when the file or the dataset is absent).

    Written by `experiments/calibrate_flops.py --write_prompt_overhead`: the paper's All-SLM processing delay
    pins it for every dataset but the FlopsSLM calibration one (docs/reproduction.md)."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        try:
            table = json.load(handle)["prompt_overhead_tokens"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: malformed prompt-overhead file ({exc})") from exc
    value = table.get(dataset, 0)
    if not isinstance(value, int) or not 0 <= value <= MAX_PROMPT_OVERHEAD_TOKENS:
        raise ValueError(f"{path}: prompt_overhead_tokens[{dataset!r}] must be an int in "
                         f"[0, {MAX_PROMPT_OVERHEAD_TOKENS}], got {value!r}")
    return value


def fit_prompt_overhead(base_query_tokens, slm_step_tokens, num_steps, flops_slm: float, target_delay_ms: float) -> int:
    """Smallest integer overhead X >= 0 whose mean All-SLM delay (query + X tokens) is closest to the target.

    The delay rises strictly with X (a longer prefill and longer contexts), so a bisection on integers finds
    the crossing; X = 0 when the trace is already at or above the target."""
    def delay(x):
        q = np.asarray(base_query_tokens, np.int64) + x
        return predicted_delay_ms(float(np.mean(all_slm_flops_per_problem(q, slm_step_tokens, num_steps))), flops_slm)

    if delay(0) >= target_delay_ms:
        return 0
    lo, hi = 0, MAX_PROMPT_OVERHEAD_TOKENS
    if delay(hi) < target_delay_ms:
        raise ValueError(f"fit_prompt_overhead: even {hi} extra tokens give {delay(hi):.2f} ms < {target_delay_ms} ms")
    while hi - lo > 1:  # delay(lo) < target <= delay(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if delay(mid) < target_delay_ms else (lo, mid)
    return lo if target_delay_ms - delay(lo) <= delay(hi) - target_delay_ms else hi


def recorded_prompt_overhead(trace) -> int:
    """The prompt overhead a trace was generated with (its generator metadata; 0 for traces without one)."""
    return int(trace.metadata.get("generator", {}).get("prompt_overhead_tokens", 0))


def fit_trace_prompt_overhead(trace, flops_slm: float, target_delay_ms: float) -> int:
    """`fit_prompt_overhead` on a trace, from its query lengths without the overhead it already carries."""
    base = np.asarray(trace.query_tokens, np.int64) - recorded_prompt_overhead(trace)
    return fit_prompt_overhead(base, trace.slm_step_tokens, trace.num_steps, flops_slm, target_delay_ms)
