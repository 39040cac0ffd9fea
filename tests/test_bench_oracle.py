"""How the NumPy oracle reaches the benchmark: the package never imports tests/ and no file edits the import path;
the repository's experiments/bench.py loads tests/reference_sim.py by path and passes it in; the console script
skips the oracle rows with one line."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

from conftest import TEST_XLA_FLAGS

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_MODULES = sorted(p.stem for p in (REPO_ROOT / "tests").glob("*.py"))
TINY = ["--episodes_list=1", "--max_users_list=16", "--max_users=16", "--users_episodes=1", "--oracle_episodes=1",
        "--horizon_ms=30", "--warmup_ms=3", "--repeats=1", "--noprofile", "--cpu_devices=1"]


def test_no_python_file_edits_the_import_path_and_the_package_never_imports_tests():
    path_edit = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*(\+=|=)")
    imports_tests = re.compile(r"^\s*(from|import)\s+(tests\b|(" + "|".join(TEST_MODULES) + r")\b)", re.M)
    for path in REPO_ROOT.rglob("*.py"):
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] in ("results", "build") or any(part.startswith(".") for part in rel.parts):
            continue
        text = path.read_text(encoding="utf-8")
        assert not path_edit.search(text), rel
        if rel.parts[0] == "prada_jax":
            assert not imports_tests.search(text), rel
            assert "reference_sim" not in text.replace("tests/reference_sim.py", ""), rel  # named, never loaded


def test_repository_entry_point_loads_the_oracle_by_path():
    from experiments import bench as repo_bench

    oracle = repo_bench.load_oracle()
    assert callable(oracle) and oracle.__name__ == "simulate_reference"
    assert pathlib.Path(sys.modules[oracle.__module__].__file__).resolve() == REPO_ROOT / "tests" / "reference_sim.py"


def _bench(module: str, out: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = TEST_XLA_FLAGS
    return subprocess.run([sys.executable, "-m", module, *TINY, f"--out={out}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_oracle_rows_with_the_repository_entry_point_and_one_line_without(tmp_path):
    """The repository entry point runs in this process (tests/cli_inprocess.py), the console script's module in a
    real one."""
    import cli_inprocess

    with_oracle = cli_inprocess.run("experiments.bench", *TINY, f"--out={tmp_path / 'with.json'}")
    assert with_oracle.returncode == 0, with_oracle.stderr[-3000:]
    result = json.loads((tmp_path / "with.json").read_text())
    assert result["oracle"]["episodes"] == 1 and result["oracle_check"]["agrees"] is True
    assert "oracle rows skipped" not in with_oracle.stderr

    console = _bench("prada_jax.cli.bench", tmp_path / "without.json")  # what the prada-bench script runs
    assert console.returncode == 0, console.stderr[-3000:]
    note = [line for line in console.stderr.splitlines() if "oracle rows skipped" in line]
    assert len(note) == 1 and "python -m experiments.bench" in note[0] and "Traceback" not in console.stderr
    result = json.loads((tmp_path / "without.json").read_text())
    assert result["oracle"] is None and "oracle_check" not in result
    assert result["episodes_table"][0]["episodes"] == 1
