"""A small trace with a known answer for the learning tests (imported by the other test_learn_* files)."""

from __future__ import annotations

import numpy as np
from conftest import unit_test_metadata

from prada_jax.traces import TraceData, validate_trace


def make_toy_trace(num_problems=48, max_steps=5, feature_dim=4, seed=0, feature_noise=0.05, gap=0.35) -> TraceData:
    """Consistent PRM (prm_context[k+1] = prm_after_slm[k]) driven by a latent difficulty d[n, k] ~ U(0, 1).

    p_S = 1 - gap d, p_L = 1 - 0.1 gap d; PRM(x_0) = 0.95, prm_after_m = prm_context * p_m.
    Feature 0 is d plus Gaussian noise `feature_noise`, the others are pure noise.
    """
    rng = np.random.default_rng(seed)
    num_steps = rng.integers(2, max_steps + 1, size=num_problems).astype(np.int32)
    num_steps[0] = max_steps
    mask = np.arange(max_steps)[None, :] < num_steps[:, None]
    d = rng.uniform(size=mask.shape)
    p_s = np.where(mask, 1.0 - gap * d, 0.0)
    p_l = np.where(mask, 1.0 - 0.1 * gap * d, 0.0)
    prm_context = np.zeros(mask.shape)
    prm_context[:, 0] = 0.95
    for k in range(1, max_steps):
        prm_context[:, k] = prm_context[:, k - 1] * p_s[:, k - 1]
    prm_context *= mask
    features = rng.normal(size=mask.shape + (feature_dim,))
    features[..., 0] = d + feature_noise * rng.normal(size=mask.shape)
    f32 = lambda x: np.where(mask if x.ndim == 2 else mask[..., None], x, 0).astype(np.float32)  # noqa: E731
    tok = lambda: np.where(mask, rng.integers(40, 70, size=mask.shape), 0).astype(np.int32)  # noqa: E731
    trace = TraceData(
        query_tokens=rng.integers(100, 250, size=num_problems).astype(np.int32),
        num_steps=num_steps,
        slm_step_tokens=tok(),
        llm_step_tokens=tok(),
        slm_step_success=f32(p_s),
        llm_step_success=f32(p_l),
        prm_context=f32(prm_context),
        prm_after_slm=f32(prm_context * p_s),
        prm_after_llm=f32(prm_context * p_l),
        features=f32(features),
        metadata=unit_test_metadata("toy", seed, "learning unit-test trace"),
    )
    return validate_trace(trace, "toy")


def test_toy_trace_is_valid_and_consistent():
    t = make_toy_trace()
    m = t.step_mask
    np.testing.assert_allclose(t.prm_context[:, 1:][m[:, 1:]], t.prm_after_slm[:, :-1][m[:, 1:]], rtol=1e-6)
    assert t.expected_accuracy("llm") > t.expected_accuracy("slm")
