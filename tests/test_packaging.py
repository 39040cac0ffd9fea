"""A plain (non-editable) install works from anywhere: console scripts, shipped flagfiles, traces and tables.

The install goes into a temporary --target (never the global environment): `pip install --no-deps
--no-build-isolation --target <site> <copy of the repo>`, then the console script runs with cwd outside the
repository and PYTHONPATH=<site> only.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = ("prada-sweep", "prada-train", "prada-figures", "prada-bench")
# Not needed to build the package (and large, or produced by runs): left out of the copy that is installed.
SKIP_NAMES = {".git", "build", "dist", "results", "figures", "__pycache__", ".pytest_cache", ".hypothesis",
              "models", "ppo", ".benchmarks"}


def _ignore(directory, names):
    return [n for n in names if n in SKIP_NAMES or n.endswith(".egg-info")]


def _installed_env(site) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(site)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site, workdir): the package installed into a temporary target, and an empty folder outside the repo."""
    root = tmp_path_factory.mktemp("packaging")
    source, site, workdir = root / "source", root / "site", root / "work"
    shutil.copytree(REPO_ROOT, source, ignore=_ignore)  # the build writes build/ and *.egg-info: not in the repo
    workdir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile",
         "--disable-pip-version-check", "--target", str(site), str(source)],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return site, workdir


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)
    listed = {p for p in project["tool"]["setuptools"]["packages"] if not p.startswith("prada_jax._data")}
    found = {
        os.path.relpath(d, REPO_ROOT).replace(os.sep, ".")
        for d, _, files in os.walk(REPO_ROOT / "prada_jax") if "__init__.py" in files
    }
    assert listed == found
    assert set(project["project"]["scripts"]) == set(SCRIPTS)
    assert "gpu" in project["project"]["optional-dependencies"]


def test_installed_copy_has_scripts_configs_and_data(installed):
    site, workdir = installed
    for script in SCRIPTS:
        assert (site / "bin" / script).exists(), script
    package = site / "prada_jax"
    assert sorted(p.name for p in (package / "configs").glob("*.cfg")) == sorted(
        p.name for p in (REPO_ROOT / "prada_jax" / "configs").glob("*.cfg"))
    assert (package / "_data" / "traces" / "gsm8k.npz").exists()
    assert (package / "_data" / "checkpoints" / "gsm8k" / "policy_table.npz").exists()
    assert (package / "_data" / "checkpoints" / "gsm8k" / "eval.json").exists()
    proc = subprocess.run(
        [sys.executable, "-c", "import prada_jax, prada_jax.data_paths as d; "
                               "print(prada_jax.__file__); print(d.shipped_dir('traces')); print(d.source_root())"],
        cwd=workdir, env=_installed_env(site), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    module_file, traces_dir, source_root = proc.stdout.split("\n")[:3]
    assert module_file == str(package / "__init__.py")  # the installed copy, not the repository
    assert traces_dir == str(package / "_data" / "traces")
    assert source_root == "None"


def test_installed_prada_sweep_runs_outside_the_repo(installed, tmp_path):
    """A real (tiny) sweep of a learned policy: the bare --flagfile, the traces and the trained table all come
    from the installed package."""
    site, workdir = installed
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(site / "bin" / "prada-sweep"), "--flagfile=smoke.cfg", f"--out_dir={out}", "--policies=prada",
         "--sweep_values=1e6", "--episodes=2", "--horizon_ms=40", "--warmup_ms=5", "--noplots"],
        cwd=workdir, env=_installed_env(site), capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["dataset"], r["policy"], float(r["sweep_value"])) for r in rows] == [("gsm8k", "prada", 1e6)]
    with open(out / "run.json") as handle:
        run = json.load(handle)
    data = site / "prada_jax" / "_data"
    assert run["config"]["traces_dir"] == str(data / "traces")
    assert run["config"]["ckpt_dir"] == str(data / "checkpoints")
    assert run["sessions"][0]["git"] == {"commit": None, "dirty": None}  # not the repository's code
    candidates = run["points"]["gsm8k/prada"]  # the real runner's record of the Stage-2 candidate sets
    assert candidates["candidate_cap"] == "exact" and candidates["candidate_overflow_slots"] == 0
    assert candidates["largest_candidates_seen"] >= 0 and sum(candidates["episodes_by_cap"].values()) == 2
    assert not any(workdir.iterdir())  # nothing written into the working directory


def test_installed_scripts_show_their_flags(installed):
    site, workdir = installed
    for script, flag in (("prada-sweep", "--sweep_param"), ("prada-train", "--frontier_betas"),
                         ("prada-bench", "--episodes_list")):
        proc = subprocess.run([str(site / "bin" / script), "--helpshort"], cwd=workdir, env=_installed_env(site),
                              capture_output=True, text=True, timeout=120)
        assert flag in proc.stdout and "Traceback" not in proc.stderr, (script, proc.stdout[-2000:], proc.stderr[-2000:])


def test_sweep_module_helpshort_lists_the_sweep_flags():
    """`python -m prada_jax.cli.sweep --helpshort`, in this process (tests/cli_inprocess.py; the installed scripts'
    --helpshort runs in real processes above)."""
    import cli_inprocess

    proc = cli_inprocess.run("prada_jax.cli.sweep", "--helpshort")
    assert "Traceback" not in proc.stderr, proc.stderr  # (absl exits 1 after printing the help)
    assert "Run a resumable parameter sweep" in proc.stdout
    for flag in ("--sweep_param", "--sweep_values", "--policies", "--traces_dir", "--ckpt_dir", "--out_dir"):
        assert flag in proc.stdout, flag


def test_shipped_tables_are_never_trained_into(tmp_path):
    """Training on first use refuses the installed package's data folder (read-only) and names --ckpt_dir."""
    from prada_jax import data_paths, sweep

    shipped = os.path.join(data_paths.PACKAGE_DIR, "_data", "checkpoints")
    with pytest.raises(sweep.PolicyTableError, match="--ckpt_dir"):
        sweep.train_policy_table("gsm8k", 10.0, str(REPO_ROOT / "traces"), shipped)
    assert data_paths.resolve_data_dir(str(tmp_path), "traces") == str(tmp_path)  # an explicit folder: as given
    assert data_paths.resolve_data_dir("traces", "traces") in ("traces", data_paths.shipped_dir("traces"))
