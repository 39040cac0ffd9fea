"""Synthetic trace generator: calibrated SLM/LLM/PRM traces (trace format v1), deterministic by seed.

Pipeline for one dataset (docs/traces.md has the full story and the numbers):
1. Lengths from `calibration/fitted_stats.json` (fitted on real data by `calibration/refit.py`):
   steps per problem from the empirical ProcessBench pmf, step lengths from the fitted log-normal
   position / problem / step model, query lengths from benchmark quantiles plus the chat-template tokens,
   all in tokens as counted by the refit (assumptions.token_counter: the Qwen2.5 tokenizer, or the
   chars-per-token estimate). LLM step tokens = SLM step length x a mean-one log-normal ratio.
2. Quality model (design notes section 3): latent step difficulty d[n,k] = SD_PROBLEM h_n + g[n,k],
   h_n ~ N(0, 1) (problem hardness), g ~ Exp(1) (most steps easy, a few hard);
   p_model[n,k] = sigmoid(a_model - SLOPE d[n,k]). a_S and a_L are solved by bisection so that the
   expected all-SLM / all-LLM accuracy, mean_n prod_k p, equals the published accuracy. Since the LLM
   target is higher, a_L > a_S and p_L >= p_S on every step; the gap is large only on hard steps.
3. PRM scores: noisy (logit-space Gaussian) estimates of the on-track value of a context, i.e. the
   probability that the task ends correct when the SLM continues from there:
   V[k] = prod_{j>=k} p_S[j]; prm_context[k] ~ V[k], prm_after_slm[k] ~ p_S[k] V[k+1],
   prm_after_llm[k] ~ p_L[k] V[k+1]. Noise: a shared per-(problem, step) term (the PRM misjudging the
   context) plus an independent term per score.
4. Features [N, K, F]: 3 context features (log context length, step index, log query length) and F-3
   noisy random projections of the latent (difficulty, LLM gain, problem hardness), standardised.
Only NumPy here: generation is a one-off, host-side job.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from prada_jax import constants as C
from prada_jax.calibration import PUBLISHED_ACCURACY, prompt_overhead
from prada_jax.calibration.refit import POSITIONS, load_stats
from prada_jax.traces import TraceData, reference_context

# ---- Quality model (model choices, recorded in each trace's metadata) ----
DIFFICULTY_PROBLEM_SD = 1.0  # sd of the per-problem hardness term of d
SUCCESS_SLOPE = 2.0  # b in p = sigmoid(a - b d)
# ---- Tokens ----
LLM_TOKEN_LOG_SD = 0.25  # log-ratio sd of LLM vs SLM step length (mean ratio 1)
# ---- PRM noise (logit space) ----
PRM_SHARED_SIGMA = 0.5  # per (problem, step), common to prm_context / after_slm / after_llm
PRM_SCORE_SIGMA = 0.5  # independent per score
PRM_LOGIT_CLIP = 1e-6  # values are clipped to [eps, 1 - eps] before the logit
# ---- Features ----
DEFAULT_FEATURE_DIM = 16
NUM_CONTEXT_FEATURES = 3
FEATURE_NOISE_SD = 2.0  # noise sd of each latent projection (latents and projections have unit scale)
CONTEXT_LOG_CENTER = float(np.log(256.0))  # log tokens centring for the length features
STEP_INDEX_SCALE = 8.0  # step feature = k / 8
BISECTION_ITERS = 100
BISECTION_BRACKET = (-40.0, 60.0)


class SynthError(ValueError):
    """Bad generator input; the message names the argument or statistics field."""


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def logit(p):
    p = np.clip(p, PRM_LOGIT_CLIP, 1.0 - PRM_LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _rng(seed: int, dataset: str) -> np.random.Generator:
    """One stream per (seed, dataset): datasets made with the same seed stay independent."""
    return np.random.default_rng([int(seed), C.DATASETS.index(dataset)])


def expected_accuracy(probs: np.ndarray, mask: np.ndarray) -> float:
    """mean_n prod_k p[n, k] over real steps (the latent quality model)."""
    return float(np.mean(np.prod(np.where(mask, probs, 1.0), axis=1)))


def solve_offset(difficulty: np.ndarray, mask: np.ndarray, target: float, slope: float = SUCCESS_SLOPE) -> float:
    """Bisection for a with mean_n prod_k sigmoid(a - slope d) = target (monotone increasing in a)."""
    if not 0.0 < target < 1.0:
        raise SynthError(f"calibration target must be in (0, 1), got {target}")
    lo, hi = BISECTION_BRACKET
    for _ in range(BISECTION_ITERS):
        mid = 0.5 * (lo + hi)
        if expected_accuracy(sigmoid(mid - slope * difficulty), mask) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def future_value(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """V[n, k] = prod_{j >= k, real} p[n, j]; V = 1 on padding (reverse cumulative product)."""
    p = np.where(mask, probs, 1.0)
    return np.cumprod(p[:, ::-1], axis=1)[:, ::-1]


def weighted_error_auroc(score: np.ndarray, p_ok: np.ndarray) -> float:
    """AUROC of `score` for detecting an off-track step, in expectation over the Bernoulli outcomes.

    A step is off track with probability 1 - p_ok; a lower score should flag it. Returns
    P(score_err < score_ok) + 0.5 P(tie) with each item weighted (1 - p_ok) as an error and p_ok as on
    track: the limit of the pooled Monte-Carlo AUROC over many outcome draws.
    """
    score = np.asarray(score, np.float64).ravel()
    w_err = 1.0 - np.asarray(p_ok, np.float64).ravel()
    w_ok = 1.0 - w_err
    if w_err.sum() <= 0 or w_ok.sum() <= 0:
        raise SynthError("weighted_error_auroc: needs some weight on both errors and on-track steps")
    uniq, inv = np.unique(score, return_inverse=True)
    ok_by = np.bincount(inv, weights=w_ok, minlength=uniq.size)
    err_by = np.bincount(inv, weights=w_err, minlength=uniq.size)
    ok_above = np.cumsum(ok_by[::-1])[::-1] - ok_by  # on-track weight with a strictly higher score
    total = np.sum(err_by * (ok_above + 0.5 * ok_by))
    return float(total / (w_err.sum() * w_ok.sum()))


def monte_carlo_error_auroc(score: np.ndarray, p_ok: np.ndarray, draws: int, rng: np.random.Generator) -> float:
    """Pooled AUROC over `draws` Bernoulli outcome draws (off track iff u >= p_ok), via ranks."""
    score = np.asarray(score, np.float64).ravel()
    p_ok = np.asarray(p_ok, np.float64).ravel()
    err = rng.random((draws, score.size)) >= p_ok[None, :]
    s = np.broadcast_to(score, err.shape)[err]
    t = np.broadcast_to(score, err.shape)[~err]
    both = np.concatenate([s, t])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(both.size)
    sorted_both = both[order]
    uniq, start, counts = np.unique(sorted_both, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    # U statistic for "error score < on-track score": count pairs where the on-track item ranks higher.
    rank_ok = ranks[s.size:].sum()
    u_ok = rank_ok - t.size * (t.size + 1) / 2.0
    return float(u_ok / (s.size * t.size))


def _sample_num_steps(counts: list[int], n: int, rng: np.random.Generator) -> np.ndarray:
    pmf = np.asarray(counts, np.float64)
    if pmf.ndim != 1 or pmf.size == 0 or np.any(pmf < 0) or pmf.sum() <= 0:
        raise SynthError("fitted stats field 'num_steps_counts' must be a non-empty list of counts >= 0")
    return (rng.choice(pmf.size, size=n, p=pmf / pmf.sum()) + 1).astype(np.int32)


def _sample_step_lengths(src: dict, num_steps: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Real-valued step lengths in tokens [N, K] from the fitted log-normal model (0 on padding)."""
    fit = src["step_log_tokens"]
    n = num_steps.size
    k = np.arange(width)[None, :]
    last = num_steps[:, None] - 1
    pos = np.where(k == 0, 0, np.where(k == last, 2, 1))
    pos = np.where(num_steps[:, None] == 1, 3, pos)
    alpha = np.array([fit[f"alpha_{p}"] for p in POSITIONS])[pos]
    mean = alpha + fit["slope_log_num_steps"] * (np.log(num_steps)[:, None] - fit["mean_log_num_steps"])
    log_len = mean + fit["sd_problem"] * rng.standard_normal((n, 1)) + fit["sd_step"] * rng.standard_normal((n, width))
    length = np.clip(np.exp(log_len), src["min_step_tokens"], src["max_step_tokens"])
    return np.where(k < num_steps[:, None], length, 0.0)


