"""Issue 14, item 3 plumbing: the sweep's --slot_ms, Stage-1 training under --latency_model, and the table cache
key (docs/latency.md, section 6)."""

from __future__ import annotations

import json
import subprocess
import sys

import cli_inprocess
import jax.numpy as jnp
import numpy as np
import pytest

from prada_jax import constants as C
from prada_jax import sweep
from prada_jax.learn import aux
from prada_jax.learn import mdp as M
from prada_jax.sim import latency_models as LM
from prada_jax.sim.params import SimConfig, make_params
from prada_jax.traces import load_trace, pack_traces, save_trace
from tests.conftest import REPO_ROOT, make_tiny_trace


@pytest.fixture
def traces_dir(tmp_path):
    d = tmp_path / "traces"
    save_trace(d / "gsm8k.npz", make_tiny_trace(seed=0))
    return str(d)


def spec_for(traces_dir, **kw):
    args = dict(datasets=["gsm8k"], policies=["all_slm"], episodes=2, horizon_ms=200, warmup_ms=20, max_users=16,
                drain_ms=400, traces_dir=traces_dir, supported_policies=sweep.POLICIES)
    args.update(kw)
    return sweep.make_spec(**args)


# ---- --slot_ms ----


@pytest.mark.parametrize("override, flag", [
    (dict(slot_ms=0.0), "slot_ms"),
    (dict(slot_ms=float("nan")), "slot_ms"),
    (dict(slot_ms=-20.0), "slot_ms"),
    (dict(slot_ms=20.0, horizon_ms=210), "horizon_ms"),
    (dict(slot_ms=20.0, warmup_ms=30), "warmup_ms"),
    (dict(slot_ms=20.0, drain_ms=410), "drain_ms"),
    (dict(slot_ms=500.0), "horizon_ms"),  # shorter than one slot
])
def test_bad_slot_lengths_name_the_flag(traces_dir, override, flag):
    with pytest.raises(sweep.SweepConfigError) as info:
        spec_for(traces_dir, **override)
    assert info.value.flag == flag and str(info.value).startswith(f"--{flag}:") and "\n" not in str(info.value)


def test_slot_ms_converts_lengths_and_the_arrival_rate(traces_dir):
    spec = spec_for(traces_dir, slot_ms=20.0, params={"arrival_rate": 0.002}, sweep_param="arrival_rate",
                    sweep_values=[0.001, 0.004], policies=["all_slm"])
    config = sweep.sim_config(spec, "fifo")
    assert (config.num_slots, config.warmup_slots, config.drain_slots) == (10, 1, 20)
    assert config.slot_seconds == pytest.approx(0.02)
    # tasks per ms x 20 ms = tasks per slot, for swept values too
    np.testing.assert_allclose(np.asarray(sweep.params_grid(spec).arrival_rate), [0.02, 0.08], rtol=1e-6)
    assert spec.to_config()["slot_ms"] == 20.0


def test_default_slot_is_the_old_one_ms_sweep(traces_dir):
    """slot_ms = 1 (the default) builds exactly the SimConfig, params and fingerprint of the sweep before the flag."""
    spec = spec_for(traces_dir, sweep_param="arrival_rate", sweep_values=[0.5, 3.0])
    assert spec.slot_ms == 1.0 and "slot_ms" not in spec.to_config()
    old = SimConfig(num_slots=200, warmup_slots=20, drain_slots=400, max_users=16, max_servers=C.DEFAULT_SERVER_CAPACITY,
                    max_arrivals_per_slot=None, scheduler="fifo", stage1_sampling=False,
                    latency_model=C.DEFAULT_LATENCY_MODEL)
    assert sweep.sim_config(spec, "fifo") == old
    np.testing.assert_array_equal(np.asarray(sweep.params_grid(spec).arrival_rate), np.float32([0.5, 3.0]))
    explicit = spec_for(traces_dir, sweep_param="arrival_rate", sweep_values=[0.5, 3.0], slot_ms=1.0)
    assert explicit == spec
    a, b = (sweep.simulate_point(s, "gsm8k", "all_slm") for s in (spec, explicit))
    assert [{k: v for k, v in r.items() if k != "point_seconds"} for r in a] == \
           [{k: v for k, v in r.items() if k != "point_seconds"} for r in b]


