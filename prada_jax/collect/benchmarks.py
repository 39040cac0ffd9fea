"""Benchmark loaders (jsonl) and answer checkers for gsm8k, MATH / math500, gaokao2023en and mmlu_stem.

Formats (one JSON object per line), detected from the keys of each record:

| format | keys | ground truth |
|---|---|---|
| `gsm8k` | `question`, `answer` containing `#### <number>` | the number after `####` (commas removed) |
| `math` (MATH, math500) | `problem` and `answer`, or `problem` and `solution` | `answer`, else the last `\\boxed{}` of `solution` |
| `gaokao` (gaokao2023en) | `question`, `answer` (LaTeX, maybe wrapped in `$`) | `answer` without the `$` |
| `choice` (mmlu_stem) | `question`, `choices` (list), `answer` (int index) | the letter `A`, `B`, ... |

Answer extraction from a model's response: the last `\\boxed{...}` (balanced braces), else `#### n`, else
"the answer is X", else (numeric formats) the last number / (choice) the last standalone option letter.
Checking: light string normalisation (spaces, `\\left`/`\\right`, `\\dfrac`, `\\text{}`, `$`, trailing `.`,
degree signs) then exact match, else numeric match (integers, decimals, `\\frac{a}{b}`, `a/b`; a trailing `%` is dropped)
within a relative tolerance of 1e-6. This is not a symbolic (sympy) equivalence check: answers that are
equal only after algebra (e.g. `\\sqrt{8}` vs `2\\sqrt{2}`) count as wrong.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable

FORMATS = ("gsm8k", "math", "gaokao", "choice")
# Dataset name -> answer format (used when the caller names the dataset).
DATASET_FORMATS = {"gsm8k": "gsm8k", "math": "math", "math500": "math", "gaokao2023en": "gaokao", "mmlu_stem": "choice"}
CHOICE_LETTERS = "ABCDEFGHIJ"


class BenchmarkError(ValueError):
    """A benchmark file or record cannot be read; the message names the file, the line and the field."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem: `question` is the full prompt text (choices included), `answer` the ground truth."""

    pid: str
    question: str
    answer: str
    fmt: str


def detect_format(record: dict) -> str:
    """Answer format of one jsonl record from its keys (see the module docstring)."""
    if "choices" in record:
        return "choice"
    if "problem" in record:
        return "math"
    if "question" in record and "answer" in record:
        return "gsm8k" if "####" in str(record["answer"]) else "gaokao"
    raise BenchmarkError(f"unknown record format with keys {sorted(record)}")


def _problem_from_record(record: dict, fmt: str, pid: str, where: str) -> Problem:
    def field(name: str):
        if name not in record:
            raise BenchmarkError(f"{where}: field '{name}' missing for format '{fmt}'")
        return record[name]

    if fmt == "gsm8k":
        answer = str(field("answer"))
        if "####" not in answer:
            raise BenchmarkError(f"{where}: field 'answer' has no '#### <number>' line")
        truth = answer.split("####")[-1].strip().replace(",", "")
        return Problem(pid, str(field("question")), truth, fmt)
    if fmt == "math":
        if "answer" in record:
            truth = str(record["answer"])
        else:
            truth = extract_boxed(str(field("solution")))
            if truth is None:
                raise BenchmarkError(f"{where}: field 'solution' has no \\boxed{{}} answer")
        return Problem(pid, str(field("problem")), truth, fmt)
    if fmt == "gaokao":
        return Problem(pid, str(field("question")), str(field("answer")).strip().strip("$").strip(), fmt)
    if fmt == "choice":
        choices = field("choices")
        index = field("answer")
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(CHOICE_LETTERS):
            raise BenchmarkError(f"{where}: field 'choices' must be a list of 2..{len(CHOICE_LETTERS)} options")
        if isinstance(index, str) and index.strip().upper() in CHOICE_LETTERS[: len(choices)]:
            letter = index.strip().upper()
        elif isinstance(index, int) and 0 <= index < len(choices):
            letter = CHOICE_LETTERS[index]
        else:
            raise BenchmarkError(f"{where}: field 'answer' must be an option index or letter, got {index!r}")
        options = "\n".join(f"({CHOICE_LETTERS[i]}) {c}" for i, c in enumerate(choices))
        question = f"{field('question')}\n{options}\nAnswer with the letter of the correct option."
        return Problem(pid, question, letter, fmt)
    raise BenchmarkError(f"{where}: unknown format {fmt!r}; expected one of {FORMATS}")


