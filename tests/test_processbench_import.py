"""ProcessBench importer: label -> trace mapping, validation errors, statistics, real files, synthetic comparison."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from prada_jax.collect import processbench as pb
from prada_jax.traces import load_trace

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

RECORDS = [
    {"id": "t-0", "generator": "g", "problem": "What is 12 + 30?", "label": -1, "final_answer_correct": True,
     "steps": ["We add 12 and 30.", "12 + 30 = 42, so the answer is $\\boxed{42}$."]},
    {"id": "t-1", "generator": "g", "problem": "x" * 72, "label": 1, "final_answer_correct": False,
     "steps": ["a" * 36, "b = 7" * 10, "c" * 100, "d" * 3]},
    {"id": "t-2", "generator": "h", "problem": "Compute 3 * 4.", "label": 0, "final_answer_correct": False,
     "steps": ["3 * 4 = 13."]},
]


def _write(tmp_path, records, name="tiny.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def test_mapping_tokens_success_prm(tmp_path):
    cfg = pb.ImportConfig(eps=0.02, p_error=0.05, llm_fix_prob=0.6, feature_dim=12)
    trace = pb.import_file(_write(tmp_path, RECORDS), tmp_path / "out.npz", cfg)
    loaded = load_trace(tmp_path / "out.npz")
    assert loaded.metadata["provenance"] == "imported"
    np.testing.assert_array_equal(loaded.num_steps, [2, 4, 1])
    # ceil(chars / 3.6) per step; the same real lengths for both models; query adds the template overhead
    assert loaded.slm_step_tokens[1].tolist() == [10, math.ceil(50 / 3.6), 28, 1]
    np.testing.assert_array_equal(loaded.slm_step_tokens, loaded.llm_step_tokens)
    assert loaded.query_tokens[1] == 20 + pb.PROMPT_OVERHEAD_TOKENS
    # step success: 1 - eps except at the labelled first wrong step
    np.testing.assert_allclose(loaded.slm_step_success[1], [0.98, 0.05, 0.98, 0.98], rtol=1e-6)
    np.testing.assert_allclose(loaded.llm_step_success[1], [0.99, 0.6, 0.99, 0.99], rtol=1e-6)
    np.testing.assert_allclose(loaded.slm_step_success[2], [0.05, 0, 0, 0], rtol=1e-6)
    # PRM proxy = value of the reference context times the step's success
    np.testing.assert_allclose(loaded.prm_context[1], [1.0, 0.98, 0.98 * 0.05, 0.98 * 0.05 * 0.98], rtol=1e-5)
    np.testing.assert_allclose(loaded.prm_after_slm[1], loaded.prm_context[1] * loaded.slm_step_success[1], rtol=1e-5)
    np.testing.assert_allclose(loaded.prm_after_llm[2, 0], 0.6, rtol=1e-6)
    # expected accuracies follow from the products
    assert loaded.expected_accuracy("slm") == pytest.approx((0.98**2 + 0.98**3 * 0.05 + 0.05) / 3, rel=1e-5)
    # features: 10 statistics then zero padding up to F = 12, padded steps exactly 0
    assert loaded.feature_dim == 12
    assert np.all(loaded.features[..., 10:] == 0) and np.all(loaded.features[2, 1:] == 0)
    assert np.abs(loaded.features[loaded.step_mask][:, :10].mean(axis=0)).max() < 1e-5
    np.testing.assert_array_equal(trace.features, loaded.features)


def test_features_see_only_the_context(tmp_path):
    changed = json.loads(json.dumps(RECORDS))
    changed[1]["steps"][2] = "completely different text with = signs = 123"
    a = pb.import_records(RECORDS, "a")
    b = pb.import_records(changed, "b")
    # rows up to and including step 2 of problem 1 describe contexts that do not contain step 2
    raw_a = [pb._context_stats(RECORDS[1]["problem"], RECORDS[1]["steps"], k) for k in range(3)]
    raw_b = [pb._context_stats(changed[1]["problem"], changed[1]["steps"], k) for k in range(3)]
    assert raw_a == raw_b
    assert pb._context_stats(RECORDS[1]["problem"], RECORDS[1]["steps"], 3) != \
        pb._context_stats(changed[1]["problem"], changed[1]["steps"], 3)
    assert not np.array_equal(a.features, b.features)  # z-scoring is over the file, so the values move


def test_token_counter_max_steps_and_noise(tmp_path):
    cfg = pb.ImportConfig(max_steps=2, prm_noise=1.0, seed=3, prompt_overhead_tokens=0)
    trace = pb.import_records(RECORDS, "t", cfg, token_counter=lambda text: len(text.split()))
    assert trace.max_steps == 2 and trace.num_steps.tolist() == [2, 2, 1]
    assert trace.query_tokens[0] == 5 and trace.slm_step_tokens[0, 0] == 5
    assert np.all((trace.prm_context >= 0) & (trace.prm_context <= 1))
    clean = pb.import_records(RECORDS, "t", pb.ImportConfig(max_steps=2))
    assert not np.allclose(trace.prm_after_slm[trace.step_mask], clean.prm_after_slm[clean.step_mask])
    again = pb.import_records(RECORDS, "t", cfg, token_counter=lambda text: len(text.split()))
    np.testing.assert_array_equal(trace.prm_after_slm, again.prm_after_slm)


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("steps"), "'steps' missing"),
    (lambda r: r.update(steps=[]), "'steps' must be a non-empty list"),
    (lambda r: r.update(label=5), "'label' must be -1 or a step index"),
    (lambda r: r.update(label="1"), "'label'"),
])
def test_malformed_records_name_file_and_field(tmp_path, mutate, field):
    records = json.loads(json.dumps(RECORDS))
    mutate(records[1])
    path = _write(tmp_path, records, "bad.json")
    with pytest.raises(pb.ProcessBenchError, match=field) as info:
        pb.load_processbench(path)
    assert "bad.json" in str(info.value) and "record 1" in str(info.value)


def test_bad_config_and_missing_file(tmp_path):
    with pytest.raises(pb.ProcessBenchError, match="eps"):
        pb.import_records(RECORDS, "t", pb.ImportConfig(eps=1.5))
    with pytest.raises(pb.ProcessBenchError, match="not found"):
        pb.load_processbench(tmp_path / "nope.json")


def test_stats_of_tiny_file():
    stats = pb.processbench_stats(RECORDS)
    assert stats["problems"] == 3
    assert stats["mean_steps"] == pytest.approx(7 / 3) and stats["median_steps"] == 2
    assert stats["error_rate"] == pytest.approx(2 / 3)
    assert stats["final_answer_correct_rate"] == pytest.approx(1 / 3)
    chars = [len(s) for r in RECORDS for s in r["steps"]]
    assert stats["mean_step_chars"] == pytest.approx(np.mean(chars))


def test_compare_traces_table(tiny_trace):
    imported = pb.import_records(RECORDS, "t")
    table = pb.compare_traces({"imported": imported, "tiny": tiny_trace})
    assert table.splitlines()[0] == "| statistic | imported | tiny |"
    assert "| mean_steps | 2.333 |" in table


@pytest.mark.parametrize("stem, steps_range, error_range", [
    ("gsm8k", (4.5, 6.0), (0.4, 0.65)),
    ("math", (5.5, 7.5), (0.45, 0.75)),
    ("olympiadbench", (7.0, 10.5), (0.5, 0.8)),
    ("omnimath", (6.5, 10.0), (0.6, 0.9)),
])
def test_real_processbench_files(shared_data, tmp_path, stem, steps_range, error_range):
    path = shared_data / "processbench" / f"{stem}.json"
    records = pb.load_processbench(path)
    stats = pb.processbench_stats(records)
    assert steps_range[0] < stats["mean_steps"] < steps_range[1]
    assert error_range[0] < stats["error_rate"] < error_range[1]
    assert 40 < stats["mean_step_tokens"] < 90 and 60 < stats["mean_query_tokens"] < 160
    pb.import_file(path, tmp_path / "t.npz")
    trace = load_trace(tmp_path / "t.npz")
    assert trace.num_problems == stats["problems"]
    assert trace.slm_step_tokens[trace.step_mask].mean() == pytest.approx(stats["mean_step_tokens"], rel=1e-6)
    assert trace.metadata["import"]["error_rate"] == pytest.approx(stats["error_rate"])


def test_real_gsm8k_against_shipped_synthetic(shared_data):
    synthetic_path = REPO_ROOT / "traces" / "gsm8k.npz"
    if not synthetic_path.exists():
        pytest.skip("traces/gsm8k.npz not shipped yet")
    imported = pb.trace_summary(pb.import_file(shared_data / "processbench" / "gsm8k.json"))
    synthetic = pb.trace_summary(load_trace(synthetic_path))
    # the synthetic lengths are fitted on real data: step counts and lengths must agree within 15%
    for key in ("mean_steps", "mean_slm_step_tokens", "mean_query_tokens"):
        assert imported[key] == pytest.approx(synthetic[key], rel=0.15), key
