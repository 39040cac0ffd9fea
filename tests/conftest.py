"""Shared test fixtures: a tiny, valid trace built in memory, and the path of the shared data (or a skip)."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile

# One XLA compilation cache for the test session, shared by the pytest-xdist workers and by the CLI subprocesses the
# tests start: the same small programs compile in many processes. Set before jax is imported (it reads the variable
# then). The first process to load this file (the xdist controller, or the only process) makes it and removes it at
# exit; a JAX_COMPILATION_CACHE_DIR of your own is used as it is and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _xla_cache = tempfile.mkdtemp(prefix="prada-jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)

import numpy as np
import pytest

from prada_jax import constants as C
from prada_jax.traces import TraceData

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real benchmark data (not part of the repository); PRADA_SHARED_DATA overrides the default location.
SHARED_DATA = pathlib.Path(os.environ.get("PRADA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def unit_test_metadata(dataset: str, seed: int, notes: str) -> dict:
    """Valid trace metadata for traces that tests build in memory."""
    return {
        "dataset": dataset,
        "slm": C.SLM_ARCH.to_dict(),
        "llm": C.LLM_ARCH.to_dict(),
        "prm": C.PRM_TEACHER_ARCH.to_dict(),
        "provenance": "synthetic",
        "generator_seed": seed,
        "calibration_targets": None,
        "notes": notes,
    }


def make_tiny_trace(num_problems: int = 6, max_steps: int = 4, feature_dim: int = 3, seed: int = 0) -> TraceData:
    """A small valid trace with varied step counts; values are random but within the format's ranges."""
    rng = np.random.default_rng(seed)
    num_steps = rng.integers(1, max_steps + 1, size=num_problems).astype(np.int32)
    num_steps[0] = max_steps
    mask = np.arange(max_steps)[None, :] < num_steps[:, None]

    def tokens():
        return np.where(mask, rng.integers(5, 60, size=mask.shape), 0).astype(np.int32)

    def probs(low=0.5):
        return np.where(mask, rng.uniform(low, 1.0, size=mask.shape), 0.0).astype(np.float32)

    slm = probs(0.6)
    llm = np.where(mask, np.maximum(slm, probs(0.8)), 0.0).astype(np.float32)
    features = np.where(mask[..., None], rng.normal(size=mask.shape + (feature_dim,)), 0.0).astype(np.float32)
    meta = unit_test_metadata("tiny", seed, "unit-test trace")
    return TraceData(
        query_tokens=rng.integers(20, 200, size=num_problems).astype(np.int32),
        num_steps=num_steps,
        slm_step_tokens=tokens(),
        llm_step_tokens=tokens(),
        slm_step_success=slm,
        llm_step_success=llm,
        prm_context=probs(),
        prm_after_slm=probs(),
        prm_after_llm=probs(),
        features=features,
        metadata=meta,
    )


@pytest.fixture
def tiny_trace() -> TraceData:
    return make_tiny_trace()


@pytest.fixture
def shared_data() -> pathlib.Path:
    """Path of ../shared/data; skips the test when it is absent (a user's clone has no ../shared)."""
    if not SHARED_DATA.is_dir() or os.environ.get("PRADA_NO_SHARED_DATA"):
        pytest.skip(f"{SHARED_DATA} is not present (set PRADA_SHARED_DATA to point at the shared data)")
    return SHARED_DATA