def load_benchmark(path: str | os.PathLike, fmt: str | None = None, max_problems: int | None = None) -> list[Problem]:
    """Read a benchmark jsonl file into Problems (format auto-detected per record unless `fmt` is given)."""
    path = str(path)
    if fmt is not None and fmt not in FORMATS:
        raise BenchmarkError(f"{path}: unknown format {fmt!r}; expected one of {FORMATS}")
    if not os.path.exists(path):
        raise BenchmarkError(f"{path}: file not found")
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if max_problems is not None and len(problems) >= max_problems:
                break
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise BenchmarkError(f"{where}: expected a JSON object")
            try:
                record_fmt = fmt or detect_format(record)
            except BenchmarkError as exc:
                raise BenchmarkError(f"{where}: {exc}") from exc
            pid = str(record.get("idx", record.get("unique_id", record.get("source", len(problems)))))
            problems.append(_problem_from_record(record, record_fmt, pid, where))
    if not problems:
        raise BenchmarkError(f"{path}: no problems found")
    return problems


# ---------------------------------------------------------------- answer extraction


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, or None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        rest = text[start + len("\\boxed") :].strip()  # "\boxed 5" form
        return rest.split()[0].rstrip(".$") if rest else None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+)", re.IGNORECASE)


def extract_answer(response: str, fmt: str) -> str | None:
    """The final answer a response states, for answer format `fmt`, or None when it states none."""
    boxed = extract_boxed(response)
    if boxed is not None:
        return boxed.strip()
    if "####" in response:
        tail = response.split("####")[-1].strip()
        return tail.splitlines()[0].strip() if tail else None
    if fmt == "choice":
        match = re.search(r"answer is[:\s]*\(?([A-J])\)?", response, re.IGNORECASE)
        if match:
            return match.group(1).upper()
        letters = re.findall(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])", response)
        return letters[-1] if letters else None
    match = _ANSWER_IS.search(response)
    if match:
        return match.group(1).strip().rstrip(".")
    if fmt == "gsm8k":
        numbers = _NUMBER.findall(response)
        return numbers[-1] if numbers else None
    return None


# ---------------------------------------------------------------- checking


def normalize_answer(text: str) -> str:
    """Light canonical form of a LaTeX / plain answer string (see the module docstring)."""
    s = text.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                     ("dfrac", "frac"), ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("°", ""),
                     ("\\%", "%"), ("\\$", "")):
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if s.startswith("x=") or s.startswith("y="):
        s = s[2:]
    return s


def _to_number(text: str) -> float | None:
    """Numeric value of an answer (integer, decimal, a/b, \\frac{a}{b}); a trailing % is dropped, not divided."""
    s = normalize_answer(text).replace(",", "").rstrip("%")
    match = re.fullmatch(r"(-?)\\frac\{?(-?\d+(?:\.\d+)?)\}?\{?(-?\d+(?:\.\d+)?)\}?", s)
    try:
        if match:
            value = float(match.group(2)) / float(match.group(3))
            value = -value if match.group(1) else value
        elif re.fullmatch(r"-?\d+(?:\.\d+)?/-?\d+(?:\.\d+)?", s):
            num, den = s.split("/")
            value = float(num) / float(den)
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def answers_match(predicted: str | None, truth: str, fmt: str) -> bool:
    """True iff a predicted final answer equals the ground truth for answer format `fmt`."""
    if predicted is None:
        return False
    if fmt == "choice":
        pred = normalize_answer(predicted).strip("()").upper()
        return pred[:1] == truth.strip().upper() and (len(pred) == 1 or not pred[1:2].isalpha())
    if normalize_answer(predicted) == normalize_answer(truth):
        return True
    a, b = _to_number(predicted), _to_number(truth)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def is_correct(response: str, problem: Problem) -> bool:
    """Extract the final answer from a model response and check it against the problem's ground truth."""
    return answers_match(extract_answer(response, problem.fmt), problem.answer, problem.fmt)


def benchmark_accuracy(responses: Iterable[str], problems: Iterable[Problem]) -> float:
    """Fraction of responses judged correct."""
    flags = [is_correct(r, p) for r, p in zip(responses, problems, strict=True)]
    return sum(flags) / len(flags) if flags else float("nan")
