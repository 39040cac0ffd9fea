"""Orbax checkpoints: round trip, clear errors naming the path, resume == uninterrupted run."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_learn_ppo import known_mdp

from prada_jax import data_paths
from prada_jax.learn import checkpoints as ck
from prada_jax.learn import ppo

CFG = ppo.PPOConfig(
    num_iterations=4, update_epochs=2, batch_steps=32, num_minibatches=2, hidden=(8, 8, 8), lr_policy=1e-3
)


def test_round_trip_and_errors(tmp_path):
    state = {"w": jnp.arange(6.0).reshape(2, 3), "nested": {"i": jnp.int32(7)}}
    d = str(tmp_path / "ck")
    ck.save(d, 3, state, {"config": {"a": 1}})
    assert ck.latest_step(d) == 3
    got, meta = ck.restore(d, state, expected_meta={"config": {"a": 1}})
    np.testing.assert_array_equal(got["w"], state["w"])
    assert int(got["nested"]["i"]) == 7 and meta["config"] == {"a": 1}
    missing = str(tmp_path / "nope")
    with pytest.raises(ck.CheckpointError, match="nope.*not found"):
        ck.restore(missing, state)
    with pytest.raises(ck.CheckpointError, match=r"ck/3: .*config.a: checkpoint has 1, expected 2"):
        ck.restore(d, state, expected_meta={"config": {"a": 2}})
    with pytest.raises(ck.CheckpointError, match="ck/3: stored state does not match"):
        ck.restore(d, {"w": jnp.zeros((3, 3)), "nested": {"i": jnp.int32(0)}})
    with pytest.raises(ck.CheckpointError, match="ck/9: checkpoint step 9 not found"):
        ck.restore(d, state, step=9)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ck.CheckpointError, match="empty: no checkpoint"):
        ck.restore(str(tmp_path / "empty"), state)


class Interrupt(Exception):
    pass


def test_resume_matches_uninterrupted_run(tmp_path):
    mdp = known_mdp(num_problems=16, max_steps=4)
    key, betas = jax.random.PRNGKey(3), [0.05, 0.1]
    full, hist_full = ppo.train_resumable(CFG, key, betas, mdp, str(tmp_path / "a"), chunk=2)

    def crash(done, total, metrics):
        if done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        ppo.train_resumable(CFG, key, betas, mdp, str(tmp_path / "b"), chunk=2, on_chunk=crash)
    assert ck.latest_step(str(tmp_path / "b")) == 2
    with pytest.raises(ck.CheckpointError, match="checkpoints exist"):
        ppo.train_resumable(CFG, key, betas, mdp, str(tmp_path / "b"), chunk=2)
    resumed, hist_res = ppo.train_resumable(CFG, key, betas, mdp, str(tmp_path / "b"), chunk=2, resume=True)
    for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(x, y)
    assert hist_full == hist_res and len(hist_full["policy_loss"][0]) == 4
    other = ppo.PPOConfig(**{**CFG.__dict__, "clip_eps": 0.3})
    with pytest.raises(ck.CheckpointError, match="b/4: .*clip_eps"):
        ppo.train_resumable(other, key, betas, mdp, str(tmp_path / "b"), chunk=2, resume=True)
    with pytest.raises(ck.CheckpointError, match="b/4: .*seed: checkpoint has '<missing>', expected 5"):
        ppo.train_resumable(CFG, key, betas, mdp, str(tmp_path / "b"), chunk=2, resume=True, meta={"seed": 5})


def test_restore_falls_back_to_the_newest_intact_step(tmp_path):
    """A deleted orbax data file in the newest step: restore warns and returns the step before it."""
    import glob
    import os

    import jax.numpy as jnp
    import numpy as np

    from prada_jax.learn import checkpoints as ck

    d = str(tmp_path / "ckpt")
    ck.save(d, 1, {"w": jnp.ones(3)}, {"a": 1})
    ck.save(d, 2, {"w": 2 * jnp.ones(3)}, {"a": 1})
    for path in glob.glob(os.path.join(d, "2", "state", "**", "d", "*"), recursive=True):
        os.remove(path)
    state, meta = ck.restore(d, {"w": jnp.zeros(3)}, expected_meta={"a": 1})
    np.testing.assert_array_equal(np.asarray(state["w"]), np.ones(3))
    with pytest.raises(ck.CheckpointError, match="does not match this run"):
        ck.restore(d, {"w": jnp.zeros(3)}, expected_meta={"a": 2})  # a config mismatch is never "fallen back"


def test_second_writer_gets_a_one_line_error_naming_the_lock(tmp_path):
    """F3: one writer per training directory; a second one fails at once, or waits when asked to."""
    import threading

    d = str(tmp_path / "ck" / "gsm8k")
    lock, waited = ck.acquire_lock(d)
    assert not waited
    with pytest.raises(ck.LockHeldError) as err:
        ck.acquire_lock(d)
    assert "being written by another training run" in str(err.value) and ".train.lock" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ck.LockHeldError, match="still being written"):
        ck.acquire_lock(d, wait=True, timeout=0.2)
    threading.Timer(0.3, lock.release).start()
    second, waited = ck.acquire_lock(d, wait=True, timeout=30)
    assert waited and second.is_locked
    second.release()


def test_output_folder_problem_and_latest_meta(tmp_path):
    """F4: a --ckpt_dir that is a file (or lies under one) is named before anything is written; the meta a
    --resume would read is available without loading arrays."""
    (tmp_path / "file").write_text("x")
    problem = data_paths.output_folder_problem
    assert problem(str(tmp_path / "file")) == f"{tmp_path / 'file'} is not a folder"
    assert problem(str(tmp_path / "file" / "gsm8k" / "ppo")) == f"{tmp_path / 'file'} is not a folder"
    assert problem(str(tmp_path / "new" / "deeper")) is None
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if not os.access(read_only, os.W_OK):  # root may write anywhere
        assert problem(str(read_only / "out")) == f"{read_only} is not writable"
    assert problem(str(read_only / "out"), writable=False) is None
    assert not (tmp_path / "new").exists()
    d = str(tmp_path / "ppo")
    assert ck.latest_meta(d) is None
    ck.save(d, 1, {"w": jnp.ones(2)}, {"seed": 1})
    ck.save(d, 2, {"w": jnp.ones(2)}, {"seed": 1, "config": {"num_iterations": 4}})
    path, meta = ck.latest_meta(d)
    assert path.endswith("ppo/2") and meta["config"] == {"num_iterations": 4}
    assert ck.meta_diff({"seed": 2, "config": {"num_iterations": 4}}, meta) == ["seed: checkpoint has 1, expected 2"]


def test_reports_of_reads_abandoned_by_a_damaged_step_are_dropped_others_kept(monkeypatch):
    """A damaged newest step makes orbax abandon read coroutines; their garbage-collected failures used to print
    about 100 'Exception ignored in: <coroutine ...>' / 'Event loop is closed' tracebacks after a fallback that
    worked. The hook drops exactly those; any other unraisable exception still reaches Python's hook."""
    import sys
    import types

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    ck._quiet_abandoned_reads()
    namespace = {}
    exec(compile("async def _read():\n    pass\n", "/site-packages/orbax/checkpoint/serialization.py", "exec"),
         namespace)
    orbax_read = namespace["_read"]()
    report = lambda obj, exc: types.SimpleNamespace(object=obj, exc_value=exc, exc_type=type(exc),  # noqa: E731
                                                    exc_traceback=None, err_msg=None)
    sys.unraisablehook(report(orbax_read, Exception("Encountered error while reading array index")))
    sys.unraisablehook(report(None, RuntimeError("Event loop is closed")))
    other = ValueError("someone else's")
    sys.unraisablehook(report(object(), other))
    orbax_read.close()
    assert seen == [other]
    assert ck._short(ValueError("first line\n{ 'spec': ... }")) == "ValueError: first line"
