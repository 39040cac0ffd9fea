"""Roofline latency model (prada_jax/latency.py), hardware presets, fit and measurement script."""

from __future__ import annotations

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prada_jax import constants as C
from prada_jax import hardware as H
from prada_jax import latency as L

H100 = H.hardware_preset("h100-sxm")
TINY = L.TransformerArch(name="tiny", hidden=8, layers=2, heads=4, kv_heads=2, intermediate=16, vocab=10,
                         tie_embeddings=False)


def test_parameter_counts_match_the_published_sizes():
    # Qwen reports 1.54 B and 7.61 B parameters; counts by hand in docs/latency.md.
    assert L.parameter_count(L.QWEN25_MATH_1_5B) == 1_543_714_304
    assert L.parameter_count(L.QWEN25_MATH_7B) == 7_615_616_512
    # 7B per-layer attention matrices (q, k, v, o) and MLP (3 matrices).
    assert L.layer_linear_weights(L.QWEN25_MATH_7B) == 29_360_128 + 203_685_888


def test_archs_agree_with_constants():
    for arch, base in ((L.QWEN25_MATH_1_5B, C.QWEN25_MATH_1_5B), (L.QWEN25_MATH_7B, C.QWEN25_MATH_7B)):
        assert (arch.hidden, arch.layers) == (base.hidden, base.layers)
        assert arch.head_dim == 128


def test_tiny_counts_by_hand():
    # head_dim 2, q_dim 8, kv_dim 4. Layer matrices: 8*(8+8) + 8*8 + 3*8*16 = 128 + 64 + 384 = 576.
    assert L.layer_linear_weights(TINY) == 576
    # + biases 16 + norms 16 = 608 per layer; 2 layers + final norm 8 + 2 tables of 80 = 1384.
    assert L.parameter_count(TINY) == 1384
    assert L.weight_bytes_per_forward(TINY) == (1384 - 80) * 2
    assert L.kv_bytes_per_token(TINY) == 2 * 2 * 4 * 2


def test_prefill_work_by_hand():
    # context 5, nothing cached: matmul 2*2*576*5 = 11520, lm head 2*8*10 = 160,
    # attention 4*2*8 * (1+2+3+4+5) = 64 * 15 = 960.
    flops, bytes_moved = L.prefill_work(5, 0, TINY)
    assert float(flops) == pytest.approx(11520 + 160 + 960)
    assert float(bytes_moved) == pytest.approx(2608 + 32 * 5)
    # extending 3 -> 5: keys 4 and 5 only.
    flops, _ = L.prefill_work(5, 3, TINY)
    assert float(flops) == pytest.approx(2 * 2 * 576 * 2 + 160 + 64 * 9)
    assert float(L.prefill_seconds(5, 5, TINY, H100)) == 0.0


def test_decode_iteration_work_by_hand():
    # requests at contexts 3 and 6 (keys 4 and 7), a third inactive.
    flops, bytes_moved = L.decode_iteration_work(jnp.array([3, 6, 100]), jnp.array([True, True, False]), TINY)
    per_token = 2 * 2 * 576 + 160
    assert float(flops) == pytest.approx(2 * per_token + 64 * (4 + 7))
    assert float(bytes_moved) == pytest.approx(2608 + 32 * (4 + 7))
    none = L.decode_iteration_seconds(jnp.array([3, 6]), jnp.array([False, False]), TINY, H100)
    assert float(none) == 0.0
    same = L.batched_decode_work(2, 5, TINY)
    exact = L.decode_iteration_work(jnp.array([5, 5]), jnp.array([True, True]), TINY)
    np.testing.assert_allclose(np.array(same), np.array(exact), rtol=1e-6)


def test_7b_decode_on_h100_is_bandwidth_bound_at_about_4_2_ms():
    # weights read per token: (7,615,616,512 - 152,064*3,584 untied input table) * 2 B = 14.141 GB;
    # KV of 251 keys: 251 * 57,344 B. 14.141e9 / 3.35e12 = 4.221 ms (+ 0.004 ms of KV).
    seconds = float(L.batched_decode_iteration_seconds(1, 250, L.QWEN25_MATH_7B, H100))
    by_hand = (14_141_238_272 + 251 * 57_344) / 3.35e12
    assert seconds == pytest.approx(by_hand, rel=1e-5)
    # the "at least 4.5 ms" bound counts the whole 15.2 GB, input table included; the lower bound holds
    # for what is actually read:
    assert seconds >= 14.14e9 / 3.35e12
    flops, bytes_moved = L.batched_decode_work(1, 250, L.QWEN25_MATH_7B)
    assert float(L.compute_seconds(flops, H100)) < 0.01 * float(L.memory_seconds(bytes_moved, H100))


