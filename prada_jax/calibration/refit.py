"""Fit the statistics behind the synthetic traces from the real benchmark data in `../shared/data`.

Only fitted numbers leave this module (written to `fitted_stats.json`); the data files themselves are
never copied. `python experiments/refit_stats.py` regenerates the committed JSON byte for byte when the
data is present. Everything here is plain NumPy on a few thousand records (runs in about a second).

What is fitted (docs/traces.md explains every choice):
- steps per solution: empirical pmf of the number of ProcessBench steps;
- step length: log(chars) = alpha_position + slope (log K - mean log K) + b_problem + e_step, where
  position is first / middle / last / only (single-step solution), fitted by least squares, then the
  residual split into a per-problem effect b ~ N(0, sd_problem^2) and a per-step e ~ N(0, sd_step^2)
  by one-way ANOVA moments;
- query length: 101 quantiles (0..100 %) of log(chars) of the benchmark's problem text.
Characters become tokens with CHARS_PER_TOKEN, an estimate for the Qwen2.5 tokenizer on math English.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

import numpy as np

from prada_jax import constants as C

# --- Documented assumptions (recorded in fitted_stats.json so the generator uses the same numbers) ---
CHARS_PER_TOKEN = C.CHARS_PER_TOKEN
# Qwen2.5-Math CoT chat template around the question:
# "<|im_start|>system\nPlease reason step by step, and put your final answer within \boxed{}.<|im_end|>\n"
# "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
# = 5 special tokens + 6 role/newline tokens + 18 tokens of system sentence (hand count) = 29.
PROMPT_TEMPLATE_TOKENS = C.PROMPT_TEMPLATE_TOKENS
PREFERRED_GENERATOR = "Qwen2.5-Math"  # rows whose generator name contains this are preferred ...
MIN_PREFERRED_ROWS = 100  # ... when there are at least this many of them; else all rows are used
QUERY_QUANTILES = 101  # 0 %, 1 %, ..., 100 %
SCHEMA_VERSION = 1
FLOAT_DIGITS = 6  # rounding of every float written, so the file is stable across NumPy builds

# ProcessBench split that supplies step statistics, and why (docs/traces.md):
# mmlu_stem has no ProcessBench split; its Qwen2.5-Math CoT answers are short single-concept solutions,
# closer to grade-school arithmetic chains than to competition math, so it borrows the gsm8k steps.
STEP_SOURCES = {
    "processbench_gsm8k": "processbench/gsm8k.json",
    "processbench_math": "processbench/math.json",
}
DATASET_SOURCES = {
    "gsm8k": ("processbench_gsm8k", "gsm8k_openai/test.jsonl"),
    "math500": ("processbench_math", "rsd_math500/math500/test.jsonl"),
    "gaokao2023en": ("processbench_math", "qwen25math_eval/gaokao2023en/test.jsonl"),
    "mmlu_stem": ("processbench_gsm8k", "qwen25math_eval/mmlu_stem/test.jsonl"),
}
POSITIONS = ("first", "middle", "last", "only")

DEFAULT_DATA_DIR = os.path.join("..", "shared", "data")
STATS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fitted_stats.json")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and the field."""


def _r(x: float) -> float:
    return float(round(float(x), FLOAT_DIGITS))


def _read_json(path: str) -> Any:
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found (pass --data_dir pointing at shared/data)")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found (pass --data_dir pointing at shared/data)")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def mmlu_question_text(record: dict, source: str = "<mmlu_stem>") -> str:
    """Question as the Qwen2.5-Math evaluation harness poses it: question + '\\nAnswer Choices: (A) .. (D) ..'."""
    try:
        question, choices = record["question"], record["choices"]
    except KeyError as exc:
        raise DataError(f"{source}: field {exc.args[0]!r} missing") from exc
    options = " ".join(f"({label}) {str(c).strip()}" for label, c in zip("ABCD", choices))
    return f"{question.strip()}\nAnswer Choices: {options}"


QUERY_TEXT: dict[str, Callable[[dict, str], str]] = {
    "gsm8k": lambda r, s: r["question"],
    "math500": lambda r, s: r["problem"],
    "gaokao2023en": lambda r, s: r["question"],
    "mmlu_stem": mmlu_question_text,
}


def step_positions(num_steps: np.ndarray) -> np.ndarray:
    """Position class per step (flattened in problem order): 0 first, 1 middle, 2 last, 3 only."""
    out = []
    for k in num_steps:
        if k == 1:
            out.append([3])
        else:
            out.append([0] + [1] * (int(k) - 2) + [2])
    return np.concatenate(out)


def fit_step_lengths(steps: list[list[str]]) -> dict[str, float]:
    """Fit log(chars) = alpha_pos + slope (log K - mean log K) + b_problem + e_step (see module doc).

    Least squares for alpha (4 position classes) and the slope on log K, then one-way ANOVA on the
    residuals: sd_step^2 = pooled within-problem variance, sd_problem^2 = var(problem means) - E[sd_step^2 / K].
    """
    num_steps = np.array([len(s) for s in steps])
    log_chars = np.log(np.array([max(len(x), 1) for s in steps for x in s], dtype=np.float64))
    pos = step_positions(num_steps)
    log_k = np.repeat(np.log(num_steps), num_steps)
    mean_log_k = float(np.mean(np.log(num_steps)))
    design = np.zeros((log_chars.size, len(POSITIONS) + 1))
    design[np.arange(log_chars.size), pos] = 1.0
    design[:, -1] = log_k - mean_log_k
    used = [j for j in range(len(POSITIONS)) if np.any(pos == j)] + [len(POSITIONS)]
    coef = np.zeros(len(POSITIONS) + 1)
    coef[used] = np.linalg.lstsq(design[:, used], log_chars, rcond=None)[0]
    if not np.any(pos == 3):  # no single-step solution: treat a lone step like a final step
        coef[3] = coef[2]
    resid = log_chars - design @ coef
    groups = np.split(resid, np.cumsum(num_steps)[:-1])
    multi = [g for g in groups if g.size > 1]
    sd_step2 = sum(float(np.sum((g - g.mean()) ** 2)) for g in multi) / sum(g.size - 1 for g in multi)
    means = np.array([g.mean() for g in groups])
    sd_problem2 = max(float(np.var(means, ddof=1) - np.mean(sd_step2 / num_steps)), 0.0)
    out = {f"alpha_{name}": _r(coef[j]) for j, name in enumerate(POSITIONS)}
    out.update(slope_log_num_steps=_r(coef[-1]), mean_log_num_steps=_r(mean_log_k))
    out.update(sd_problem=_r(np.sqrt(sd_problem2)), sd_step=_r(np.sqrt(sd_step2)))
    return out


