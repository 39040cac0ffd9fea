"""Trace format v1: round trip, packing, and every kind of corruption rejected with its field named."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

from prada_jax.traces import TraceError, load_trace, pack_traces, save_trace, validate_trace


def test_round_trip_and_determinism(tiny_trace, tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    save_trace(first, tiny_trace)
    save_trace(second, tiny_trace)
    assert first.read_bytes() == second.read_bytes()
    loaded = load_trace(first)
    for name, value in tiny_trace.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), value)
    assert loaded.metadata == tiny_trace.metadata


def test_expected_accuracy_is_mean_of_products(tiny_trace):
    by_hand = np.mean(
        [np.prod(tiny_trace.slm_step_success[n, : tiny_trace.num_steps[n]]) for n in range(tiny_trace.num_problems)]
    )
    assert tiny_trace.expected_accuracy("slm") == pytest.approx(by_hand, rel=1e-6)
    assert tiny_trace.expected_accuracy("llm") >= tiny_trace.expected_accuracy("slm")


def test_reference_context_tokens(tiny_trace):
    ctx = tiny_trace.reference_context_tokens()
    n = 0
    assert ctx[n, 0] == tiny_trace.query_tokens[n]
    assert ctx[n, 2] == tiny_trace.query_tokens[n] + tiny_trace.slm_step_tokens[n, 0] + tiny_trace.slm_step_tokens[n, 1]


def test_pack_shapes_and_mask(tiny_trace):
    packed = pack_traces(tiny_trace)
    assert packed.slm_step_tokens.shape == (tiny_trace.num_problems, tiny_trace.max_steps)
    assert packed.features.shape == tiny_trace.features.shape
    np.testing.assert_array_equal(np.asarray(packed.step_mask).sum(1), tiny_trace.num_steps)


def _corrupt(trace, **changes):
    return dataclasses.replace(trace, **changes)


@pytest.mark.parametrize(
    "field,mutate,message",
    [
        ("slm_step_success", lambda t: (t.slm_step_success * 0 + 1.5 * t.step_mask).astype(np.float32), "[0, 1]"),
        ("llm_step_success", lambda t: np.where(t.step_mask, np.nan, 0).astype(np.float32), "NaN"),
        ("prm_context", lambda t: (t.prm_context - 2 * t.step_mask).astype(np.float32), "[0, 1]"),
        ("slm_step_tokens", lambda t: (t.slm_step_tokens * 0).astype(np.int32), "> 0"),
        ("query_tokens", lambda t: (t.query_tokens * 0 - 3).astype(np.int32), "> 0"),
        ("num_steps", lambda t: (t.num_steps + 10).astype(np.int32), "padded width"),
        ("num_steps", lambda t: (t.num_steps * 0).astype(np.int32), "1.."),
        ("llm_step_tokens", lambda t: t.llm_step_tokens.astype(np.float64), "dtype"),
        ("features", lambda t: t.features[:, :, :0], "F > 0"),
        ("features", lambda t: np.where(t.step_mask[..., None], np.inf, 0).astype(np.float32), "infinite"),
        ("prm_after_llm", lambda t: t.prm_after_llm[:-1], "shape"),
        ("slm_step_success", lambda t: (t.slm_step_success + (~t.step_mask) * 0.5).astype(np.float32), "padding"),
    ],
)
def test_corruption_rejected_with_field_named(tiny_trace, field, mutate, message):
    bad = _corrupt(tiny_trace, **{field: mutate(tiny_trace)})
    with pytest.raises(TraceError) as err:
        validate_trace(bad, "bad.npz")
    assert f"'{field}'" in str(err.value) and "bad.npz" in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "key,value,field",
    [
        ("provenance", "made-up", "metadata.provenance"),
        ("slm", {"name": "x", "hidden": -1, "layers": 2}, "metadata.slm"),
        ("calibration_targets", {"slm_accuracy": 84.8}, "metadata.calibration_targets.slm_accuracy"),
    ],
)
def test_bad_metadata_rejected(tiny_trace, key, value, field):
    bad = _corrupt(tiny_trace, metadata={**tiny_trace.metadata, key: value})
    with pytest.raises(TraceError, match=f"'{field}'"):
        validate_trace(bad, "meta.npz")


def test_missing_metadata_key(tiny_trace):
    meta = dict(tiny_trace.metadata)
    del meta["dataset"]
    with pytest.raises(TraceError, match="'metadata.dataset': missing"):
        validate_trace(_corrupt(tiny_trace, metadata=meta), "m.npz")


def _rewrite(path, drop=None, replace=None):
    """Rewrite an npz with one entry dropped or replaced (raw bytes of a .npy)."""
    with zipfile.ZipFile(path) as src:
        entries = {name: src.read(name) for name in src.namelist()}
    if drop:
        del entries[drop + ".npy"]
    for name, value in (replace or {}).items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, value)
        entries[name + ".npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as dst:
        for name, raw in entries.items():
            dst.writestr(name, raw)


def test_file_level_errors(tiny_trace, tmp_path):
    path = tmp_path / "t.npz"
    with pytest.raises(TraceError, match="file not found"):
        load_trace(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(TraceError, match="not a readable"):
        load_trace(path)
    save_trace(path, tiny_trace)
    _rewrite(path, drop="prm_after_slm")
    with pytest.raises(TraceError, match="'prm_after_slm': missing"):
        load_trace(path)
    save_trace(path, tiny_trace)
    _rewrite(path, replace={"format_version": np.asarray(2, np.int64)})
    with pytest.raises(TraceError, match="'format_version'"):
        load_trace(path)
    save_trace(path, tiny_trace)
    _rewrite(path, replace={"metadata": np.asarray("{not json")})
    with pytest.raises(TraceError, match="'metadata': not valid JSON"):
        load_trace(path)
    save_trace(path, tiny_trace)
    _rewrite(path, replace={"metadata": np.asarray(json.dumps({**tiny_trace.metadata, "provenance": "?"}))})
    with pytest.raises(TraceError, match="metadata.provenance"):
        load_trace(path)
