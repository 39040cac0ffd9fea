"""Collect a trace v1 from real models: SLM reference path, SLM/LLM candidate steps, PRM scores, MC success.

Per problem (see docs/collect.md for the full recipe):
1. Each model gets its own chat prompt (the tokenizer's chat template when it has one, else a plain template).
2. The SLM's greedy response is produced one step at a time; a step ends at the first blank line ("\\n\\n")
   or EOS, or after `max_step_tokens` tokens; at most `max_steps` steps (longer paths are truncated and counted).
   At step k both models propose a step from the same context (prompt + reference steps 0..k-1): the SLM's greedy
   step *is* reference step k; the LLM's greedy step is its counterfactual.
3. Monte-Carlo value of a text: `num_rollouts` SLM completions sampled (temperature, top_p) from it, each checked
   against the ground truth with `benchmarks.is_correct`. Values of the prompt, of context + SLM step and of
   context + LLM step are stored as counts in the shard; a candidate that already ends the response (EOS) is
   checked directly (exact 0/1, no sampling).
4. PRM scores of the context and of both continuations from a `PRMScorer` (question, steps) -> [0, 1]; when no PRM is
   given, the Laplace-smoothed MC values stand in (a Math-Shepherd-style PRM proxy).
5. Features: the SLM's last-layer hidden state h at the last context token, projected to F dims with a fixed random
   matrix R ~ N(0, 1) of shape [hidden, F] drawn by `numpy.random.default_rng(feature_seed)`: x = h R / sqrt(hidden).
   At assembly each feature dimension is standardised over all valid (problem, step) entries.

Step success probability (assembly, `success_mapping`): with V = (c + 1) / (n + 2) for sampled counts (exact 0/1
for finished candidates),
  - "conditional" (default): p_model,k = min(1, V(context_k + model step) / V(context_k)), V(context_0) from the
    prompt's rollouts and V(context_k) = V(context_{k-1} + SLM step) on the reference path. Along the reference path
    the product telescopes, so prod_k p_S,k ~ correctness of the SLM's own path (the simulator's quality model).
    The value after the last reference step is the exact correctness of the reference response, also when the path
    was truncated at `max_steps` (the trace's path ends there).
  - "value": p_model,k = V(context_k + model step) (Math-Shepherd soft label).

Resumable: one JSON shard per problem in `<out_dir>/shards/`, written atomically; a restart skips problems whose
shard exists. `<out_dir>/collect_config.json` pins the settings that change results; a restart with different ones
fails rather than mixing them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from prada_jax import constants as C
from prada_jax.collect.benchmarks import Problem, is_correct
from prada_jax.traces import TraceData, save_trace

log = logging.getLogger(__name__)

STEP_DELIMITER = "\n\n"
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
PLAIN_TEMPLATE = "Question: {question}\n{system}\nAnswer: "
SUCCESS_MAPPINGS = ("conditional", "value")
SHARD_VERSION = 1


class CollectError(RuntimeError):
    """Collection cannot proceed; the message names the file or setting at fault."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """One generated continuation: `text` (cut just after the first step delimiter when stopping at a step),
    `num_tokens` generated (>= 1, EOS included) and whether the model ended its response (EOS)."""

    text: str
    num_tokens: int
    finished: bool


class TextGenerator(Protocol):
    """What the collector needs from a model (HFGenerator implements it; tests may script one)."""

    name: str
    hidden: int
    layers: int

    def prompt(self, question: str) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, texts: Sequence[str], *, max_new_tokens: int, stop_at_step: bool, sample: bool,
                 temperature: float = 1.0, top_p: float = 1.0, return_hidden: bool = False
                 ) -> tuple[list[Generation], np.ndarray | None]: ...


PRMScorer = Callable[[str, Sequence[str]], float]
"""A process reward model: (question, steps so far) -> score in [0, 1] of the last step (of the question if none)."""


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """Settings that change the collected numbers (pinned in collect_config.json)."""

    dataset: str
    max_steps: int = 16
    max_step_tokens: int = 256
    max_completion_tokens: int = 1024
    num_rollouts: int = 8
    temperature: float = 0.7
    top_p: float = 0.8
    feature_dim: int = 16
    feature_seed: int = 0
    seed: int = 0

    def validate(self) -> None:
        for name in ("max_steps", "max_step_tokens", "max_completion_tokens", "num_rollouts", "feature_dim"):
            if getattr(self, name) < 1:
                raise CollectError(f"CollectConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise CollectError("CollectConfig: temperature must be > 0 and top_p in (0, 1]")


def feature_projection(hidden: int, feature_dim: int, seed: int) -> np.ndarray:
    """Fixed random projection [hidden, F], entries N(0, 1) / sqrt(hidden), from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((hidden, feature_dim)) / math.sqrt(hidden)).astype(np.float64)