def test_small_sweep_at_20ms_slots_accounts_for_every_task(traces_dir):
    spec = spec_for(traces_dir, slot_ms=20.0, horizon_ms=4000, warmup_ms=400, drain_ms=20000,
                    params={"arrival_rate": 0.002}, policies=["all_llm"], latency_model="roofline")
    (row,) = sweep.simulate_point(spec, "gsm8k", "all_llm")
    assert 0.0 < row["accuracy_mean"] <= 1.0
    assert row["processing_ms_mean"] > 50.0  # roofline server steps take tens to hundreds of ms


def test_cli_rejects_a_horizon_off_the_slot_grid_before_work(tmp_path):
    out = tmp_path / "out"
    proc = cli_inprocess.run("prada_jax.cli.sweep", "--flagfile=smoke.cfg", f"--out_dir={out}", "--slot_ms=20",
                             "--horizon_ms=2010")
    assert proc.returncode != 0 and "--horizon_ms: 2010 ms is not a whole number of --slot_ms=20" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


# ---- Stage-1 training under a latency model ----


def test_roofline_mdp_costs_are_the_latency_models_batch1_times():
    packed = pack_traces(make_tiny_trace(seed=1))
    ts, tl = M.reference_step_seconds(packed, latency_model="roofline")
    params = make_params(prefix_cache=False)
    ctx = M.reference_context(packed)
    cached = jnp.where(jnp.arange(packed.max_steps)[None, :] == 0, 0, ctx)
    zero = jnp.zeros(ctx.shape, jnp.float32)
    model = LM.get("roofline")
    mask = np.asarray(packed.step_mask)
    np.testing.assert_array_equal(np.asarray(ts)[mask],
                                  np.asarray(model.local_step(ctx, cached, packed.slm_step_tokens, params))[mask])
    np.testing.assert_array_equal(
        np.asarray(tl)[mask],
        np.asarray(model.server_step(ctx, 0, packed.llm_step_tokens, params, LM.ServerLoad(zero, zero)))[mask])
    assert np.all(np.asarray(ts)[~mask] == 0) and np.all(np.asarray(tl)[~mask] == 0)
    # D_psi's truth is the roofline reference server time of the simulator's D_psi replacement
    np.testing.assert_allclose(np.asarray(aux.server_seconds_truth(packed, latency_model="roofline")),
                               np.asarray(LM.reference_server_seconds(make_tiny_trace(seed=1), params, LM.ROOFLINE)), rtol=1e-6)
    mdp = M.make_mdp(packed, latency_model="roofline")
    np.testing.assert_allclose(np.asarray(mdp.cost[..., 0]), np.asarray(ts, np.float32), rtol=1e-6)  # jit vs eager


def test_flops_default_costs_are_unchanged():
    packed = pack_traces(make_tiny_trace(seed=2))
    default, explicit = M.make_mdp(packed), M.make_mdp(packed, latency_model="flops")
    np.testing.assert_array_equal(np.asarray(default.cost), np.asarray(explicit.cost))
    ts, tl = M.reference_step_seconds(packed)
    from prada_jax import costs

    ctx = M.reference_context(packed)
    want = costs.server_step_seconds(ctx, 0, packed.llm_step_tokens, C.FLOPS_LLM, False)
    np.testing.assert_array_equal(np.asarray(tl), np.asarray(jnp.where(packed.step_mask, want, 0.0)))
    np.testing.assert_array_equal(np.asarray(aux.server_seconds_truth(packed)), np.asarray(tl))