def test_long_prefill_is_compute_bound_short_decode_memory_bound():
    for hw_name in H.HARDWARE_PRESETS:
        hw = H.hardware_preset(hw_name)
        for arch in (L.QWEN25_MATH_1_5B, L.QWEN25_MATH_7B):
            flops, bytes_moved = L.prefill_work(2048, 0, arch)
            assert float(L.compute_seconds(flops, hw)) > float(L.memory_seconds(bytes_moved, hw)), hw_name
            flops, bytes_moved = L.batched_decode_work(1, 2048, arch)
            assert float(L.compute_seconds(flops, hw)) < float(L.memory_seconds(bytes_moved, hw)), hw_name


def test_more_requests_never_make_a_request_faster():
    batch = jnp.arange(0, 513)
    for arch in (L.QWEN25_MATH_1_5B, L.QWEN25_MATH_7B):
        for context in (0, 100, 1000, 8000):
            t = np.asarray(L.batched_decode_iteration_seconds(batch, context, arch, H100))
            assert np.all(np.diff(t) >= 0) and t[0] == 0.0 and t[1] > 0
    # exact batches: adding a request (any context) to any active set never lowers the iteration time
    rng = np.random.default_rng(0)
    contexts = jnp.asarray(rng.integers(0, 4000, size=(200, 16)))
    active = jnp.asarray(rng.random((200, 16)) < 0.5)
    extra = jnp.asarray(rng.integers(0, 16, size=200))
    grown = active.at[jnp.arange(200), extra].set(True)
    base = L.decode_iteration_seconds(contexts, active, L.QWEN25_MATH_7B, H100)
    more = L.decode_iteration_seconds(contexts, grown, L.QWEN25_MATH_7B, H100)
    assert bool(jnp.all(more >= base))
    # large batches of long contexts turn decode compute-bound (the 7B ridge on H100 is ~295 FLOP/B).
    flops, bytes_moved = L.batched_decode_work(512, 100, L.QWEN25_MATH_7B)
    assert float(L.compute_seconds(flops, H100)) > float(L.memory_seconds(bytes_moved, H100))


def _brute_step_seconds(context, cached, new_tokens, arch, hw, other_requests, other_context_tokens):
    """float64 loop: one prefill then new_tokens - 1 single-iteration roofline times."""
    def roof(flops, bytes_moved):
        return hw.overhead_seconds + max(flops / hw.effective_flops, bytes_moved / hw.effective_bandwidth)

    mm, head = L.matmul_flops_per_token(arch), L.lm_head_flops(arch)
    attn, kv, w = L.attention_flops_per_key(arch), L.kv_bytes_per_token(arch), L.weight_bytes_per_forward(arch)
    new = context - cached
    total = roof(mm * new + head + attn * sum(range(cached + 1, context + 1)), w + kv * context)
    for i in range(1, new_tokens):
        keys = context + i + other_context_tokens
        total += roof((mm + head) * (1 + other_requests) + attn * keys, w + kv * keys)
    return total


@pytest.mark.parametrize("hw_name", ["h100-sxm", "l4", "phone-snapdragon-8gen3"])
def test_step_seconds_matches_a_float64_loop(hw_name):
    hw = H.hardware_preset(hw_name).replace(compute_efficiency=0.6, bandwidth_efficiency=0.8, overhead_seconds=2e-4)
    cases = [(250, 0, 50, 0, 0), (300, 200, 40, 7, 3000), (10, 9, 1, 0, 0), (1000, 0, 200, 255, 200_000),
             (40, 0, 120, 120, 30_000)]
    for arch in (L.QWEN25_MATH_1_5B, L.QWEN25_MATH_7B):
        for case in cases:
            got = float(L.step_seconds(*case[:3], arch, hw, case[3], case[4]))
            assert got == pytest.approx(_brute_step_seconds(*case[:3], arch, hw, *case[3:]), rel=2e-5), case


def test_sum_of_max_of_lines_crossing_both_ways():
    for p0, p1, q0, q1, n in [(0.0, 1.0, 5.0, 0.0, 12), (5.0, -1.0, 0.0, 0.5, 9), (1.0, 0.0, 1.0, 0.0, 4),
                              (2.0, 0.3, 2.0, 0.3, 7), (-3.0, 2.0, 1.0, 1.0, 0), (3.5, 0.0, 1.0, 0.25, 30)]:
        brute = sum(max(p0 + p1 * i, q0 + q1 * i) for i in range(n))
        got = float(L._sum_of_max_of_lines(jnp.float32(p0), jnp.float32(p1), jnp.float32(q0), jnp.float32(q1), n))
        assert got == pytest.approx(brute, rel=1e-6, abs=1e-6)


