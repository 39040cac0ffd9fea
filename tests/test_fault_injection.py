"""Issue 10: bad inputs and broken result directories end in one clear error before any work, never in wrong
numbers; a second writer is refused at once; --overwrite always works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import filelock
import numpy as np
import pytest

from prada_jax import sweep
from prada_jax.learn import tables
from prada_jax.sim import policies as P
from prada_jax.traces import TraceError, load_trace
from tests.conftest import REPO_ROOT
from tests.test_sweep import FakeRunner, spec_for, traces_dir  # noqa: F401 (fixture)


def corrupt_member(path):
    """Flip bytes inside the compressed data of one member of an .npz (bad CRC / bad stream)."""
    data = bytearray(open(path, "rb").read())
    info = zipfile.ZipFile(path).infolist()[3]
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 8
    for i in range(offset, offset + 4):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_second_writer_is_refused_at_once_and_first_results_stay(traces_dir, tmp_path):
    out = str(tmp_path / "out")
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, out, run_point=FakeRunner())
    before = open(os.path.join(out, sweep.RESULTS_CSV)).read()
    holder = filelock.FileLock(os.path.join(out, sweep.LOCK_FILE))
    holder.acquire()
    try:
        with pytest.raises(sweep.SweepStateError, match="being written by another sweep"):
            sweep.run_sweep(spec, out, run_point=FakeRunner())
    finally:
        holder.release()
    assert open(os.path.join(out, sweep.RESULTS_CSV)).read() == before


def test_two_real_processes_into_one_out_dir(tmp_path):
    """The lock is held across processes: a sweep started while another runs fails with the message."""
    out = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import filelock, os, sys, time; os.makedirs(sys.argv[1], exist_ok=True); "
        "l = filelock.FileLock(os.path.join(sys.argv[1], '.sweep.lock')); l.acquire(); print('held', flush=True); "
        "time.sleep(60)"), out], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "experiments/sweep.py", "--flagfile=smoke.cfg", f"--out_dir={out}",
                               "--noplots"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "being written by another sweep" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        holder.kill()


def test_corrupt_run_json_blocks_without_overwrite_and_not_with_it(traces_dir, tmp_path):
    out = tmp_path / "out"
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    (out / sweep.RUN_JSON).write_text("{not json")
    with pytest.raises(sweep.SweepStateError, match="not valid JSON"):
        sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    store = sweep.run_sweep(spec, str(out), run_point=FakeRunner(), overwrite=True)
    assert len(store.rows) == len(spec.points()) * spec.grid_size


def test_failed_run_metadata_alone_does_not_block_a_corrected_run(traces_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / sweep.RUN_JSON).write_text(json.dumps({"config": {"episodes": 999}, "sessions": []}))
    store = sweep.run_sweep(spec_for(traces_dir), str(out), run_point=FakeRunner())
    assert store.rows


def test_results_json_is_rebuilt_when_nothing_is_left_to_do(traces_dir, tmp_path):
    out = tmp_path / "out"
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    os.remove(out / sweep.RESULTS_JSON)
    runner = FakeRunner()
    sweep.run_sweep(spec, str(out), run_point=runner)
    assert runner.calls == [] and (out / sweep.RESULTS_JSON).exists()


@pytest.mark.parametrize("garbage,match", [("gsm8k,all_slm,bandwidth_bps,x,4", r"row 1 \(gsm8k/all_slm\): column "
                                                                             r"'sweep_value' is 'x', the sweep wrote"),
                                           (b"\xff\xfe\x00binary", "not a text CSV")])
def test_corrupt_results_csv_is_named(traces_dir, tmp_path, garbage, match):
    out = tmp_path / "out"
    spec = spec_for(traces_dir)
    sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    path = out / sweep.RESULTS_CSV
    lines = path.read_bytes().split(b"\n")
    if isinstance(garbage, bytes):
        path.write_bytes(garbage)
    else:
        cells = lines[1].decode().split(",")
        cells[3] = "x"
        lines[1] = ",".join(cells).encode()
        path.write_bytes(b"\n".join(lines))
    with pytest.raises(sweep.SweepStateError, match=match) as info:
        sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    assert str(path) in str(info.value)


def test_bad_crc_and_not_a_zip_traces_are_named_before_anything_is_written(traces_dir, tmp_path):
    trace_path = os.path.join(traces_dir, "gsm8k.npz")
    corrupt_member(trace_path)
    with pytest.raises(TraceError, match="gsm8k.npz"):
        load_trace(trace_path)
    out = tmp_path / "out"
    spec = spec_for(traces_dir)
    with pytest.raises(TraceError):
        sweep.validate_inputs(spec)
    with open(os.path.join(traces_dir, "mmlu_stem.npz"), "w") as handle:
        handle.write("not a zip")
    with pytest.raises(TraceError, match="mmlu_stem.npz: not a readable"):
        load_trace(os.path.join(traces_dir, "mmlu_stem.npz"))
    assert not out.exists()


def _write_table(spec, dataset, table, trace_hash=True, beta=10.0):
    path, eval_path = sweep.learned_table_paths(spec.ckpt_dir, dataset)
    tables.save_table(path, table, trace_sha256=tables.file_sha256(spec.trace_path(dataset)) if trace_hash else None)
    with open(eval_path, "w") as handle:
        json.dump({"beta": beta}, handle)
    return path, eval_path


def test_nan_or_negative_tables_and_tables_of_another_trace_are_refused(traces_dir, tmp_path):
    spec = spec_for(traces_dir, ckpt_dir=str(tmp_path / "ckpt"))
    trace = load_trace(spec.trace_path("gsm8k"))
    good = P.all_llm_table(trace)
    nan = good.replace(advantage=np.full(good.advantage.shape, np.nan, np.float32))
    _write_table(spec, "gsm8k", nan)
    with pytest.raises(sweep.PolicyTableError, match="advantage.*non-finite"):
        sweep.learned_table(spec, "gsm8k", trace)
    neg = good.replace(server_seconds=-np.abs(np.asarray(good.server_seconds)) - 1e-3)
    _write_table(spec, "gsm8k", neg)
    with pytest.raises(sweep.PolicyTableError, match="server_seconds"):
        sweep.learned_table(spec, "gsm8k", trace)
    path, _ = _write_table(spec, "gsm8k", good)
    other = load_trace(spec.trace_path("mmlu_stem"))
    shutil.copy(spec.trace_path("mmlu_stem"), tmp_path / "other.npz")
    with pytest.raises(tables.TableError, match="made for another trace"):
        tables.load_table(path, trace_path=str(tmp_path / "other.npz"))
    assert other.num_problems > 0
    with open(sweep.learned_table_paths(spec.ckpt_dir, "gsm8k")[1], "w") as handle:
        handle.write("{broken")
    with pytest.raises(sweep.PolicyTableError, match="eval.json: unreadable"):
        sweep.learned_table(spec, "gsm8k", trace)


def test_truncated_table_is_named(tmp_path, traces_dir):
    spec = spec_for(traces_dir, ckpt_dir=str(tmp_path / "ckpt"))
    trace = load_trace(spec.trace_path("gsm8k"))
    path, _ = _write_table(spec, "gsm8k", P.all_llm_table(trace))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(tables.TableError, match="unreadable policy table"):
        tables.load_table(path)


def test_table_hash_joins_the_resume_fingerprint(tmp_path, traces_dir):
    spec = spec_for(traces_dir, ckpt_dir=str(tmp_path / "ckpt"))
    trace = load_trace(spec.trace_path("gsm8k"))
    for d in ("gsm8k", "mmlu_stem"):
        _write_table(spec, d, P.all_llm_table(load_trace(spec.trace_path(d))))
    before = spec.to_config()["table_sha256"]
    _write_table(spec, "gsm8k", P.all_slm_table(trace))
    after = spec.to_config()["table_sha256"]
    assert before["gsm8k"] != after["gsm8k"] and before["mmlu_stem"] == after["mmlu_stem"]
