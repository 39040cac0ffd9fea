"""prada-train (prada_jax.cli.train) rejects bad flags before any work starts, naming the flag.

The command runs in this process (tests/cli_inprocess.py: as `python -m prada_jax.cli.train` would, without a
process's 2 s of imports); the lock test's waiter is a real process, since it must wait while this one holds the
lock, and tests/test_roofline_study.py trains through a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import cli_inprocess
import pytest
from conftest import REPO_ROOT


def _train(*args):
    return cli_inprocess.run("prada_jax.cli.train", *args)


@pytest.mark.parametrize(
    "flag,needle",
    [("--aux_steps=20", "--aux_steps"), ("--frontier_betas=3,abc", "--frontier_betas"), ("--epochs=0", "--epochs"),
     ("--heldout_fraction=1.5", "--heldout_fraction"), ("--lr=-1", "--lr"), ("--datasets=nope", "--datasets"),
     ("--seed=4294967296", "--seed")],
)
def test_bad_flags_fail_fast(tmp_path, flag, needle):
    proc = _train(flag, f"--ckpt_dir={tmp_path}")
    assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, no usage text
    assert not any(tmp_path.iterdir())


def test_shipped_checkpoints_are_not_overwritten_by_default():
    proc = _train("--datasets=gsm8k", "--ckpt_dir=checkpoints")
    assert proc.returncode != 0 and "--ckpt_dir=checkpoints already holds a trained table" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["garbled_summary", "ckpt_dir_is_a_file"])
def test_unusable_ckpt_dir_fails_before_any_work(tmp_path, case):
    """F4: a garbled summary.json (merged into after training) or a --ckpt_dir that is a file: one line, nothing
    written (before: a JSONDecodeError after 20 s of training / a NotADirectoryError traceback)."""
    if case == "garbled_summary":
        ckpt = tmp_path / "ck"
        ckpt.mkdir()
        (ckpt / "summary.json").write_text("{bad")
        needle = f"{ckpt / 'summary.json'}: unreadable JSON"
    else:
        ckpt = tmp_path / "file"
        ckpt.write_text("x")
        needle = f"{ckpt} is not a folder"
    proc = _train("--datasets=gsm8k", f"--ckpt_dir={ckpt}")
    assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == [ckpt.name]
    if case == "garbled_summary":
        assert os.listdir(ckpt) == ["summary.json"] and (ckpt / "summary.json").read_text() == "{bad"


def test_second_writer_on_a_dataset_fails_or_waits_with_if_missing(tmp_path):
    """F3: while another run holds <ckpt_dir>/gsm8k/.train.lock, a plain run stops at once naming the lock; an
    --if_missing run (first-use training) waits, then skips gsm8k because the holder wrote its table."""
    import select
    import time

    import filelock

    dataset_dir = tmp_path / "ck" / "gsm8k"
    dataset_dir.mkdir(parents=True)
    holder = filelock.FileLock(str(dataset_dir / ".train.lock"))
    holder.acquire()
    try:
        args = ["--datasets=gsm8k", f"--ckpt_dir={tmp_path / 'ck'}"]
        proc = _train(*args)  # this process holds the lock in another open file: flock refuses it as another's
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert f"{dataset_dir} is being written by another training run (lock {dataset_dir / '.train.lock'}" \
            in proc.stderr
        assert sorted(os.listdir(tmp_path / "ck")) == ["gsm8k"] and os.listdir(dataset_dir) == [".train.lock"]

        waiter = subprocess.Popen([sys.executable, "-m", "prada_jax.cli.train", *args, "--if_missing", "--resume"],
                                  cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        seen, deadline = "", time.time() + 120
        while "waiting for it" not in seen and waiter.poll() is None and time.time() < deadline:
            if select.select([waiter.stderr], [], [], 1.0)[0]:
                seen += waiter.stderr.readline()
        assert "waiting for it" in seen, seen[-2000:]
        (dataset_dir / "policy_table.npz").write_bytes(b"written by the holder")
    finally:
        holder.release()
    rest = waiter.communicate(timeout=120)[1]
    assert waiter.returncode == 0, (seen + rest)[-2000:]
    assert "policy_table.npz is present (--if_missing): not retrained" in seen + rest
    assert sorted(os.listdir(dataset_dir)) == [".train.lock", "policy_table.npz"]
    assert not (tmp_path / "ck" / "summary.json").exists()


def test_each_trace_is_loaded_once_per_run_and_resume_is_checked_first(tmp_path, monkeypatch):
    """One load (and validation) of each dataset's trace per run: a fresh run, and a --resume with other flags
    (refused at the first dataset's checkpoints, before any work)."""
    import collections

    from conftest import make_tiny_trace

    import prada_jax.traces as T
    from prada_jax.traces import save_trace

    traces, ckpt = tmp_path / "traces", tmp_path / "ck"
    for i, name in enumerate(("gsm8k", "mmlu_stem")):
        save_trace(traces / f"{name}.npz", make_tiny_trace(seed=i))
    args = ["--datasets=gsm8k,mmlu_stem", f"--trace_dir={traces}", f"--ckpt_dir={ckpt}", "--epochs=1",
            "--update_epochs=1", "--batch_steps=8", "--num_minibatches=1", "--aux_steps=50", "--frontier_betas=3",
            "--chunk=1"]
    calls, load = collections.Counter(), T.load_trace

    def counted(path):
        calls[os.path.basename(str(path))] += 1
        return load(path)

    monkeypatch.setattr(T, "load_trace", counted)  # what the command's fresh `from prada_jax.traces import` binds

    def train(*extra, loads=("gsm8k.npz", "mmlu_stem.npz")):
        calls.clear()
        proc = _train(*args, *extra)
        assert calls == dict.fromkeys(loads, 1), proc.stderr[-3000:]
        return proc

    assert train().returncode == 0
    listing = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*"))
    bad = train("--resume", "--seed=1", loads=["gsm8k.npz"])  # stops at the first dataset's checkpoints
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "seed: checkpoint has 0, expected 1" in bad.stderr
    assert sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*")) == listing


def test_lock_file_that_cannot_be_made_is_one_line(tmp_path):
    """<ckpt_dir>/<dataset>/.train.lock that is a folder: one FATAL line naming --ckpt_dir and the lock file (a
    traceback before), nothing written."""
    lock_dir = tmp_path / "ck" / "gsm8k" / ".train.lock"
    lock_dir.mkdir(parents=True)
    proc = _train("--datasets=gsm8k", f"--ckpt_dir={tmp_path / 'ck'}")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("FATAL --ckpt_dir=") and "cannot create the lock file" in last and ".train.lock" in last
    assert sorted(p.name for p in (tmp_path / "ck").rglob("*")) == [".train.lock", "gsm8k"]
