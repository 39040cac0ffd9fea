"""prada_jax.learn.headroom and studies/stage1_headroom.py: hand values, an exact recovery, the CLI end to end
(the first run through a real `python -m studies` process, the others in this process: tests/cli_inprocess.py)."""

import json
import os
import subprocess
import sys

import cli_inprocess
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_trace
from scipy import stats

from prada_jax.learn import headroom
from prada_jax.learn import mdp as M
from prada_jax.traces import save_trace

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mdp(obs, advantage, mask):
    """A StepMDP whose offload advantage at any beta is `advantage` (no cost, SLM gain 0)."""
    gain = jnp.stack([jnp.zeros_like(advantage), advantage], -1)
    return M.StepMDP(obs=jnp.asarray(obs, jnp.float32), step_mask=jnp.asarray(mask), gain=gain.astype(jnp.float32),
                     cost=jnp.zeros_like(gain, jnp.float32), prm_start=jnp.zeros(mask.shape[0], jnp.float32))


def test_return_over_all_slm_by_hand():
    adv = np.array([[0.1, -0.2, 0.3], [0.5, 0.25, -1.0]])
    actions = np.array([[1, 1, 1], [0, 1, 1]])
    mask = np.array([[True, True, False], [True, True, True]])
    # problem 0: 0.1 - 0.2 (the padded 0.3 is ignored); problem 1: 0.25 - 1.0
    np.testing.assert_allclose(headroom.return_over_all_slm(adv, actions, mask), [-0.1, -0.75])


def test_offload_advantage_is_the_reward_difference():
    rng = np.random.default_rng(1)
    mask = rng.random((5, 4)) < 0.8
    gain = rng.normal(size=(5, 4, 2)).astype(np.float32)
    cost = rng.uniform(0.001, 0.01, size=(5, 4, 2)).astype(np.float32)
    mdp = M.StepMDP(obs=jnp.zeros((5, 4, 2)), step_mask=jnp.asarray(mask), gain=jnp.asarray(gain),
                    cost=jnp.asarray(cost), prm_start=jnp.zeros(5))
    beta = 10.0
    expected = np.where(mask, (gain[..., 1] - beta * cost[..., 1]) - (gain[..., 0] - beta * cost[..., 0]), 0.0)
    np.testing.assert_allclose(headroom.offload_advantage(mdp, beta), expected, rtol=1e-5, atol=1e-6)


def test_ridge_recovers_a_quadratic_rule_and_generalises():
    """If the advantage is a noiseless quadratic of the features, the fit is exact: the ridge rule equals the
    optimum on held-out problems too."""
    rng = np.random.default_rng(0)
    n, k = 60, 5
    obs = rng.normal(size=(n, k, 2))
    adv = 0.3 - obs[..., 0] ** 2 + 0.5 * obs[..., 1]
    mask = rng.random((n, k)) < 0.9
    mdp = _mdp(obs, jnp.asarray(np.where(mask, adv, 0.0)), mask)
    train = np.arange(n) < 40
    actions = headroom.ridge_actions(mdp, headroom.offload_advantage(mdp, 1.0), train)
    optimum = mask & (adv > 0.0)
    margin = np.abs(adv) > 1e-3  # the ridge penalty may flip steps whose advantage is ~0
    np.testing.assert_array_equal(actions.astype(bool)[margin], optimum[margin])
    assert not actions[~mask].any()  # never on padding


def test_ridge_on_pure_noise_offloads_little_and_gains_nothing():
    rng = np.random.default_rng(2)
    n, k = 400, 6
    obs = rng.normal(size=(n, k, 3))
    adv = rng.normal(-0.05, 0.1, size=(n, k))  # independent of the features, negative mean: All-SLM is best
    mask = np.ones((n, k), bool)
    mdp = _mdp(obs, jnp.asarray(adv), mask)
    train = np.arange(n) < 300
    actions = headroom.ridge_actions(mdp, headroom.offload_advantage(mdp, 1.0), train)
    summary = headroom.summarize_policy(adv, actions, mask, ~train)
    assert summary["offload_fraction"] < 0.1
    assert summary["return_over_all_slm"] <= 0.0


def test_summary_interval_and_paired_difference_match_scipy():
    rng = np.random.default_rng(3)
    adv = rng.normal(size=(12, 3))
    mask = rng.random((12, 3)) < 0.8
    mask[:, 0] = True
    a = rng.random((12, 3)) < 0.5
    b = rng.random((12, 3)) < 0.5
    problems = np.arange(12) >= 2
    s = headroom.summarize_policy(adv, a, mask, problems, baseline_actions=b)
    per_a = np.array([adv[i][a[i] & mask[i]].sum() for i in range(12)])[problems]
    per_b = np.array([adv[i][b[i] & mask[i]].sum() for i in range(12)])[problems]
    lo, hi = stats.t.interval(0.95, per_a.size - 1, loc=per_a.mean(), scale=stats.sem(per_a))
    assert s["num_problems"] == 10
    np.testing.assert_allclose([s["return_over_all_slm"], s["ci95"]], [per_a.mean(), (hi - lo) / 2])
    diff = per_a - per_b
    lo, hi = stats.t.interval(0.95, diff.size - 1, loc=diff.mean(), scale=stats.sem(diff))
    np.testing.assert_allclose([s["minus_baseline"], s["minus_baseline_ci95"]], [diff.mean(), (hi - lo) / 2])
    assert s["offload_fraction"] == pytest.approx(a[problems][mask[problems]].mean())


