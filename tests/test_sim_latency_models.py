"""Latency models of the simulator (prada_jax/sim/latency_models.py): the roofline formulas against hand
computations, batch monotonicity, the registry, sweepable hardware leaves, and the oracle on roofline cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_sim import ORACLE_LATENCY_MODELS, SERVE, UPLOAD, simulate_reference
from sim_helpers import metrics_dict, mixed_table, tiny

from prada_jax import sim
from prada_jax.sim import latency_models as LM
from prada_jax.sim import policies
from prada_jax.sim.params import SimParamsError, hardware_leaves
from prada_jax.traces import pack_traces

ROOF = LM.get(LM.ROOFLINE)
P = sim.make_params()  # server h100-sxm (989e12 FLOP/s, 3.35e12 B/s), edge jetson-agx-orin-64gb (42.5e12, 204.8e9)
NO_LOAD = LM.ServerLoad(other_requests=jnp.float32(0.0), other_context_tokens=jnp.float32(0.0))

# Hand counts (docs/latency.md): 7B: matrices per layer 233,046,016 -> 2 x 28 x that = 13,050,576,896 FLOPs per
# token; LM head 2 x 3584 x 152064 = 1,090,002,944; attention 4 x 28 x 3584 = 401,408 per key; weights read
# (untied input embedding excluded) 7,070,619,136 x 2 B = 14,141,238,272 B; KV 2 x 28 x 512 x 2 B = 57,344 B/token.
MM7, LM7, ATT7, W7, KV7 = 13_050_576_896, 1_090_002_944, 401_408, 14_141_238_272, 57_344
# 1.5B (tied): matrices per layer 46,792,704 -> 2,620,391,424 FLOPs/token; LM head 466,747,392; attention 172,032 per
# key; every parameter read: 1,543,714,304 x 2 B = 3,087,428,608 B; KV 2 x 28 x 256 x 2 B = 28,672 B/token.
MM1, LM1, ATT1, W1, KV1 = 2_620_391_424, 466_747_392, 172_032, 3_087_428_608, 28_672
H100_F, H100_B, ORIN_F, ORIN_B = 989e12, 3.35e12, 42.5e12, 204.8e9


def test_registry_and_oracle_twins():
    assert {"flops", "roofline"} <= set(LM.LATENCY_MODELS)  # (+ docs/extending.md's example when it has run)
    assert set(ORACLE_LATENCY_MODELS) == set(LM.LATENCY_MODELS)
    assert sim.SimConfig().latency_model == "flops"
    with pytest.raises(SimParamsError, match="latency_model"):
        sim.SimConfig(latency_model="nope")


def test_compute_bound_long_prefill_by_hand():
    m = 4096
    flops = MM7 * m + LM7 + ATT7 * m * (m + 1) // 2
    nbytes = W7 + KV7 * m
    assert flops / H100_F > 10 * nbytes / H100_B  # compute-bound: 57.5 ms vs 4.3 ms
    got = float(ROOF.server_step(m, 0, 1, P, NO_LOAD))  # one new token: the prefill alone
    np.testing.assert_allclose(got, flops / H100_F, rtol=1e-5)
    np.testing.assert_allclose(got, 0.05745, rtol=1e-3)


def test_memory_bound_decode_at_batch_one_by_hand():
    ctx, n = 250, 51
    prefill = max((MM7 * ctx + LM7 + ATT7 * ctx * (ctx + 1) // 2) / H100_F, (W7 + KV7 * ctx) / H100_B)
    decode = sum(max((MM7 + LM7 + ATT7 * k) / H100_F, (W7 + KV7 * k) / H100_B) for k in range(ctx + 1, ctx + n))
    assert (W7 + KV7 * 251) / H100_B > 100 * (MM7 + LM7 + ATT7 * 251) / H100_F  # memory-bound
    np.testing.assert_allclose(float(ROOF.server_step(ctx, 0, n, P, NO_LOAD)), prefill + decode, rtol=1e-5)
    np.testing.assert_allclose(decode / (n - 1), 4.2257e-3, rtol=1e-3)  # 14.156 GB / 3.35 TB/s per token
    # Prefix cache: only the tokens beyond the cached 200 are prefilled.
    pc = P.replace(prefix_cache=jnp.bool_(True))
    prefill_c = max((MM7 * 50 + LM7 + ATT7 * (ctx * (ctx + 1) - 200 * 201) // 2) / H100_F, (W7 + KV7 * ctx) / H100_B)
    np.testing.assert_allclose(float(ROOF.server_step(ctx, 200, n, pc, NO_LOAD)), prefill_c + decode, rtol=1e-5)


def test_local_step_on_the_edge_device_by_hand():
    ctx, cached, n = 120, 80, 30
    prefill = max((MM1 * 40 + LM1 + ATT1 * (ctx * (ctx + 1) - cached * (cached + 1)) // 2) / ORIN_F,
                  (W1 + KV1 * ctx) / ORIN_B)
    decode = sum(max((MM1 + LM1 + ATT1 * k) / ORIN_F, (W1 + KV1 * k) / ORIN_B) for k in range(ctx + 1, ctx + n))
    np.testing.assert_allclose(float(ROOF.local_step(ctx, cached, n, P)), prefill + decode, rtol=1e-5)
    np.testing.assert_allclose(W1 / ORIN_B, 15.075e-3, rtol=1e-3)  # one bandwidth-bound SLM token on the Orin
    # 4-bit weights (a traced leaf): the weight bytes of every pass drop 4x, the KV cache stays bf16.
    q4 = P.replace(edge_bytes_per_param=jnp.float32(0.5))
    decode4 = sum(max((MM1 + LM1 + ATT1 * k) / ORIN_F, (W1 / 4 + KV1 * k) / ORIN_B) for k in range(ctx + 1, ctx + n))
    prefill4 = max((MM1 * 40 + LM1 + ATT1 * (ctx * (ctx + 1) - cached * (cached + 1)) // 2) / ORIN_F,
                   (W1 / 4 + KV1 * ctx) / ORIN_B)
    np.testing.assert_allclose(float(ROOF.local_step(ctx, cached, n, q4)), prefill4 + decode4, rtol=1e-5)


def test_overhead_and_efficiencies_are_applied_per_pass():
    hw = P.replace(server_compute_efficiency=jnp.float32(0.5), server_bandwidth_efficiency=jnp.float32(0.8),
                   server_overhead_s=jnp.float32(2e-3))
    ctx, n = 250, 11
    prefill = 2e-3 + max((MM7 * ctx + LM7 + ATT7 * ctx * (ctx + 1) // 2) / (0.5 * H100_F), (W7 + KV7 * ctx) / (0.8 * H100_B))
    decode = sum(2e-3 + max((MM7 + LM7 + ATT7 * k) / (0.5 * H100_F), (W7 + KV7 * k) / (0.8 * H100_B))
                 for k in range(ctx + 1, ctx + n))
    np.testing.assert_allclose(float(ROOF.server_step(ctx, 0, n, hw, NO_LOAD)), prefill + decode, rtol=1e-5)


def test_prm_check_is_one_prefill_of_the_1_5b_on_the_server():
    ctx, draft = 300, 40
    m = ctx + draft
    want = max((MM1 * m + LM1 + ATT1 * m * (m + 1) // 2) / H100_F, (W1 + KV1 * m) / H100_B)
    np.testing.assert_allclose(float(ROOF.prm_check(ctx, draft, P, NO_LOAD)), want, rtol=1e-5)


def test_batched_decode_hand_value():
    # 3 other requests holding 600 tokens in all: each iteration carries 4 tokens and the KV of all of them.
    ctx, n, others, octx = 250, 6, 3, 600
    load = LM.ServerLoad(other_requests=jnp.float32(others), other_context_tokens=jnp.float32(octx))
    prefill = max((MM7 * ctx + LM7 + ATT7 * ctx * (ctx + 1) // 2) / H100_F, (W7 + KV7 * ctx) / H100_B)
    decode = sum(max(((MM7 + LM7) * (1 + others) + ATT7 * (k + octx)) / H100_F, (W7 + KV7 * (k + octx)) / H100_B)
                 for k in range(ctx + 1, ctx + n))
    np.testing.assert_allclose(float(ROOF.server_step(ctx, 0, n, P, load)), prefill + decode, rtol=1e-5)


@pytest.mark.parametrize("preset", ["h100-sxm", "l4"])
def test_more_requests_in_service_never_make_a_request_faster(preset):
    params = sim.make_params(**hardware_leaves("server", preset))
    others = jnp.arange(0, 257, dtype=jnp.float32)
    for per_request_ctx in (0.0, 250.0, 4000.0):
        load = LM.ServerLoad(other_requests=others, other_context_tokens=others * per_request_ctx)
        for ctx, n in ((50, 2), (250, 50), (3000, 200)):
            t = np.asarray(ROOF.server_step(jnp.full(others.shape, ctx), 0, n, params, load), np.float64)
            assert np.all(np.diff(t) >= 0), (preset, per_request_ctx, ctx, n)
            if per_request_ctx > 0:  # 256 more requests cost their KV reads (with empty caches, memory-bound
                assert t[-1] > t[0]  # decode does not notice their FLOPs: equal, never faster)
    # Through server_load on random in-service sets: admitting one more request slows nobody down.
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.uniform(size=16) < 0.5
        mask[0] = False
        ctx = jnp.asarray(rng.integers(20, 2000, size=16), jnp.int32)
        extra = mask.copy()
        extra[rng.choice(np.flatnonzero(~mask))] = True
        t0 = ROOF.server_step(ctx, 0, 40, params, LM.server_load(jnp.asarray(mask), ctx))
        t1 = ROOF.server_step(ctx, 0, 40, params, LM.server_load(jnp.asarray(extra), ctx))
        assert np.all(np.asarray(t1)[mask] >= np.asarray(t0)[mask])


def test_hardware_leaves_are_validated_and_sweepable():
    with pytest.raises(SimParamsError, match="server_memory_bandwidth"):
        sim.validate_params(sim.make_params(server_memory_bandwidth=0.0), sim.SimConfig())
    with pytest.raises(SimParamsError, match="edge_overhead_s"):
        sim.validate_params(sim.make_params(edge_overhead_s=-1.0), sim.SimConfig())
    trace = tiny(seed=2)
    config = sim.SimConfig(num_slots=120, warmup_slots=10, max_users=8, max_servers=3, drain_slots=300,
                           scheduler="fifo", latency_model="roofline", slot_seconds=0.02)
    grid = sim.param_grid(sim.make_params(arrival_rate=0.05, server_capacity=3, bandwidth_bps=1e7),
                          server_memory_bandwidth=[1e12, 3.35e12])
    m = jax.device_get(sim.simulate_grid(pack_traces(trace), policies.all_llm_table(trace), grid, config, 2, 0))
    per_step = np.asarray(m.server_compute_s).sum(1) / np.asarray(m.offloaded_steps).sum(1)
    assert np.all(np.asarray(m.offloaded_steps).sum(1) > 0)
    assert per_step[0] > 2.0 * per_step[1]  # decode is bandwidth-bound: 3.35x the bandwidth, ~3x faster


# ---- the oracle on roofline cases (as tests/test_sim_oracle.py) ----

INT_FIELDS = ("arrived", "completed", "correct", "unfinished", "dropped", "offloaded_steps", "executed_steps")
FLOAT_FIELDS = ("processing_s", "communication_s", "queuing_s", "sojourn_s", "server_work_s", "server_compute_s",
                "bandwidth_used_bit", "server_slot_busy_s", "bandwidth_reserved_bit", "drain_s")

ROOFLINE_CASES = {  # name: (scheduler, table kind, params overrides, config overrides)
    "prada": ("prada", "mixed_roofline_dpsi", dict(arrival_rate=0.06, server_capacity=3, bandwidth_bps=1e6), {}),
    "fifo_all_llm": ("fifo", "all_llm", dict(arrival_rate=0.06, server_capacity=3, bandwidth_bps=1e6,
                                             prefix_cache=True), {}),
    "rsd_phone": ("rsd", "prm", {**dict(arrival_rate=0.04, server_capacity=2, bandwidth_bps=1e6),
                                 **hardware_leaves("server", "l4"),
                                 **hardware_leaves("edge", "phone-snapdragon-8gen3", bytes_per_param=0.5),
                                 **dict(server_overhead_s=3e-3, server_compute_efficiency=0.6,
                                        edge_bandwidth_efficiency=0.7)}, dict(slot_seconds=0.05)),
}


def run_roofline_case(name, seed):
    scheduler, kind, overrides, cfg_over = ROOFLINE_CASES[name]
    trace = tiny(seed=seed)
    params = sim.make_params(**overrides)
    table = {"mixed_roofline_dpsi": lambda: LM.with_reference_server_seconds(mixed_table(trace, seed), trace, params, LM.ROOFLINE),
             "all_llm": lambda: policies.all_llm_table(trace),
             "prm": lambda: policies.prm_threshold_table(trace, 0.7)}[kind]()
    cfg = dict(num_slots=400, warmup_slots=40, max_users=12, max_servers=4, drain_slots=400, max_candidates=8,
               scheduler=scheduler, latency_model="roofline", slot_seconds=0.02)
    cfg.update(cfg_over)
    config = sim.SimConfig(**cfg)
    key = jax.random.PRNGKey(200 + seed)
    got = metrics_dict(sim.simulate(pack_traces(trace), table, params, config, key))
    in_service = []
    want = simulate_reference(trace, table, params, config, key,
                              hook=lambda t, users: in_service.append(sum(u.phase in (UPLOAD, SERVE) for u in users)))
    return got, want, max(in_service)


@pytest.mark.parametrize("name,seed", [("prada", 0), ("fifo_all_llm", 1), ("rsd_phone", 2)])
def test_roofline_matches_oracle(name, seed):
    got, want, max_in_service = run_roofline_case(name, seed)
    assert want["completed"] > 10 and want["offloaded_steps"] > 0, (name, want)
    assert max_in_service >= 2  # requests did share the server (the batched decode was exercised)
    for f in INT_FIELDS:
        assert got[f] == want[f], (name, seed, f, got[f], want[f])
    for f in FLOAT_FIELDS:
        np.testing.assert_allclose(got[f], want[f], rtol=2e-4, atol=1e-9, err_msg=f"{name} seed {seed} {f}")
    assert got["arrived"] == got["completed"] + got["unfinished"] + got["dropped"]


def test_roofline_invariants_every_slot():
    trace = tiny(seed=3)
    config = sim.SimConfig(num_slots=200, warmup_slots=20, max_users=10, max_servers=4, drain_slots=300,
                           max_candidates=6, scheduler="prada", latency_model="roofline", slot_seconds=0.01)
    params = sim.make_params(arrival_rate=0.3, server_capacity=2, bandwidth_bps=1e6)
    m, rec = sim.simulate_recorded(pack_traces(trace), mixed_table(trace, 3), params, config, jax.random.PRNGKey(5))
    rec, m = jax.device_get(rec), jax.device_get(m)
    t = rec.totals
    np.testing.assert_array_equal(t.arrived, t.completed + rec.in_system + t.dropped)  # no task lost, every slot
    assert int(m.arrived) == int(m.completed) + int(m.unfinished) + int(m.dropped)
    assert np.all(rec.min_latency >= 0.0)
    assert np.all(t.peak_in_service <= 2) and np.all(t.peak_held_bandwidth <= 1e6 * (1 + 1e-5))  # after admissions
    assert t.peak_held_bandwidth[-1] > 0  # uploads did hold bandwidth
    for name in ("stray_bandwidth", "upload_beyond_busy", "step_out_of_range", "cache_beyond_context"):
        assert not np.any(getattr(rec, name)), name
    for name in ("processing_s", "communication_s", "queuing_s", "server_compute_s"):
        assert np.all(np.diff(getattr(t, name)) >= 0), name
    assert float(m.processing_s) > 0 and float(m.server_compute_s) > 0


def test_reference_server_seconds_under_each_model():
    trace = tiny(seed=4)
    params = sim.make_params(flops_llm=5e13)
    np.testing.assert_array_equal(np.asarray(LM.reference_server_seconds(trace, params, "flops")),
                                  np.asarray(policies.flops_reference_server_seconds(trace, 5e13)))
    roof = np.asarray(LM.reference_server_seconds(trace, params, "roofline"))
    mask = np.asarray(trace.step_mask)
    assert np.all(roof[mask] > 0.01) and np.all(roof[~mask] == 0)  # >= 10 ms: memory-bound 7B decode on an H100
    table = LM.with_reference_server_seconds(policies.all_llm_table(trace), trace, params, LM.ROOFLINE)
    np.testing.assert_array_equal(np.asarray(table.server_seconds), roof)


def test_sweep_latency_model_flag(tmp_path):
    from prada_jax import sweep
    from prada_jax.sweep import runner
    from prada_jax.traces import save_trace
    from tests.conftest import make_tiny_trace

    traces = tmp_path / "traces"
    save_trace(traces / "gsm8k.npz", make_tiny_trace(seed=0))
    args = dict(datasets=["gsm8k"], policies=["all_llm", "all_slm"], episodes=2, horizon_ms=600, warmup_ms=50,
                max_users=10, drain_ms=2500, params={"arrival_rate": 0.01}, traces_dir=str(traces), supported_policies=sweep.POLICIES)
    with pytest.raises(sweep.SweepConfigError, match="--latency_model"):
        sweep.make_spec(latency_model="nope", **args)
    default = sweep.make_spec(**args)
    assert default.latency_model == "flops" and "latency_model" not in default.to_config()  # old fingerprints hold
    spec = sweep.make_spec(latency_model="roofline", **args)
    assert spec.to_config()["latency_model"] == "roofline"
    assert runner.sim_config(spec, "fifo").latency_model == "roofline"
    roof = runner.simulate_point(spec, "gsm8k", "all_llm")[0]
    flops = runner.simulate_point(default, "gsm8k", "all_llm")[0]
    assert roof["processing_ms_mean"] > 20 * flops["processing_ms_mean"]  # roofline server steps take ~0.1-0.3 s