def _problem_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:4], "little")


def _rollout_counts(slm: TextGenerator, prefixes: Sequence[str], responses: Sequence[str], problem: Problem,
                    cfg: CollectConfig) -> list[int]:
    """Correct completions out of cfg.num_rollouts for each (prompt+response prefix, response so far)."""
    texts = [p for p in prefixes for _ in range(cfg.num_rollouts)]
    gens, _ = slm.generate(texts, max_new_tokens=cfg.max_completion_tokens, stop_at_step=False, sample=True,
                           temperature=cfg.temperature, top_p=cfg.top_p)
    counts = []
    for j, response in enumerate(responses):
        chunk = gens[j * cfg.num_rollouts : (j + 1) * cfg.num_rollouts]
        counts.append(sum(is_correct(response + g.text, problem) for g in chunk))
    return counts


def collect_problem(problem: Problem, slm: TextGenerator, llm: TextGenerator, prm: PRMScorer | None,
                    cfg: CollectConfig, projection: np.ndarray) -> dict[str, Any]:
    """Collect one problem into a JSON-able shard record (texts kept for inspection)."""
    n = cfg.num_rollouts
    slm_prompt, llm_prompt = slm.prompt(problem.question), llm.prompt(problem.question)
    query_tokens = slm.count_tokens(slm_prompt)
    steps: list[str] = []
    rec: dict[str, list] = {key: [] for key in (
        "slm_text", "llm_text", "slm_tokens", "llm_tokens", "slm_finished", "llm_finished", "mc_after_slm",
        "mc_after_llm", "prm_context", "prm_after_slm", "prm_after_llm", "features")}
    mc_prompt = _rollout_counts(slm, [slm_prompt], [""], problem, cfg)[0]
    finished = False
    for _ in range(cfg.max_steps):
        response = "".join(steps)
        (s_gen,), hidden = slm.generate([slm_prompt + response], max_new_tokens=cfg.max_step_tokens,
                                        stop_at_step=True, sample=False, return_hidden=True)
        (l_gen,), _ = llm.generate([llm_prompt + response], max_new_tokens=cfg.max_step_tokens,
                                   stop_at_step=True, sample=False)
        counts: dict[str, int] = {}
        todo = []
        for label, gen in (("slm", s_gen), ("llm", l_gen)):
            if gen.finished:
                counts[label] = n if is_correct(response + gen.text, problem) else 0
            else:
                todo.append(label)
        gens = {"slm": s_gen, "llm": l_gen}
        if todo:
            got = _rollout_counts(slm, [slm_prompt + response + gens[t].text for t in todo],
                                  [response + gens[t].text for t in todo], problem, cfg)
            counts.update(zip(todo, got))
        for label, gen in gens.items():
            rec[f"{label}_text"].append(gen.text)
            rec[f"{label}_tokens"].append(int(gen.num_tokens))
            rec[f"{label}_finished"].append(bool(gen.finished))
            rec[f"mc_after_{label}"].append(int(counts[label]))
        if prm is not None:
            rec["prm_context"].append(float(prm(problem.question, list(steps))))
            rec["prm_after_slm"].append(float(prm(problem.question, steps + [s_gen.text])))
            rec["prm_after_llm"].append(float(prm(problem.question, steps + [l_gen.text])))
        rec["features"].append([float(v) for v in np.asarray(hidden[0], np.float64) @ projection])
        steps.append(s_gen.text)
        if s_gen.finished:
            finished = True
            break
    return {
        "shard_version": SHARD_VERSION,
        "pid": problem.pid,
        "answer": problem.answer,
        "query_tokens": query_tokens,
        "num_steps": len(steps),
        "num_rollouts": n,
        "mc_prompt": int(mc_prompt),
        "finished": finished,
        "reference_correct": bool(is_correct("".join(steps), problem)),
        **rec,
    }


