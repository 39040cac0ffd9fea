"""prada_jax.sharding: padding / mesh helpers, and a 4-device run identical to the single-device simulator
whose compiled program has no collectives.

The multi-device check runs in a subprocess because XLA_FLAGS=--xla_force_host_platform_device_count must be
set before jax is imported (this test process has already imported it with one device).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from conftest import DEFAULT_EMITTER_XLA_FLAGS, TEST_XLA_FLAGS

from prada_jax import sharding

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    import jax
    import numpy as np
    from jax.sharding import Mesh
    from sim_helpers import mixed_table, tiny
    from prada_jax import sharding
    from prada_jax.sim import SimConfig, param_grid, run, simulate_grid
    from prada_jax.traces import pack_traces

    trace = tiny(seed=0)
    packed, table = pack_traces(trace), mixed_table(trace, 0)
    config = SimConfig(num_slots=150, warmup_slots=20, max_users=8, max_servers=4, drain_slots=100,
                       max_candidates=6)
    grid = param_grid(bandwidth_bps=[1e5, 1e6, 4e7], arrival_rate=[0.5], server_capacity=[2])
    episodes, seed = 7, 3  # neither 3 nor 7 divides 4 devices: both axes get padded and trimmed
    # The single-device jit, called directly: simulate_grid itself spreads over the 4 devices.
    want = run._simulate_grid(packed, table, grid, run._check(packed, table, grid, config),
                              run.episode_keys(episodes, seed))

    def compare(got):
        bad = []
        for name in want.__dataclass_fields__:
            a, b = np.asarray(getattr(want, name)), np.asarray(getattr(got, name))
            if a.shape != b.shape or not np.array_equal(a, b):
                bad.append(name)
        return bad

    default = sharding.simulate_grid_sharded(packed, table, grid, config, episodes, seed)
    auto = simulate_grid(packed, table, grid, config, episodes, seed)
    mesh = Mesh(np.asarray(jax.devices()).reshape(2, 2), (sharding.GRID_AXIS, sharding.EPISODE_AXIS))
    fn, args, trim = sharding.prepare_sharded(packed, table, grid, config, episodes, seed, mesh)
    compiled = fn.lower(*args).compile()
    out = compiled(*args)
    hlo = compiled.as_text()

    # The exact cap (ladder 4, 8): the re-runs of overflowed episodes are spread over the devices too.
    import dataclasses
    exact_config = dataclasses.replace(config, max_candidates=None, candidate_cap_start=4)
    keys = run.episode_keys(episodes, seed)

    def first(cfg, stop):
        return run._simulate_grid(packed, table, grid, cfg, keys, stop)

    def pairs(cfg, over, stop):  # one device, unpadded
        params = jax.tree.map(lambda leaf: np.asarray(leaf)[over[0]], grid)
        return run._simulate_pairs(packed, table, params, cfg, np.asarray(keys)[over[1]], stop)

    want_exact = run.exact_cap(first, pairs, run._check(packed, table, grid, exact_config))
    got_exact = simulate_grid(packed, table, grid, exact_config, episodes, seed)
    exact_bad = [name for name in want_exact.__dataclass_fields__
                 if not np.array_equal(np.asarray(getattr(want_exact, name)), np.asarray(getattr(got_exact, name)))]
    print(json.dumps({
        "exact_mismatch": exact_bad,
        "exact_caps": sorted({int(c) for c in np.asarray(got_exact.candidate_cap).ravel()}),
        "devices": jax.device_count(),
        "default_mesh": dict(sharding.make_mesh(3, episodes).shape),
        "default_mismatch": compare(default),
        "spreads": sharding.spreads_over_devices(),
        "auto_mismatch": compare(auto),
        "auto_types": sorted({type(x).__name__ for x in jax.tree.leaves(auto)}),
        "mesh22_mismatch": compare(trim(out)),
        "shard_shapes": sorted({tuple(s.data.shape) for s in out.completed.addressable_shards}),
        "completed_total": int(np.asarray(want.completed).sum()),
        "result_shape": list(np.shape(default.completed)),
        "collectives": sorted({op for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute",
                                              "reduce-scatter") if op + "(" in hlo or op + "-start(" in hlo}),
    }))
    """
)


def test_pad_to_multiple():
    assert sharding.pad_to_multiple(7, 4) == 8
    assert sharding.pad_to_multiple(8, 4) == 8
    assert sharding.pad_to_multiple(1, 1) == 1
    with pytest.raises(sharding.ShardingError):
        sharding.pad_to_multiple(0, 4)


def test_mesh_shape_minimises_padding():
    assert sharding.mesh_shape(4, grid_size=3, episodes=7) == (1, 4)  # 3 x 8 beats 4 x 8 and 4 x 7
    assert sharding.mesh_shape(4, grid_size=10, episodes=256) == (1, 4)  # ties go to the episode axis
    assert sharding.mesh_shape(4, grid_size=4, episodes=3) == (4, 1)  # episodes would need padding
    assert sharding.mesh_shape(1, grid_size=5, episodes=5) == (1, 1)
    with pytest.raises(sharding.ShardingError):
        sharding.mesh_shape(0, 1, 1)


