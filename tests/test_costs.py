"""Cost and channel formulas against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prada_jax import constants as C
from prada_jax import costs


def test_prefill_eq14_by_hand():
    # v (2 m^2 o + 2 m o + 4 m o^2) with m=10, o=4, v=2: 2 * (800 + 80 + 640)
    assert float(costs.prefill_flops(10, 4, 2)) == pytest.approx(3040.0)


def test_decode_eq15_by_hand():
    assert float(costs.decode_token_flops(10, 4, 2)) == pytest.approx(2 * (16 + 40))


def test_step_eq16_with_layer_factor_is_sum_of_decodes():
    # 2 * (3*16 + 4*3*(2*10 + 3 - 1)/2) = 360, and equals eq. 15 summed over m = 10, 11, 12.
    assert float(costs.step_flops(10, 4, 2, 3)) == pytest.approx(360.0)
    assert sum(float(costs.decode_token_flops(m, 4, 2)) for m in (10, 11, 12)) == pytest.approx(360.0)


def test_ingest_is_prefill_difference():
    assert float(costs.ingest_flops(4, 10, 4, 2)) == pytest.approx(3040.0 - 2 * (2 * 16 * 4 + 2 * 4 * 4 + 4 * 4 * 16))
    assert float(costs.ingest_flops(10, 10, 4, 2)) == 0.0


def test_design_note_back_of_envelope():
    # Design notes 2.2: Qwen2.5-Math-7B prefill of 250 tokens ~ 4.7 ms, a 50-token decode ~ 0.24 ms at 8e13.
    prefill_ms = float(costs.prefill_flops(250, C.LLM_ARCH.hidden, C.LLM_ARCH.layers)) / C.FLOPS_LLM * 1e3
    decode_ms = float(costs.step_flops(250, C.LLM_ARCH.hidden, C.LLM_ARCH.layers, 50)) / C.FLOPS_LLM * 1e3
    assert prefill_ms == pytest.approx(4.65, abs=0.05)
    assert decode_ms == pytest.approx(0.242, abs=0.005)


def test_server_and_local_step_seconds():
    o, v = C.LLM_ARCH.hidden, C.LLM_ARCH.layers
    full = float(costs.server_step_seconds(300, 200, 40, 8e13, False))
    expected_full = (float(costs.prefill_flops(300, o, v)) + float(costs.step_flops(300, o, v, 40))) / 8e13
    assert full == pytest.approx(expected_full, rel=1e-6)
    cached = float(costs.server_step_seconds(300, 200, 40, 8e13, True))
    expected_cached = (float(costs.ingest_flops(200, 300, o, v)) + float(costs.step_flops(300, o, v, 40))) / 8e13
    assert cached == pytest.approx(expected_cached, rel=1e-6) and cached < full
    s_o, s_v = C.SLM_ARCH.hidden, C.SLM_ARCH.layers
    local = float(costs.local_step_seconds(300, 250, 40, 1e13))
    expected_local = (float(costs.ingest_flops(250, 300, s_o, s_v)) + float(costs.step_flops(300, s_o, s_v, 40))) / 1e13
    assert local == pytest.approx(expected_local, rel=1e-6)


def test_shannon_upload_eq4_5():
    # 32 bits x 100 tokens over 1 MHz at SNR 3 (log2(4) = 2 bit/s/Hz) = 1.6 ms
    assert float(costs.upload_seconds(100, 1e6, 3.0)) == pytest.approx(1.6e-3)


def test_optimal_bandwidth_eq30_and_priced_cost():
    b_star = float(costs.optimal_bandwidth(100, 3.0, 2.0, 1e-6))
    assert b_star == pytest.approx(math.sqrt(3200 * 2 / (1e-6 * 2)), rel=1e-6)
    # At the optimum beta*TC(B*) = mu*B*, and their sum is 2 sqrt(32 beta mu L / log2(1+gamma)).
    tc = float(costs.upload_seconds(100, b_star, 3.0))
    assert 2.0 * tc == pytest.approx(1e-6 * b_star, rel=1e-5)
    assert float(costs.priced_upload_cost(100, 3.0, 2.0, 1e-6)) == pytest.approx(2.0 * tc + 1e-6 * b_star, rel=1e-5)
    # B* minimises beta TC(B) + mu B: neighbours cost more.
    def total(b):
        return 2.0 * float(costs.upload_seconds(100, b, 3.0)) + 1e-6 * b
    assert total(b_star) < total(0.9 * b_star) and total(b_star) < total(1.1 * b_star)


def test_value_gap_eq33():
    assert float(costs.value_gap(0.3, 0.4)) == pytest.approx(0.5)
    # A(x,1) = Q1 - V, V = pi0 Q0 + pi1 Q1  =>  A1 / pi0 = Q1 - Q0
    q0, q1, pi1 = 0.2, 0.9, 0.3
    v = (1 - pi1) * q0 + pi1 * q1
    assert float(costs.value_gap(q1 - v, pi1)) == pytest.approx(q1 - q0, rel=1e-6)


def test_snr_model():
    assert float(costs.mean_snr_linear(C.MEDIAN_DISTANCE, 20.0, 3.5)) == pytest.approx(100.0, rel=1e-5)
    far = float(costs.mean_snr_linear(2 * C.MEDIAN_DISTANCE, 20.0, 3.5))
    assert 10 * math.log10(far) == pytest.approx(20.0 - 35.0 * math.log10(2.0), abs=1e-4)
    assert float(costs.user_distance(0.25)) == pytest.approx(0.5)
    np.testing.assert_allclose(np.asarray(costs.faded_snr(np.array([2.0, 4.0]), np.array([0.5, 2.0]))), [1.0, 8.0])
