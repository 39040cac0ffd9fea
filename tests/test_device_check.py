"""experiments/device_check.py, the prepared accelerator check, run end to end on CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "device_check.py")


def run_check(tmp_path, *args, out="out"):
    out_dir = tmp_path / out
    proc = subprocess.run([sys.executable, SCRIPT, f"--out_dir={out_dir}", *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    return proc, out_dir


def test_sizes_tests_and_files(tmp_path):
    proc, out = run_check(tmp_path, "--episodes_list=1,2", "--horizon_ms=20", "--warmup_ms=2", "--repeats=1",
                          "--max_users=16", "--test_files=tests/test_costs.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["bench.log", "summary.json", "summary.md", "tests.log"]  # <= 8 files back
    summary = json.loads((out / "summary.json").read_text())
    assert [r["episodes"] for r in summary["sizes"]] == [1, 2] and summary["skipped"] == []
    first, second = summary["sizes"]
    assert first["slot_ms_vs_smallest"] == 1.0
    assert abs(second["slot_ms_vs_smallest"] - second["slot_ms"] / first["slot_ms"]) < 1e-9
    for row, record in zip(summary["sizes"], summary["bench_records"]):
        assert abs(row["slot_ms"] - 1e3 * record["run_s"] / record["slots"]) < 1e-9 and record["slots"] == 20
    assert summary["tests"]["rc"] == 0 and "passed" in summary["tests"]["last_line"]
    assert "| 2 |" in (out / "summary.md").read_text()
    # A second check into the same folder is refused before anything runs.
    again, _ = run_check(tmp_path, "--episodes_list=1", "--notests")
    assert again.returncode != 0 and "--out_dir" in again.stderr and "--overwrite" in again.stderr


def test_what_runs_out_of_time_is_listed_not_dropped(tmp_path):
    proc, out = run_check(tmp_path, "--episodes_list=1", "--bench_timeout_s=1", "--tests_timeout_s=1",
                          "--test_files=tests/test_sim_oracle.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"] == []
    assert summary["skipped"] == [{"episodes": 1, "reason": "timed out after 1 s"}]
    assert summary["tests"]["rc"] is None and summary["tests"]["last_line"] == "timed out after 1 s"
    text = (out / "summary.md").read_text()
    assert "skipped: timed out" in text and "timed out after 1 s (rc None" in text


def test_bad_flags_name_the_flag(tmp_path):
    for args, flag in ((["--episodes_list=4,1"], "--episodes_list"), (["--episodes_list=0"], "--episodes_list"),
                       (["--test_files=tests/nope.py"], "--test_files")):
        proc, out = run_check(tmp_path, *args)
        assert proc.returncode != 0 and flag in proc.stderr, (args, proc.stderr[-500:])
        assert not out.exists()  # nothing written