def test_train_cli_roofline_records_its_latency_model(tmp_path, traces_dir):
    """Through a real `python -m prada_jax.cli.train` process (the other training-command tests run it in
    process)."""
    ckpt = tmp_path / "ckpt"
    args = ["--datasets=gsm8k", f"--trace_dir={traces_dir}", f"--ckpt_dir={ckpt}", "--epochs=1", "--update_epochs=1",
            "--batch_steps=32", "--num_minibatches=1", "--aux_steps=50", "--frontier_betas=", "--beta=0.2", "--chunk=1"]
    bad = cli_inprocess.run("prada_jax.cli.train", *args, "--latency_model=warp")
    assert bad.returncode != 0 and "--latency_model" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.run([sys.executable, "-m", "prada_jax.cli.train", *args, "--latency_model=roofline"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((ckpt / "gsm8k" / "eval.json").read_text())
    assert record["latency_model"] == "roofline" and record["beta"] == 0.2
    packed = pack_traces(load_trace(f"{traces_dir}/gsm8k.npz"))
    ts, tl = M.reference_step_seconds(packed, latency_model="roofline")
    mask = np.asarray(packed.step_mask)
    assert record["mean_step_cost_s"]["llm"] == pytest.approx(float(np.asarray(tl)[mask].mean()), rel=1e-5)
    from prada_jax.learn import tables

    assert tables.table_metadata(str(ckpt / "gsm8k" / "policy_table.npz"))["latency_model"] == "roofline"


# ---- the sweep's table cache is keyed on the latency model ----


def test_table_paths_and_checks_are_keyed_on_the_latency_model(traces_dir, tmp_path):
    from prada_jax.learn import tables
    from prada_jax.sim import policies as P

    ckpt = str(tmp_path / "ckpt")
    flops_path = sweep.learned_table_paths(ckpt, "gsm8k")[0]
    roof_path = sweep.learned_table_paths(ckpt, "gsm8k", "roofline")[0]
    assert flops_path == f"{ckpt}/gsm8k/policy_table.npz" and roof_path == f"{ckpt}/roofline/gsm8k/policy_table.npz"
    spec = spec_for(traces_dir, ckpt_dir=ckpt, policies=["prada"], latency_model="roofline", table_beta=0.2)
    trace = load_trace(spec.trace_path("gsm8k"))
    # A flops-trained record placed in the roofline folder is refused, not silently used.
    table_path, eval_path = sweep.learned_table_paths(ckpt, "gsm8k", "roofline")
    tables.save_table(table_path, P.all_llm_table(trace), trace_sha256=tables.file_sha256(spec.trace_path("gsm8k")))
    with open(eval_path, "w") as handle:
        json.dump({"beta": 0.2}, handle)
    with pytest.raises(sweep.PolicyTableError, match="trained under --latency_model=flops"):
        sweep.learned_table(spec, "gsm8k", trace)
    with open(eval_path, "w") as handle:
        json.dump({"beta": 0.2, "latency_model": "roofline"}, handle)
    sweep.learned_table(spec, "gsm8k", trace)
    assert spec.to_config()["table_sha256"]["gsm8k"] == tables.file_sha256(table_path)
    # the flops sweep of the same ckpt_dir does not see the roofline table (it would train its own)
    flops_spec = spec_for(traces_dir, ckpt_dir=ckpt, policies=["prada"], table_beta=0.2)
    assert flops_spec.to_config()["table_sha256"]["gsm8k"] is None


@pytest.mark.parametrize("name", ["roofline_table2", "roofline_capacity", "roofline_bandwidth"])
def test_roofline_study_configs_parse_with_20ms_slots(name):
    from absl import flags

    fv = flags.FlagValues()
    sweep.define_flags(fv)
    fv(sweep.resolve_flagfile_argv(["prog", f"--flagfile={name}.cfg"]))
    spec = sweep.spec_from_flags(fv, supported_policies=sweep.POLICIES)
    assert spec.latency_model == "roofline" and spec.slot_ms == 20.0 and spec.table_beta == 0.2
    config = sweep.sim_config(spec, "prada")
    assert config.num_slots * config.slot_seconds == pytest.approx(spec.horizon_ms / 1e3)
    assert float(sweep.params_grid(spec).arrival_rate.reshape(-1)[0]) == pytest.approx(0.004 * 20)  # 4 tasks/s
