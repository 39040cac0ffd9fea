"""Synthetic trace generator: calibration targets, determinism, PRM/feature models, shipped traces."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prada_jax import constants as C
from prada_jax import synth
from prada_jax.calibration import PUBLISHED_ACCURACY
from prada_jax.calibration.refit import load_stats
from prada_jax.traces import load_trace, save_trace, validate_trace

TRACE_DIR = pathlib.Path(__file__).resolve().parents[1] / "traces"
SHIPPED_SIZES = {"gsm8k": 1319, "math500": 500, "gaokao2023en": 385, "mmlu_stem": 3018}


@pytest.fixture(scope="module")
def small_traces():
    return {d: synth.generate_trace(d, seed=3, num_problems=300) for d in C.DATASETS}


def test_hits_published_accuracy_targets(small_traces):
    for dataset, trace in small_traces.items():
        validate_trace(trace, dataset)
        target = PUBLISHED_ACCURACY[dataset]
        # requirement is +-1 point; bisection on the sample gets far closer (float32 storage only)
        assert abs(trace.expected_accuracy("slm") - target["slm_accuracy"]) < 2e-3, dataset
        assert abs(trace.expected_accuracy("llm") - target["llm_accuracy"]) < 2e-3, dataset
        assert trace.metadata["calibration_targets"] == target


def test_llm_dominates_and_gain_is_concentrated(small_traces):
    for dataset, trace in small_traces.items():
        mask = trace.step_mask
        gain = (trace.llm_step_success - trace.slm_step_success)[mask]
        assert np.all(gain >= 0), dataset
        if dataset != "gaokao2023en":  # gaokao: published gap is only 1.3 points
            top = np.sort(gain)[::-1][: int(0.2 * gain.size)].sum() / gain.sum()
            assert top > 0.6, (dataset, top)  # only some steps need the LLM
            assert np.mean(gain > 0.05) < 0.5, dataset


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = synth.generate_trace("math500", seed=7, num_problems=40)
    b = synth.generate_trace("math500", seed=7, num_problems=40)
    c = synth.generate_trace("math500", seed=8, num_problems=40)
    for name, value in a.arrays().items():
        np.testing.assert_array_equal(value, getattr(b, name))
    save_trace(tmp_path / "a.npz", a)
    save_trace(tmp_path / "b.npz", b)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert not np.array_equal(a.query_tokens, c.query_tokens)
    width = min(a.max_steps, c.max_steps)
    assert not np.array_equal(a.slm_step_success[:, :width], c.slm_step_success[:, :width])
    assert a.metadata["generator_seed"] == 7 and c.metadata["generator_seed"] == 8


def test_solve_offset_hand_values():
    mask = np.ones((1, 2), bool)
    # sigmoid(a - 2*1)^2 = 0.25  <=>  a = 2
    assert synth.solve_offset(np.ones((1, 2)), mask, 0.25, slope=2.0) == pytest.approx(2.0, abs=1e-9)
    # one step, d = 0: sigmoid(a) = 0.8  <=>  a = log 4
    assert synth.solve_offset(np.zeros((1, 1)), np.ones((1, 1), bool), 0.8) == pytest.approx(np.log(4.0), abs=1e-9)
    # padding does not count: second step masked out
    assert synth.solve_offset(np.zeros((1, 2)), np.array([[True, False]]), 0.8) == pytest.approx(np.log(4.0), abs=1e-9)
    with pytest.raises(synth.SynthError, match="target"):
        synth.solve_offset(np.zeros((1, 1)), np.ones((1, 1), bool), 1.0)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.02, 0.98), st.integers(0, 2**31 - 1), st.floats(0.5, 3.0))
def test_solve_offset_hits_any_target(target, seed, slope):
    rng = np.random.default_rng(seed)
    difficulty = rng.exponential(1.0, (20, 6)) + rng.standard_normal((20, 1))
    mask = np.arange(6)[None, :] < rng.integers(1, 7, 20)[:, None]
    a = synth.solve_offset(difficulty, mask, target, slope)
    assert synth.expected_accuracy(synth.sigmoid(a - slope * difficulty), mask) == pytest.approx(target, abs=1e-6)


def test_future_value_hand_values():
    p = np.array([[0.5, 0.8, 0.9], [0.5, 0.6, 0.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    np.testing.assert_allclose(synth.future_value(p, mask), [[0.36, 0.72, 0.9], [0.3, 0.6, 1.0]])


def test_prm_scores_are_noisy_values_with_stated_sigma():
    trace = synth.generate_trace("gsm8k", seed=1, num_problems=2000)
    mask = trace.step_mask
    value = synth.future_value(trace.slm_step_success.astype(np.float64), mask)
    nxt = np.concatenate([value[:, 1:], np.ones((trace.num_problems, 1))], axis=1)
    total = np.hypot(synth.PRM_SHARED_SIGMA, synth.PRM_SCORE_SIGMA)
    residuals = {}
    for name, true in [("prm_context", value), ("prm_after_slm", trace.slm_step_success * nxt),
                       ("prm_after_llm", trace.llm_step_success * nxt)]:
        score = getattr(trace, name).astype(np.float64)
        keep = mask & (true > 0.02) & (true < 0.98)  # away from float32 saturation of the sigmoid
        assert keep.sum() > 500
        res = synth.logit(score) - synth.logit(true)
        residuals[name] = np.where(keep, res, np.nan)
        assert abs(np.nanmean(residuals[name])) < 0.1, name
        assert np.nanstd(residuals[name]) == pytest.approx(total, rel=0.1), name
    both = ~np.isnan(residuals["prm_after_slm"]) & ~np.isnan(residuals["prm_after_llm"])
    cov = np.cov(residuals["prm_after_slm"][both], residuals["prm_after_llm"][both])[0, 1]
    assert cov == pytest.approx(synth.PRM_SHARED_SIGMA**2, abs=0.06)  # shared component


def test_weighted_auroc_hand_value_and_monte_carlo():
    # errors: item0 w=.5; on track: item0 w=.5 (tie), item1 w=1 (higher) -> .5(1 + .5*.5)/(.5*1.5) = 5/6
    assert synth.weighted_error_auroc([0.2, 0.8], [0.5, 1.0]) == pytest.approx(5.0 / 6.0)
    assert synth.weighted_error_auroc([0.8, 0.2], [1.0, 0.5]) == pytest.approx(5.0 / 6.0)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.3, 1.0, 400)
    score = p + 0.2 * rng.standard_normal(400)
    exact = synth.weighted_error_auroc(score, p)
    mc = synth.monte_carlo_error_auroc(score, p, draws=400, rng=np.random.default_rng(1))
    assert mc == pytest.approx(exact, abs=0.01)
    assert 0.6 < exact < 0.95
    assert synth.weighted_error_auroc(p, p) > exact  # the true probability ranks best


def test_features_carry_imperfect_signal():
    trace = synth.generate_trace("mmlu_stem", seed=2, num_problems=1500)
    mask = trace.step_mask
    x = trace.features[mask].astype(np.float64)
    gain = (trace.llm_step_success - trace.slm_step_success)[mask].astype(np.float64)
    half = x.shape[0] // 2
    design = np.c_[x, np.ones(x.shape[0])]
    coef = np.linalg.lstsq(design[:half], gain[:half], rcond=None)[0]
    held_out = np.corrcoef(design[half:] @ coef, gain[half:])[0, 1]
    assert 0.4 < held_out < 0.95, held_out
    single = [abs(np.corrcoef(x[:, j], gain)[0, 1]) for j in range(x.shape[1])]
    assert max(single) < 0.8
    assert np.all(np.abs(x.mean(axis=0)) < 2.5) and np.all(x.std(axis=0) < 2.5)  # reasonable scale
    assert np.all(trace.features[~mask] == 0)


def test_lengths_follow_fitted_statistics():
    stats = load_stats()
    for dataset in ("gsm8k", "math500"):
        trace = synth.generate_trace(dataset, seed=4, num_problems=3000)
        ds = stats["datasets"][dataset]
        summary = stats["step_sources"][ds["step_source"]]["summary"]
        mask = trace.step_mask
        assert trace.num_steps.mean() == pytest.approx(summary["mean_steps"], rel=0.05)
        assert trace.slm_step_tokens[mask].mean() == pytest.approx(summary["mean_step_tokens"], rel=0.08)
        assert trace.llm_step_tokens[mask].mean() == pytest.approx(summary["mean_step_tokens"], rel=0.08)
        assert trace.query_tokens.mean() == pytest.approx(ds["summary"]["mean_query_tokens"], rel=0.05)
        ratio = np.log(trace.llm_step_tokens[mask] / trace.slm_step_tokens[mask])
        assert 0.15 < ratio.std() < 0.4


def test_bad_input_is_named():
    with pytest.raises(synth.SynthError, match="dataset"):
        synth.generate_trace("nope", seed=0, num_problems=5)
    with pytest.raises(synth.SynthError, match="feature_dim"):
        synth.generate_trace("gsm8k", seed=0, num_problems=5, feature_dim=3)
    with pytest.raises(synth.SynthError, match="num_problems"):
        synth.generate_trace("gsm8k", seed=0, num_problems=0)
    with pytest.raises(synth.SynthError, match="num_steps_counts"):
        stats = load_stats()
        stats["step_sources"]["processbench_gsm8k"]["num_steps_counts"] = []
        synth.generate_trace("gsm8k", seed=0, num_problems=5, stats=stats)


def test_shipped_traces_load():
    total = 0
    for dataset, size in SHIPPED_SIZES.items():
        path = TRACE_DIR / f"{dataset}.npz"
        trace = load_trace(path)
        total += os.path.getsize(path)
        assert trace.num_problems == size and trace.dataset == dataset
        assert trace.metadata["provenance"] == "synthetic" and trace.metadata["generator_seed"] == 0
        target = PUBLISHED_ACCURACY[dataset]
        assert abs(trace.expected_accuracy("slm") - target["slm_accuracy"]) < 2e-3
        assert abs(trace.expected_accuracy("llm") - target["llm_accuracy"]) < 2e-3
        assert trace.feature_dim == synth.DEFAULT_FEATURE_DIM
    assert total < 10e6


# Known stale until the lead regenerates traces/*.npz (and retrains checkpoints) from the real-token refit of
# fitted_stats.json; strict, so this fails (XPASS) once they match again: then delete the marker.
def test_shipped_traces_match_regeneration(tmp_path):
    for dataset in SHIPPED_SIZES:
        path = TRACE_DIR / f"{dataset}.npz"
        regenerated = tmp_path / f"{dataset}.npz"
        save_trace(regenerated, synth.generate_trace(dataset, seed=0))
        assert regenerated.read_bytes() == path.read_bytes(), f"{path} is stale: rerun experiments/make_traces.py"


def test_prompt_overhead_adds_query_tokens_and_changes_nothing_else():
    base = synth.generate_trace("mmlu_stem", seed=3, num_problems=40, prompt_overhead_tokens=0)
    more = synth.generate_trace("mmlu_stem", seed=3, num_problems=40, prompt_overhead_tokens=50)
    np.testing.assert_array_equal(more.query_tokens - base.query_tokens, 50)
    for field in ("num_steps", "slm_step_tokens", "llm_step_tokens", "slm_step_success", "llm_step_success", "prm_after_slm"):
        np.testing.assert_array_equal(getattr(more, field), getattr(base, field))
    assert more.metadata["generator"]["prompt_overhead_tokens"] == 50
    with pytest.raises(synth.SynthError, match="prompt_overhead_tokens"):
        synth.generate_trace("gsm8k", seed=0, num_problems=5, prompt_overhead_tokens=-1)