def test_rejects_bad_arguments(tiny_trace):
    from prada_jax.sim import SimConfig, SimParamsError, make_params, param_grid, policies
    from prada_jax.traces import pack_traces

    packed, table = pack_traces(tiny_trace), policies.all_llm_table(tiny_trace)
    config = SimConfig(num_slots=60, warmup_slots=10, max_users=6, max_servers=3, drain_slots=50, scheduler="fifo")
    grid = param_grid(bandwidth_bps=[1e6, 4e7], server_capacity=[2])
    with pytest.raises(SimParamsError, match="episodes"):  # the API's one error type, as simulate_grid raises it
        sharding.simulate_grid_sharded(packed, table, grid, config, 0, 0)
    with pytest.raises(sharding.ShardingError, match="grid axis"):
        sharding.simulate_grid_sharded(packed, table, make_params(server_capacity=2), config, 4, 0)


def test_four_host_devices_match_single_device():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = DEFAULT_EMITTER_XLA_FLAGS  # the tests' flags without a device count; bit-for-bit checks
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    assert result["default_mesh"] == {"grid": 1, "episodes": 4}
    assert result["default_mismatch"] == [], result
    assert result["spreads"] is True
    assert result["auto_mismatch"] == [], result  # simulate_grid spreads over the devices, same numbers
    assert result["auto_types"] == ["ArrayImpl"], result  # device arrays, as on one device
    assert result["mesh22_mismatch"] == [], result
    assert result["shard_shapes"] == [[2, 4]], result  # G 3 -> 4 over 2, E 7 -> 8 over 2
    assert result["result_shape"] == [3, 7]
    assert result["completed_total"] > 0
    assert result["exact_mismatch"] == [], result  # the exact cap's re-runs over 4 devices: the same numbers
    assert len(result["exact_caps"]) > 1, result  # some episodes were re-run at a larger cap
    # Each device runs its own episodes (shard_map): no cross-device communication inside the rollout.
    assert result["collectives"] == [], result


CORES_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    from prada_jax import sharding
    asked = sharding.use_cpu_cores(int(sys.argv[1]))
    before = sharding.spreads_over_devices()
    try:
        sharding.use_cpu_cores(1)
        late = "no error"
    except sharding.ShardingError as err:
        late = str(err)
    print(json.dumps({"asked": asked, "devices": jax.device_count(), "spreads": before, "late": late}))
    """
)


@pytest.mark.parametrize("count, want", [(3, 3), (0, sharding.available_cores())])
def test_use_cpu_cores_sets_the_device_count_before_jax_starts(count, want):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    env["XLA_FLAGS"] = TEST_XLA_FLAGS  # the tests' flags without a device count
    proc = subprocess.run([sys.executable, "-c", CORES_SCRIPT, str(count)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["asked"] == want and result["devices"] == want
    assert result["spreads"] is (want > 1)
    assert "already initialised" in result["late"] and "--cpu_devices=1" in result["late"]


def test_use_cpu_cores_rejects_a_negative_count():
    with pytest.raises(sharding.ShardingError, match="--cpu_devices must be >= 0"):
        sharding.use_cpu_cores(-1)


def test_maybe_initialize_distributed_is_off_by_default(monkeypatch):
    monkeypatch.delenv(sharding.DISTRIBUTED_ENV, raising=False)
    assert sharding.maybe_initialize_distributed() is False


def test_stage2_cost_probes_run_and_offload_nothing(tmp_path):
    """`python -m studies stage2_cost` end to end at tiny sizes (in this process, tests/cli_inprocess.py): four
    variants in order, the probes offload no step (they bound the cost of the slot without Stage 2), prada does,
    and the bound is prada's time over the first."""
    import cli_inprocess

    out = tmp_path / "cost.json"
    proc = cli_inprocess.run("studies", "stage2_cost", "--episodes=3", "--horizon_ms=60", "--max_users=16",
                             "--repeats=1", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["cost_probe_none", "cost_probe_compaction", "cost_probe_tq", "prada"]
    assert all(r["arrived"] > 0 for r in rows)
    assert [r["offloaded_steps"] for r in rows[:3]] == [0, 0, 0] and rows[3]["offloaded_steps"] > 0
    assert result["stage2_speedup_bound"] == pytest.approx(rows[3]["run_s"] / rows[0]["run_s"])
    assert "upper bound on any Stage-2 speed-up" in proc.stdout


def test_prepare_grid_on_one_device_is_simulate_grid(tiny_trace):
    """What the benchmark times on one device (prepare_grid's plain jit) gives simulate_grid's numbers."""
    import jax
    import numpy as np

    from prada_jax.sim import SimConfig, param_grid, policies, simulate_grid
    from prada_jax.traces import pack_traces

    assert not sharding.spreads_over_devices()  # the test process has one CPU device
    packed, table = pack_traces(tiny_trace), policies.all_llm_table(tiny_trace)
    config = SimConfig(num_slots=60, warmup_slots=10, max_users=6, max_servers=3, drain_slots=50, scheduler="fifo")
    grid = param_grid(bandwidth_bps=[1e6, 4e7], server_capacity=[2])
    fn, args, trim = sharding.prepare_grid(packed, table, grid, config, 3, 5)
    got = trim(fn.lower(*args).compile()(*args))
    want = simulate_grid(packed, table, grid, config, 3, 5)
    assert int(np.sum(want.arrived)) > 0
    for name in want.__dataclass_fields__:
        assert np.array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(want, name))), name
    assert jax.tree.structure(got) == jax.tree.structure(want)