def _tokens(length: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(length), 1).astype(np.int32)


def _standardise(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v = x[mask]
    sd = v.std()
    return (x - v.mean()) / (sd if sd > 0 else 1.0)


def _features(latent: np.ndarray, context: np.ndarray, query: np.ndarray, mask: np.ndarray, dim: int, rng) -> np.ndarray:
    """[N, K, dim]: 3 context features + (dim - 3) noisy unit-norm projections of the standardised latents."""
    n, width = mask.shape
    k = np.broadcast_to(np.arange(width, dtype=np.float64)[None, :], (n, width))
    ctx = [np.log(np.maximum(context, 1)) - CONTEXT_LOG_CENTER, k / STEP_INDEX_SCALE,
           np.broadcast_to(np.log(query)[:, None] - CONTEXT_LOG_CENTER, (n, width))]
    z = np.stack([_standardise(latent[..., j], mask) for j in range(latent.shape[-1])], axis=-1)
    w = rng.standard_normal((dim - NUM_CONTEXT_FEATURES, latent.shape[-1]))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    proj = z @ w.T + FEATURE_NOISE_SD * rng.standard_normal((n, width, dim - NUM_CONTEXT_FEATURES))
    proj /= np.sqrt(1.0 + FEATURE_NOISE_SD**2)  # unit variance per projection
    feats = np.concatenate([np.stack(ctx, axis=-1), proj], axis=-1)
    return np.where(mask[..., None], feats, 0.0).astype(np.float32)


def generate_trace(
    dataset: str,
    seed: int,
    num_problems: int | None = None,
    feature_dim: int = DEFAULT_FEATURE_DIM,
    stats: dict[str, Any] | None = None,
    targets: dict[str, float] | None = None,
    prompt_overhead_tokens: int | None = None,
) -> TraceData:
    """Generate one calibrated synthetic trace (format v1). Same (dataset, seed, args) -> identical arrays.

    `prompt_overhead_tokens`: extra prompt tokens per query beyond question + chat template (few-shot exemplars
    or instructions the paper's runs used; fitted to the paper's All-SLM processing delay by
    experiments/fit_paper.py). Default: the dataset's value in `prompt_overhead.json` (0 when absent)."""
    if dataset not in C.DATASETS:
        raise SynthError(f"dataset {dataset!r} is not one of {C.DATASETS}")
    if feature_dim <= NUM_CONTEXT_FEATURES:
        raise SynthError(f"feature_dim must be > {NUM_CONTEXT_FEATURES}, got {feature_dim}")
    stats = load_stats() if stats is None else stats
    targets = PUBLISHED_ACCURACY[dataset] if targets is None else targets
    if not targets["llm_accuracy"] >= targets["slm_accuracy"]:
        raise SynthError(f"targets: llm_accuracy {targets['llm_accuracy']} < slm_accuracy {targets['slm_accuracy']}")
    try:
        ds = stats["datasets"][dataset]
        src = stats["step_sources"][ds["step_source"]]
        counter = str(stats["assumptions"]["token_counter"])
        template = int(stats["assumptions"]["prompt_template_tokens"])
        quantiles = np.asarray(ds["query_log_tokens_quantiles"], np.float64)
    except KeyError as exc:
        raise SynthError(f"fitted stats: field {exc.args[0]!r} missing for dataset {dataset!r}") from exc
    n = int(ds["num_problems"] if num_problems is None else num_problems)
    if n < 1:
        raise SynthError(f"num_problems must be >= 1, got {n}")
    rng = _rng(seed, dataset)

    # 1. lengths
    num_steps = _sample_num_steps(src["num_steps_counts"], n, rng)
    width = int(num_steps.max())
    mask = np.arange(width)[None, :] < num_steps[:, None]
    q_len = np.exp(np.interp(rng.random(n), np.linspace(0.0, 1.0, quantiles.size), quantiles))
    overhead = prompt_overhead(dataset) if prompt_overhead_tokens is None else int(prompt_overhead_tokens)
    if overhead < 0:
        raise SynthError(f"prompt_overhead_tokens must be >= 0, got {overhead} for {dataset}")
    query = (_tokens(q_len) + template + overhead).astype(np.int32)
    slm_len = _sample_step_lengths(src, num_steps, width, rng)
    llm_len = slm_len * np.exp(LLM_TOKEN_LOG_SD * rng.standard_normal((n, width)) - 0.5 * LLM_TOKEN_LOG_SD**2)
    slm_tokens = np.where(mask, _tokens(slm_len), 0).astype(np.int32)
    llm_tokens = np.where(mask, _tokens(llm_len), 0).astype(np.int32)

    # 2. quality model
    hardness = rng.standard_normal(n)
    difficulty = DIFFICULTY_PROBLEM_SD * hardness[:, None] + rng.exponential(1.0, (n, width))
    a_slm = solve_offset(difficulty, mask, targets["slm_accuracy"])
    a_llm = solve_offset(difficulty, mask, targets["llm_accuracy"])
    p_slm = np.where(mask, sigmoid(a_slm - SUCCESS_SLOPE * difficulty), 0.0).astype(np.float32)
    p_llm = np.where(mask, sigmoid(a_llm - SUCCESS_SLOPE * difficulty), 0.0).astype(np.float32)
    p_llm = np.maximum(p_llm, p_slm)  # a_L >= a_S already; guards float32 rounding only

    # 3. PRM scores (from the float32 probabilities actually stored)
    value = future_value(p_slm.astype(np.float64), mask)
    value_next = np.concatenate([value[:, 1:], np.ones((n, 1))], axis=1)
    true_scores = (value, p_slm * value_next, p_llm * value_next)
    shared = PRM_SHARED_SIGMA * rng.standard_normal((n, width))
    prm = [
        np.where(mask, sigmoid(logit(v) + shared + PRM_SCORE_SIGMA * rng.standard_normal((n, width))), 0.0).astype(np.float32)
        for v in true_scores
    ]

    # 4. features
    gain = (p_llm - p_slm).astype(np.float64)
    context = reference_context(query, slm_tokens)
    latent = np.stack([difficulty, gain, np.broadcast_to(hardness[:, None], (n, width))], axis=-1)
    features = _features(latent, context, query, mask, feature_dim, rng)

    acc_s, acc_l = expected_accuracy(p_slm, mask), expected_accuracy(p_llm, mask)
    auroc = {
        "prm_after_slm": round(weighted_error_auroc(prm[1][mask], p_slm[mask]), 4),
        "noise_free_after_slm": round(weighted_error_auroc(true_scores[1][mask], p_slm[mask]), 4),
        "oracle_step_success": round(weighted_error_auroc(p_slm[mask], p_slm[mask]), 4),
    }
    true_gain = ((p_llm - p_slm) * value_next)[mask]  # marginal effect of the LLM on P(task correct)
    prm_gain = (prm[2] - prm[1])[mask]
    gain_corr = float(np.corrcoef(prm_gain, true_gain)[0, 1]) if true_gain.std() > 0 and prm_gain.std() > 0 else 0.0
    generator = {
        "name": "prada_jax.synth",
        "step_source": ds["step_source"],
        "token_counter": counter,
        "prompt_template_tokens": template,
        "difficulty_problem_sd": DIFFICULTY_PROBLEM_SD,
        "success_slope": SUCCESS_SLOPE,
        "a_slm": round(a_slm, 6),
        "a_llm": round(a_llm, 6),
        "llm_token_log_sd": LLM_TOKEN_LOG_SD,
        "prm_shared_sigma": PRM_SHARED_SIGMA,
        "prm_score_sigma": PRM_SCORE_SIGMA,
        "feature_noise_sd": FEATURE_NOISE_SD,
        "expected_slm_accuracy": round(acc_s, 6),
        "expected_llm_accuracy": round(acc_l, 6),
        "prm_step_error_auroc": auroc,
        "prm_gain_correlation": round(gain_corr, 4),
    }
    notes = (
        f"Synthetic {dataset} trace (prada_jax.synth, seed {seed}): lengths fitted on real data "
        f"({ds['step_source']} steps, {ds['query_file']} queries, tokens by {counter}); quality model "
        f"p=sigmoid(a-{SUCCESS_SLOPE}d), expected accuracy SLM {acc_s:.4f} LLM {acc_l:.4f}; PRM logit noise "
        f"sigma shared {PRM_SHARED_SIGMA} + own {PRM_SCORE_SIGMA}; PRM step-error AUROC (prm_after_slm) "
        f"{auroc['prm_after_slm']:.3f} (noise-free {auroc['noise_free_after_slm']:.3f}, oracle p_S "
        f"{auroc['oracle_step_success']:.3f}). See docs/traces.md."
    )
    metadata = {
        "dataset": dataset,
        "slm": C.SLM_ARCH.to_dict(),
        "llm": C.LLM_ARCH.to_dict(),
        "prm": C.PRM_TEACHER_ARCH.to_dict(),
        "provenance": "synthetic",
        "generator_seed": int(seed),
        "calibration_targets": {"slm_accuracy": float(targets["slm_accuracy"]), "llm_accuracy": float(targets["llm_accuracy"])},
        "notes": notes,
        "generator": generator,
    }
    if overhead:  # recorded only when used, so traces without one stay byte-identical to earlier generations
        generator["prompt_overhead_tokens"] = overhead
    json.dumps(metadata)  # fail here, not in save_trace, if something is not JSON-serialisable
    return TraceData(
        query_tokens=query,
        num_steps=num_steps,
        slm_step_tokens=slm_tokens,
        llm_step_tokens=llm_tokens,
        slm_step_success=p_slm,
        llm_step_success=p_llm,
        prm_context=prm[0],
        prm_after_slm=prm[1],
        prm_after_llm=prm[2],
        features=features,
        metadata=metadata,
    )