def test_traced_hardware_and_broadcasting():
    f = jax.jit(lambda hw, m: L.step_seconds(m, 0, 50, L.QWEN25_MATH_7B, hw))
    contexts = jnp.array([100.0, 500.0, 2000.0])
    out = f(H100, contexts)
    assert out.shape == (3,) and bool(jnp.all(jnp.diff(out) > 0))
    slower = f(H100.replace(bandwidth_efficiency=0.5), contexts)
    assert bool(jnp.all(slower > out))
    grad = jax.grad(lambda e: L.step_seconds(250, 0, 50, L.QWEN25_MATH_7B, H100.replace(bandwidth_efficiency=e)))(1.0)
    assert float(grad) < 0


def test_presets_and_errors():
    assert set(H.SERVER_PRESETS) | set(H.EDGE_PRESETS) == set(H.HARDWARE_PRESETS)
    for name, hw in H.HARDWARE_PRESETS.items():
        assert hw.name == name and hw.peak_flops > 0 and hw.memory_bandwidth > 0
    assert H100.ridge_flops_per_byte == pytest.approx(989e12 / 3.35e12)
    with pytest.raises(ValueError, match="unknown hardware preset"):
        H.hardware_preset("h300")


def test_arch_from_hf_config():
    config = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
              "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False}
    assert L.parameter_count(L.arch_from_hf_config(config)) == L.parameter_count(L.QWEN25_MATH_7B)


@pytest.mark.parametrize("fit_overhead", [False, True])
def test_fit_recovers_known_rates_from_a_synthetic_table(fit_overhead):
    # Points on both sides of the ridge for a 1.5B shape on an "L4 at 55% compute, 80% bandwidth".
    arch = L.QWEN25_MATH_1_5B
    truth = H.hardware_preset("l4").replace(compute_efficiency=0.55, bandwidth_efficiency=0.8,
                                            overhead_seconds=3e-3 if fit_overhead else 0.0)
    table = {"prefill": [{"context": m, "seconds_median": 0.0} for m in (8, 32, 128, 512, 2048)],
             "decode": [{"context": m, "batch": b, "seconds_median": 0.0} for m in (64, 1024) for b in (1, 8, 64, 512)]}
    flops, bytes_moved, _ = L.table_work(table, arch)
    rng = np.random.default_rng(1)
    exact = truth.overhead_seconds + np.maximum(flops / float(truth.effective_flops), bytes_moved / float(truth.effective_bandwidth))
    noisy = exact * np.exp(rng.normal(0.0, 0.01, exact.shape))
    fit = L.fit_effective_rates(flops, bytes_moved, noisy, fit_overhead)
    hw = L.fitted_hardware(fit, H.hardware_preset("l4"))
    assert float(hw.compute_efficiency) == pytest.approx(0.55, rel=0.03)
    assert float(hw.bandwidth_efficiency) == pytest.approx(0.8, rel=0.03)
    if fit_overhead:
        assert fit.overhead_seconds == pytest.approx(3e-3, rel=0.1)
    assert fit.rms_log_residual < 0.02


def test_fit_rejects_non_positive_times():
    with pytest.raises(ValueError, match="positive times"):
        L.fit_effective_rates([1.0, 2.0], [1.0, 2.0], [0.0, 1.0])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
                    reason="torch/transformers not installed")
def test_tiny_measurement_end_to_end(tmp_path):
    from experiments import fit_latency, measure_latency

    table = measure_latency.run_measurement("tiny", "float32", "cpu", [4, 16], [8], [1, 2], warmup=1, repeats=2,
                                               threads=1)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(table))
    loaded = json.loads(path.read_text())
    prov = loaded["provenance"]
    assert prov["device"] == "cpu" and prov["dtype"] == "float32" and prov["torch"] and prov["transformers"]
    assert [r["context"] for r in loaded["prefill"]] == [4, 16]
    assert [(r["context"], r["batch"]) for r in loaded["decode"]] == [(8, 1), (8, 2)]
    assert all(r["seconds_median"] > 0 and len(r["seconds_all"]) == 2 for r in loaded["prefill"] + loaded["decode"])
    fit = fit_latency.fit_table(loaded, "", fit_overhead=False)
    assert fit["effective_flops"] > 0 and len(fit["points"]) == 4


def test_shipped_tables_load_and_name_their_device():
    import pathlib

    from experiments import fit_latency

    tables = sorted(pathlib.Path(L.__file__).parent.joinpath("calibration").glob("latency_*.json"))
    for path in tables:
        table = json.loads(path.read_text())
        if "provenance" not in table:  # a fit file, not a table
            continue
        assert table["provenance"]["device_name"] and table["provenance"]["date_utc"]
        assert fit_latency.fit_table(table)["rms_log_residual"] >= 0