def _write_json_atomic(path: str, payload: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


def shard_path(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, "shards", f"p{index:06d}.json")


def _pin_config(out_dir: str, pinned: dict[str, Any]) -> None:
    path = os.path.join(out_dir, "collect_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            old = json.load(handle)
        diff = {k: (old.get(k), v) for k, v in pinned.items() if old.get(k) != v}
        if diff:
            raise CollectError(f"{path}: out_dir was collected with other settings {diff} (old, new); "
                               "use a new out_dir or restore the settings")
    else:
        _write_json_atomic(path, pinned)


def collect(problems: Sequence[Problem], slm: TextGenerator, llm: TextGenerator, prm: PRMScorer | None,
            cfg: CollectConfig, out_dir: str, prm_arch: dict[str, Any] | None = None,
            seed_fn: Callable[[int], None] | None = None) -> list[str]:
    """Collect every problem that has no shard yet; return the shard paths of all problems, in order.

    `prm_arch` ({name, hidden, layers}) names the PRM in the metadata (default: the MC-value proxy on the SLM).
    `seed_fn(seed)` seeds the generators' RNG before each problem (so a restart reproduces a problem exactly).
    """
    cfg.validate()
    if prm is not None and prm_arch is None:
        raise CollectError("collect: prm_arch {name, hidden, layers} is required when a PRM is given")
    prm_arch = prm_arch or arch_dict(f"mc-value-proxy({slm.name})", slm.hidden, slm.layers)
    os.makedirs(os.path.join(out_dir, "shards"), exist_ok=True)
    _pin_config(out_dir, {**dataclasses.asdict(cfg), "slm": arch_dict(slm.name, slm.hidden, slm.layers),
                          "llm": arch_dict(llm.name, llm.hidden, llm.layers), "prm": prm_arch})
    projection = feature_projection(slm.hidden, cfg.feature_dim, cfg.feature_seed)
    paths = [shard_path(out_dir, i) for i in range(len(problems))]
    todo = []
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            todo.append(i)
        elif _read_shard(path)["pid"] != problems[i].pid:
            raise CollectError(f"{path}: shard is for problem id {_read_shard(path)['pid']!r}, but problem {i} of "
                               f"the benchmark is {problems[i].pid!r}; use a new out_dir for another benchmark")
    log.info("collect %s: %d problems, %d already done, %d to go -> %s", cfg.dataset, len(problems),
             len(problems) - len(todo), len(todo), out_dir)
    start = time.monotonic()
    for done, i in enumerate(todo, start=1):
        if seed_fn is not None:
            seed_fn(_problem_seed(cfg.seed, i))
        record = collect_problem(problems[i], slm, llm, prm, cfg, projection)
        record["index"] = i
        _write_json_atomic(paths[i], record)
        elapsed = time.monotonic() - start
        rate = done / elapsed if elapsed > 0 else float("inf")
        eta = (len(todo) - done) / rate if rate > 0 else float("inf")
        log.info("problem %d/%d (id %s): %d steps, correct=%s | %.2f problems/min, elapsed %.0fs, ETA %.0fs",
                 i + 1, len(problems), problems[i].pid, record["num_steps"], record["reference_correct"],
                 rate * 60.0, elapsed, eta)
    return paths


def _value(count: int, n: int, exact: bool) -> float:
    if exact:
        return 1.0 if count >= n else 0.0
    return (count + 1.0) / (n + 2.0)


def _read_shard(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise CollectError(f"{path}: unreadable shard ({exc})") from exc
    if record.get("shard_version") != SHARD_VERSION:
        raise CollectError(f"{path}: field 'shard_version' is {record.get('shard_version')!r}, expected {SHARD_VERSION}")
    k = record.get("num_steps")
    if not isinstance(k, int) or k < 1:
        raise CollectError(f"{path}: field 'num_steps' must be a positive int, got {k!r}")
    for field in ("slm_tokens", "llm_tokens", "mc_after_slm", "mc_after_llm", "features"):
        if len(record.get(field, [])) != k:
            raise CollectError(f"{path}: field '{field}' has {len(record.get(field, []))} entries, expected {k}")
    return record


def shard_success(record: dict[str, Any], mapping: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p_slm, p_llm, v_context, v_after_slm, v_after_llm) of one shard; see the module docstring."""
    if mapping not in SUCCESS_MAPPINGS:
        raise CollectError(f"success_mapping {mapping!r} is not one of {SUCCESS_MAPPINGS}")
    n, k = record["num_rollouts"], record["num_steps"]
    v_slm = np.array([_value(record["mc_after_slm"][j], n, record["slm_finished"][j]) for j in range(k)])
    v_llm = np.array([_value(record["mc_after_llm"][j], n, record["llm_finished"][j]) for j in range(k)])
    v_slm[-1] = 1.0 if record["reference_correct"] else 0.0  # the trace's path ends here (also when truncated)
    v_ctx = np.concatenate([[_value(record["mc_prompt"], n, False)], v_slm[:-1]])
    if mapping == "value":
        return v_slm, v_llm, v_ctx, v_slm, v_llm
    denom = np.maximum(v_ctx, 1e-12)  # > 0 anyway: only the last reference step can hold an exact 0
    return np.minimum(1.0, v_slm / denom), np.minimum(1.0, v_llm / denom), v_ctx, v_slm, v_llm


def read_config(out_dir: str) -> dict[str, Any]:
    """The settings pinned in <out_dir>/collect_config.json by `collect`."""
    path = os.path.join(out_dir, "collect_config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise CollectError(f"{path}: cannot read the collection settings ({exc})") from exc


def assemble(out_dir: str, output: str, *, success_mapping: str = "conditional", standardize_features: bool = True,
             notes: str = "") -> TraceData:
    """Assemble all shards of `out_dir` (in problem order) into one trace v1 file with provenance 'collected'.

    Dataset name and model architectures come from <out_dir>/collect_config.json.
    """
    pinned = read_config(out_dir)
    dataset, slm_arch, llm_arch, prm_arch = pinned["dataset"], pinned["slm"], pinned["llm"], pinned["prm"]
    shard_dir = os.path.join(out_dir, "shards")
    names = sorted(f for f in os.listdir(shard_dir) if f.startswith("p") and f.endswith(".json")) \
        if os.path.isdir(shard_dir) else []
    if not names:
        raise CollectError(f"{shard_dir}: no shards to assemble")
    records = [_read_shard(os.path.join(shard_dir, f)) for f in names]
    n, k_max = len(records), max(r["num_steps"] for r in records)
    f_dim = len(records[0]["features"][0])
    arrays = {name: np.zeros((n, k_max), np.int32) for name in ("slm_step_tokens", "llm_step_tokens")}
    arrays.update({name: np.zeros((n, k_max), np.float32) for name in (
        "slm_step_success", "llm_step_success", "prm_context", "prm_after_slm", "prm_after_llm")})
    features = np.zeros((n, k_max, f_dim), np.float64)
    query_tokens = np.zeros(n, np.int32)
    num_steps = np.zeros(n, np.int32)
    for i, rec in enumerate(records):
        k = rec["num_steps"]
        num_steps[i] = k
        query_tokens[i] = max(1, int(rec["query_tokens"]))
        arrays["slm_step_tokens"][i, :k] = np.maximum(1, rec["slm_tokens"])
        arrays["llm_step_tokens"][i, :k] = np.maximum(1, rec["llm_tokens"])
        p_s, p_l, v_ctx, v_s, v_l = shard_success(rec, success_mapping)
        arrays["slm_step_success"][i, :k] = p_s
        arrays["llm_step_success"][i, :k] = p_l
        if rec.get("prm_context"):
            arrays["prm_context"][i, :k] = np.clip(rec["prm_context"], 0.0, 1.0)
            arrays["prm_after_slm"][i, :k] = np.clip(rec["prm_after_slm"], 0.0, 1.0)
            arrays["prm_after_llm"][i, :k] = np.clip(rec["prm_after_llm"], 0.0, 1.0)
        else:
            arrays["prm_context"][i, :k], arrays["prm_after_slm"][i, :k], arrays["prm_after_llm"][i, :k] = v_ctx, v_s, v_l
        features[i, :k] = np.asarray(rec["features"], np.float64)
    mask = np.arange(k_max)[None, :] < num_steps[:, None]
    if standardize_features:
        valid = features[mask]
        mean, std = valid.mean(axis=0), valid.std(axis=0)
        features = np.where(mask[..., None], (features - mean) / np.where(std > 0, std, 1.0), 0.0)
    metadata = {
        "dataset": dataset,
        "slm": slm_arch,
        "llm": llm_arch,
        "prm": prm_arch,
        "provenance": "collected",
        "generator_seed": None,
        "calibration_targets": None,
        "notes": notes or f"collected by prada_jax.collect.collector; success_mapping={success_mapping}",
        "collection": {
            "success_mapping": success_mapping,
            "num_rollouts": records[0]["num_rollouts"],
            "reference_accuracy": float(np.mean([r["reference_correct"] for r in records])),
            "truncated_paths": int(sum(not r["finished"] for r in records)),
            "problem_ids": [r["pid"] for r in records],
        },
    }
    trace = TraceData(query_tokens=query_tokens, num_steps=num_steps, features=features.astype(np.float32),
                      metadata=metadata, **arrays)
    save_trace(output, trace)
    log.info("wrote %s: %d problems, K=%d, F=%d, expected accuracy slm=%.3f llm=%.3f, greedy path accuracy %.3f",
             output, n, k_max, f_dim, trace.expected_accuracy("slm"), trace.expected_accuracy("llm"),
             metadata["collection"]["reference_accuracy"])
    return trace


def arch_dict(name: str, hidden: int, layers: int) -> dict[str, Any]:
    """Metadata entry {name, hidden, layers} (as constants.ModelArch.to_dict)."""
    return C.ModelArch(name, int(hidden), int(layers)).to_dict()


# ---------------------------------------------------------------- Hugging Face backend (needs the 'collect' extra)


def _require_torch():
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise CollectError("real-model collection needs torch and transformers: pip install 'prada-jax[collect]'") from exc
    return torch, transformers


def build_prompt(tokenizer, question: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """Chat prompt text: the tokenizer's chat template when it has one, else PLAIN_TEMPLATE."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(question=question, system=system_prompt)


class HFGenerator:
    """TextGenerator over a transformers causal LM: batched (left-padded) greedy or sampled generation that stops
    each sequence at the first blank line or EOS; `batch_size` = sequences per `generate` call. Plain greedy /
    temperature + top_p sampling: the checkpoint's generation_config defaults (top_k, repetition penalty) are
    overridden."""

    def __init__(self, model, tokenizer, *, name: str | None = None, device: str = "cpu", batch_size: int = 8,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT):
        torch, _ = _require_torch()
        self._torch = torch
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.system_prompt = system_prompt
        config = model.config
        self.name = name or getattr(config, "_name_or_path", "") or type(model).__name__
        self.hidden = int(config.hidden_size)
        self.layers = int(config.num_hidden_layers)
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise CollectError(f"{self.name}: tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        eos = set()
        for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source is not None:
                eos.update(int(x) for x in source)
        if not eos:
            raise CollectError(f"{self.name}: no eos_token_id in the tokenizer or generation config")
        self.eos_ids = eos

    def prompt(self, question: str) -> str:
        return build_prompt(self.tokenizer, question, self.system_prompt)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _finish(self, new_ids: list[int], stop_at_step: bool) -> Generation:
        finished = False
        for j, tok in enumerate(new_ids):
            if tok in self.eos_ids:
                new_ids, finished = new_ids[: j + 1], True
                break
        text = self._decode(new_ids)
        if stop_at_step and STEP_DELIMITER in text:
            lo, hi = 1, len(new_ids)  # smallest prefix whose text holds the delimiter
            while lo < hi:
                mid = (lo + hi) // 2
                if STEP_DELIMITER in self._decode(new_ids[:mid]):
                    hi = mid
                else:
                    lo = mid + 1
            text = self._decode(new_ids[:lo])
            text = text[: text.index(STEP_DELIMITER) + len(STEP_DELIMITER)]
            new_ids, finished = new_ids[:lo], False
        return Generation(text=text, num_tokens=max(1, len(new_ids)), finished=finished)

    def generate(self, texts, *, max_new_tokens, stop_at_step, sample, temperature=1.0, top_p=1.0,
                 return_hidden=False):
        torch = self._torch
        gens: list[Generation] = []
        hiddens = []
        stopper = _step_stopper(self.tokenizer) if stop_at_step else None
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            self.tokenizer.padding_side = "left"
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                          eos_token_id=sorted(self.eos_ids), return_dict_in_generate=True,
                          output_hidden_states=return_hidden, repetition_penalty=1.0)
            if sample:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if stopper is not None:
                kwargs["stopping_criteria"] = [stopper(enc["input_ids"].shape[1])]
            with torch.no_grad():
                out = self.model.generate(**enc, **kwargs)
            prompt_len = enc["input_ids"].shape[1]
            for row in out.sequences[:, prompt_len:].tolist():
                gens.append(self._finish(row, stop_at_step))
            if return_hidden:
                hiddens.append(out.hidden_states[0][-1][:, -1, :].float().cpu().numpy())
        return gens, (np.concatenate(hiddens, axis=0) if return_hidden else None)


def _step_stopper(tokenizer):
    """StoppingCriteria factory: a sequence is done once its last new tokens contain the step delimiter."""
    _, transformers = _require_torch()
    import torch

    class StepStop(transformers.StoppingCriteria):
        def __init__(self, prompt_len: int):
            self.prompt_len = prompt_len

        def __call__(self, input_ids, scores, **kwargs):
            tails = input_ids[:, max(self.prompt_len, input_ids.shape[1] - 4):].tolist()
            done = [STEP_DELIMITER in tokenizer.decode(t, skip_special_tokens=True) for t in tails]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StepStop


class ValueHeadPRM:
    """Skywork-o1-Open-PRM-style step reward: backbone (transformers AutoModel) + linear value head on the last
    hidden state, score = sigmoid(value) at the last step-separator token. Input: bos + question + "\\n", then each
    step (its trailing blank line stripped) followed by `step_token`."""

    def __init__(self, backbone, value_head, tokenizer, *, name: str = "value-head-prm", device: str = "cpu",
                 step_token: str = "\n"):
        torch, _ = _require_torch()
        self._torch = torch
        self.backbone = backbone.to(device).eval()
        self.value_head = value_head.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.step_token = step_token
        self.name = name
        self.hidden = int(backbone.config.hidden_size)
        self.layers = int(backbone.config.num_hidden_layers)

    @classmethod
    def from_pretrained(cls, path: str, *, device: str = "cpu", dtype: str = "float32", step_token: str = "\n"):
        """Load a backbone with AutoModel and the value head from `v_head.summary.{weight,bias}` in the
        checkpoint's safetensors files (the Skywork PRM layout)."""
        torch, transformers = _require_torch()
        from safetensors import safe_open

        backbone = transformers.AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        head = torch.nn.Linear(int(backbone.config.hidden_size), 1)
        found = {}
        files = [f for f in os.listdir(path) if f.endswith(".safetensors")] if os.path.isdir(path) else []
        for file in files:
            with safe_open(os.path.join(path, file), framework="pt") as handle:
                for key in handle.keys():
                    if key.endswith("v_head.summary.weight"):
                        found["weight"] = handle.get_tensor(key)
                    elif key.endswith("v_head.summary.bias"):
                        found["bias"] = handle.get_tensor(key)
        if set(found) != {"weight", "bias"}:
            raise CollectError(f"{path}: no 'v_head.summary.weight'/'v_head.summary.bias' in its *.safetensors "
                               "(expected a local Skywork-style PRM checkpoint directory)")
        head.load_state_dict({k: v.float() for k, v in found.items()})
        return cls(backbone, head, tokenizer, name=os.path.basename(os.path.normpath(path)), device=device,
                   step_token=step_token)

    def _ids(self, question: str, steps: Sequence[str]) -> list[int]:
        bos = self.tokenizer.bos_token or ""
        ids = self.tokenizer.encode(bos + question + "\n", add_special_tokens=False)
        step_id = self.tokenizer.encode(self.step_token, add_special_tokens=False)[-1]
        for step in steps:
            text = step.strip("\n")
            if text:
                ids += self.tokenizer.encode(text, add_special_tokens=False) + [step_id]
        return ids

    def __call__(self, question: str, steps: Sequence[str]) -> float:
        torch = self._torch
        ids = torch.tensor([self._ids(question, steps)], device=self.device)
        with torch.no_grad():
            hidden = self.backbone(input_ids=ids).last_hidden_state[:, -1, :]
            value = self.value_head(hidden.to(self.value_head.weight.dtype))
        return float(torch.sigmoid(value)[0, 0])


def load_hf_generator(path: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
                      system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> HFGenerator:
    """HFGenerator from a local or hub model directory (AutoModelForCausalLM + AutoTokenizer)."""
    torch, transformers = _require_torch()
    if not hasattr(torch, dtype):
        raise CollectError(f"--dtype {dtype!r} is not a torch dtype")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return HFGenerator(model, tokenizer, name=os.path.basename(os.path.normpath(path)), device=device,
                       batch_size=batch_size, system_prompt=system_prompt)


def seed_torch(seed: int) -> None:
    """Seed torch (CPU and CUDA) before each problem, so a resumed run reproduces the problem's samples."""
    torch, _ = _require_torch()
    torch.manual_seed(seed)