def _run(*args, process=False):
    if process:
        return subprocess.run([sys.executable, "-m", "studies", "stage1_headroom", "--cpu_devices=1", *args],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    return cli_inprocess.run("studies", "stage1_headroom", "--cpu_devices=1", *args)


def _fatal(proc) -> str:
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and last.startswith("FATAL"), proc.stderr[-2000:]
    return last


def test_cli_without_tables_and_bad_flags(tmp_path):
    traces_dir = tmp_path / "traces"
    traces_dir.mkdir()
    save_trace(traces_dir / "tiny.npz", make_tiny_trace(num_problems=40, max_steps=4))
    out = tmp_path / "headroom.json"
    args = ["--datasets=tiny", f"--traces_dir={traces_dir}", f"--ckpt_dir={tmp_path / 'none'}"]
    proc = _run(*args, "--betas=0,10", f"--out={out}", process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["results"]["tiny"]
    assert set(result) == {"0", "10"}  # no table: no pi_theta row, only the requested betas
    for row in result.values():
        assert set(row) == {"optimum", "ridge"}
        assert row["optimum"]["return_over_all_slm"] >= row["ridge"]["return_over_all_slm"] - 1e-12
    for bad, needle in (("--betas=abc", "--betas"), (f"--out={tmp_path}", "--out"),
                        ("--heldout_fraction=1", "--heldout_fraction")):
        assert needle in _fatal(_run(*args, bad))
    assert "absent.npz" in _fatal(_run("--datasets=tiny,absent", *args[1:], f"--out={out}"))


def test_cli_scores_pi_theta_on_its_own_split_and_beta(tmp_path):
    """With a table: pi_theta is scored at the table's beta on the held-out problems of the split its models
    checkpoint records (not --seed / --heldout_fraction), against numbers recomputed here; a table of another
    trace or a checkpoint without the split is refused before any work."""
    from prada_jax.learn import checkpoints, tables
    from prada_jax.sim.policies import PolicyTable
    from prada_jax.traces import file_sha256, pack_traces

    traces_dir, ckpt = tmp_path / "traces", tmp_path / "ck"
    traces_dir.mkdir()
    trace = make_tiny_trace(num_problems=40, max_steps=4, seed=5)
    trace_path = traces_dir / "tiny.npz"
    save_trace(trace_path, trace)
    prob = np.random.default_rng(0).uniform(0.0, 1.0, (40, 4)).astype(np.float32)
    table = PolicyTable(nominate_prob=prob, advantage=np.zeros_like(prob), server_seconds=np.zeros_like(prob))
    tables.save_table(str(ckpt / "tiny" / "policy_table.npz"), table, trace_sha256=file_sha256(trace_path),
                      dataset="tiny", beta=7.0)
    checkpoints.save(str(ckpt / "tiny" / "models"), 0, {"w": np.zeros(2)}, {"seed": 3, "heldout_fraction": 0.25})
    out = tmp_path / "h.json"
    args = ["--datasets=tiny", f"--traces_dir={traces_dir}", f"--ckpt_dir={ckpt}", f"--out={out}"]
    proc = _run(*args, "--betas=0", "--seed=9", "--heldout_fraction=0.5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["results"]["tiny"]
    assert set(result) == {"0", "7"} and "pi_theta" in result["7"] and "pi_theta" not in result["0"]

    packed = pack_traces(trace)
    train = M.split_problems(40, 0.25, 3)
    mdp = M.make_mdp(packed, M.feature_stats(packed, train))
    r = np.asarray(M.reward_table(mdp, 7.0), np.float64)
    mask = np.asarray(packed.step_mask)
    per_problem = [sum(r[n, k, 1] - r[n, k, 0] for k in range(4) if mask[n, k] and prob[n, k] > 0.5)
                   for n in range(40) if not train[n]]
    got = result["7"]["pi_theta"]
    assert got["num_problems"] == 10
    np.testing.assert_allclose(got["return_over_all_slm"], np.mean(per_problem), rtol=1e-5, atol=1e-7)
    held = mask & ~train[:, None]
    assert got["offload_fraction"] == pytest.approx((prob > 0.5)[held].mean())

    other = traces_dir / "other.npz"
    save_trace(other, make_tiny_trace(num_problems=40, max_steps=4, seed=6))
    tables.save_table(str(ckpt / "tiny" / "policy_table.npz"), table, trace_sha256=file_sha256(other),
                      dataset="tiny", beta=7.0)
    assert "policy_table.npz" in _fatal(_run(*args))
    tables.save_table(str(ckpt / "tiny" / "policy_table.npz"), table, trace_sha256=file_sha256(trace_path),
                      dataset="tiny", beta=7.0)
    checkpoints.save(str(ckpt / "tiny" / "models"), 1, {"w": np.zeros(2)}, {"dataset": "tiny"})
    assert "heldout_fraction" in _fatal(_run(*args))
