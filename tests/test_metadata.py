"""run.json's git record: a tree counts as dirty when tracked code differs from HEAD, not when figures/ does."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from prada_jax import data_paths
from prada_jax.sweep import metadata


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / metadata.GENERATED_DIR).mkdir()
    (tmp_path / metadata.GENERATED_DIR / "table2.md").write_text("old\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(data_paths, "source_root", lambda: str(tmp_path))
    return tmp_path


def test_clean_tree(checkout):
    rev = metadata.git_revision()
    assert len(rev["commit"]) == 40 and rev["dirty"] is False


def test_regenerated_figures_do_not_make_the_tree_dirty(checkout):
    (checkout / metadata.GENERATED_DIR / "table2.md").write_text("new\n")  # what make_figures does mid-run
    (checkout / "notes.txt").write_text("untracked\n")
    assert metadata.git_revision()["dirty"] is False


def test_changed_code_makes_the_tree_dirty(checkout):
    (checkout / "code.py").write_text("x = 2\n")
    assert metadata.git_revision()["dirty"] is True