def fit_step_source(path: str) -> dict[str, Any]:
    """Step statistics of one ProcessBench split (generator choice per module doc)."""
    rows = _read_json(path)
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of ProcessBench records")
    for i, row in enumerate(rows):
        if not isinstance(row.get("steps"), list) or not row["steps"] or "generator" not in row:
            raise DataError(f"{path}: record {i}: field 'steps' (non-empty list) or 'generator' missing")
    preferred = [r for r in rows if PREFERRED_GENERATOR in r["generator"]]
    use_preferred = len(preferred) >= MIN_PREFERRED_ROWS
    chosen = preferred if use_preferred else rows
    steps = [[str(x) for x in r["steps"]] for r in chosen]
    num_steps = np.array([len(s) for s in steps])
    chars = np.array([len(x) for s in steps for x in s], dtype=np.float64)
    pmf_counts = np.bincount(num_steps)[1:]
    return {
        "rows_total": len(rows),
        "rows_preferred_generator": len(preferred),
        "generators_used": f"{PREFERRED_GENERATOR}*" if use_preferred else "all",
        "rows_used": len(chosen),
        "num_steps_counts": [int(c) for c in pmf_counts],  # index 0 is K = 1
        "step_log_chars": fit_step_lengths(steps),
        "min_step_chars": int(chars.min()),
        "max_step_chars": int(chars.max()),
        "summary": {
            "mean_steps": _r(num_steps.mean()),
            "mean_step_chars": _r(chars.mean()),
            "median_step_chars": _r(np.median(chars)),
            "mean_step_tokens": _r(chars.mean() / CHARS_PER_TOKEN),
        },
    }


def fit_queries(dataset: str, path: str) -> dict[str, Any]:
    """Quantiles of log(chars) of the benchmark's problem text."""
    records = _read_jsonl(path)
    texts = []
    for i, record in enumerate(records):
        try:
            texts.append(QUERY_TEXT[dataset](record, f"{path}: record {i}"))
        except KeyError as exc:
            raise DataError(f"{path}: record {i}: field {exc.args[0]!r} missing") from exc
    chars = np.array([max(len(t), 1) for t in texts], dtype=np.float64)
    quantiles = np.quantile(np.log(chars), np.linspace(0.0, 1.0, QUERY_QUANTILES))
    tokens = np.maximum(np.round(chars / CHARS_PER_TOKEN), 1) + PROMPT_TEMPLATE_TOKENS
    return {
        "num_problems": len(records),
        "query_log_chars_quantiles": [_r(q) for q in quantiles],
        "summary": {
            "mean_query_chars": _r(chars.mean()),
            "median_query_chars": _r(np.median(chars)),
            "mean_query_tokens": _r(tokens.mean()),
        },
    }


def refit(data_dir: str = DEFAULT_DATA_DIR) -> dict[str, Any]:
    """All fitted statistics as a JSON-ready dict (deterministic: no timestamps, fixed key order)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data directory not found (pass --data_dir pointing at shared/data)")
    step_sources = {name: fit_step_source(os.path.join(data_dir, rel)) for name, rel in STEP_SOURCES.items()}
    for name, rel in STEP_SOURCES.items():
        step_sources[name] = {"file": rel, **step_sources[name]}
    datasets = {}
    for dataset, (step_source, rel) in DATASET_SOURCES.items():
        datasets[dataset] = {"step_source": step_source, "query_file": rel, **fit_queries(dataset, os.path.join(data_dir, rel))}
    return {
        "schema_version": SCHEMA_VERSION,
        "assumptions": {
            "chars_per_token": CHARS_PER_TOKEN,
            "prompt_template_tokens": PROMPT_TEMPLATE_TOKENS,
            "preferred_generator": PREFERRED_GENERATOR,
            "min_preferred_rows": MIN_PREFERRED_ROWS,
        },
        "step_sources": step_sources,
        "datasets": datasets,
    }


def dumps(stats: dict[str, Any]) -> str:
    """Canonical JSON text of the statistics (what is committed): indented, number lists on one line."""
    text = json.dumps(stats, indent=1)
    text = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return text + "\n"


def load_stats(path: str = STATS_PATH) -> dict[str, Any]:
    """Read the committed statistics; clear error naming the file when absent or malformed."""
    if not os.path.exists(path):
        raise DataError(f"{path}: fitted statistics not found (run experiments/refit_stats.py)")
    with open(path, encoding="utf-8") as handle:
        try:
            stats = json.load(handle)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("schema_version", "assumptions", "step_sources", "datasets"):
        if key not in stats:
            raise DataError(f"{path}: field '{key}' missing")
    if stats["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"{path}: field 'schema_version' is {stats['schema_version']}, expected {SCHEMA_VERSION}")
    return stats
