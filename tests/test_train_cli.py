"""experiments/train.py rejects bad flags before any work starts, naming the flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.parametrize(
    "flag,needle",
    [("--aux_steps=20", "--aux_steps"), ("--frontier_betas=3,abc", "--frontier_betas"), ("--epochs=0", "--epochs"),
     ("--heldout_fraction=1.5", "--heldout_fraction"), ("--lr=-1", "--lr"), ("--datasets=nope", "--datasets")],
)
def test_bad_flags_fail_fast(tmp_path, flag, needle):
    proc = subprocess.run([sys.executable, "experiments/train.py", flag, f"--ckpt_dir={tmp_path}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_shipped_checkpoints_are_not_overwritten_by_default():
    proc = subprocess.run([sys.executable, "experiments/train.py", "--datasets=gsm8k", "--ckpt_dir=checkpoints"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--ckpt_dir=checkpoints already holds a trained table" in proc.stderr
    assert "Traceback" not in proc.stderr
