"""results.csv cannot be edited silently (per-line SHA-256 in results.csv.sha256), and a full disk is one line that
leaves nothing which breaks the resume."""

from __future__ import annotations

import errno
import json
import os

import pytest
from test_sweep import FakeRunner, read_csv, spec_for, traces_dir  # noqa: F401 - the fixture

from prada_jax import sweep
from prada_jax.sweep import store as store_mod


def _finished(traces_dir, tmp_path):
    spec = spec_for(traces_dir)
    out = tmp_path / "out"
    sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    return spec, out


def _edit_cell(out, row, column, new):
    path = out / sweep.RESULTS_CSV
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[row].rstrip("\n").split(",")
    old = cells[header.index(column)]
    cells[header.index(column)] = new
    lines[row] = ",".join(cells) + "\n"
    path.write_text("".join(lines))
    return old


@pytest.mark.parametrize("column,new", [("accuracy_mean", "0.123"), ("accuracy_mean", "nan"),
                                        ("dropped_mean", "-50")])
def test_an_edited_cell_is_refused_naming_row_and_column_before_work(traces_dir, tmp_path, column, new):
    spec, out = spec_for(traces_dir), tmp_path / "out"
    with pytest.raises(RuntimeError, match="injected failure"):  # all points but the last: a resume has work to do
        sweep.run_sweep(spec, str(out), run_point=FakeRunner(fail_after=len(spec.points()) - 1))
    before = {p: (out / p).read_bytes() for p in (sweep.RUN_JSON, sweep.RESULTS_CSV)}
    old = _edit_cell(out, 4, column, new)
    runner = FakeRunner()
    with pytest.raises(sweep.SweepStateError) as err:
        sweep.run_sweep(spec, str(out), run_point=runner)
    message = str(err.value)
    assert "\n" not in message and "row 4 (gsm8k/prada)" in message and f"column {column!r} is {new!r}, the sweep wrote {float(old)!r}" in message
    assert runner.calls == [] and (out / sweep.RUN_JSON).read_bytes() == before[sweep.RUN_JSON]
    store = sweep.run_sweep(spec, str(out), run_point=FakeRunner(), overwrite=True)  # --overwrite rebuilds
    assert len(store.rows) == len(spec.points()) * spec.grid_size
    assert read_csv(str(out / sweep.RESULTS_CSV))[3][column] != new


def test_a_renamed_header_column_is_refused_before_any_point_runs(traces_dir, tmp_path):
    spec, out = _finished(traces_dir, tmp_path)
    path = out / sweep.RESULTS_CSV
    path.write_text(path.read_text().replace("accuracy_mean", "acc_mean", 1))
    runner = FakeRunner()
    with pytest.raises(sweep.SweepStateError, match=r"the header differs .*'accuracy_mean' -> 'acc_mean'"):
        sweep.run_sweep(spec, str(out), run_point=runner)
    assert runner.calls == []


def test_missing_checksums_are_refused_and_foreign_rows_too(traces_dir, tmp_path):
    spec, out = _finished(traces_dir, tmp_path)
    sums = (out / sweep.RESULTS_SUMS).read_text()
    os.remove(out / sweep.RESULTS_SUMS)
    with pytest.raises(sweep.SweepStateError, match=r"results.csv.sha256 is missing"):
        sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    (out / sweep.RESULTS_SUMS).write_text("".join(sums.splitlines(keepends=True)[:4]))  # rows 4.. unaccounted
    with pytest.raises(sweep.SweepStateError, match=r"rows 4-18 have no checksum"):
        sweep.run_sweep(spec, str(out), run_point=FakeRunner())


def test_rows_whose_checksums_a_kill_did_not_write_are_recomputed(traces_dir, tmp_path):
    spec, out = _finished(traces_dir, tmp_path)
    clean = read_csv(str(out / sweep.RESULTS_CSV))
    sums = (out / sweep.RESULTS_SUMS).read_text().splitlines(keepends=True)
    (out / sweep.RESULTS_SUMS).write_text("".join(sums[:-spec.grid_size]) + sums[-spec.grid_size][:10])
    runner = FakeRunner()
    sweep.run_sweep(spec, str(out), run_point=runner)
    assert runner.calls == spec.points()[-1:]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "point_seconds"} for r in rs]  # noqa: E731
    assert strip(read_csv(str(out / sweep.RESULTS_CSV))) == strip(clean)


def test_a_folder_written_before_checksums_is_read_and_then_protected(traces_dir, tmp_path):
    spec, out = _finished(traces_dir, tmp_path)
    os.remove(out / sweep.RESULTS_SUMS)
    run = json.loads((out / sweep.RUN_JSON).read_text())
    del run["checksums"]
    (out / sweep.RUN_JSON).write_text(json.dumps(run))
    runner = FakeRunner()
    sweep.run_sweep(spec, str(out), run_point=runner)
    assert runner.calls == [] and (out / sweep.RESULTS_SUMS).exists()
    _edit_cell(out, 2, "accuracy_mean", "0.5")
    with pytest.raises(sweep.SweepStateError, match="row 2"):
        sweep.run_sweep(spec, str(out), run_point=FakeRunner())


def _full_disk_on(monkeypatch, name, after=0):
    """Make the writer raise ENOSPC for files named `name` (after `after` successful writes of it)."""
    real = store_mod._fsync_write
    count = {"n": 0}

    def writer(path, data, mode):
        if os.path.basename(path) == name:
            count["n"] += 1
            if count["n"] > after:
                with open(path, mode, encoding="utf-8"):  # what a real full disk leaves: the file, empty or as it was
                    pass
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path, data, mode)

    monkeypatch.setattr(store_mod, "_fsync_write", writer)


@pytest.mark.parametrize("name,after", [(sweep.RESULTS_CSV, 0), (sweep.RESULTS_CSV, 2), (sweep.RESULTS_SUMS, 2),
                                        (sweep.RESULTS_JSON + ".tmp", 1), (sweep.RUN_JSON + ".tmp", 0)])
def test_a_full_disk_is_one_line_naming_the_file_and_the_resume_works(traces_dir, tmp_path, monkeypatch, name,
                                                                      after):
    spec = spec_for(traces_dir)
    out = tmp_path / "out"
    _full_disk_on(monkeypatch, name, after)
    with pytest.raises(sweep.SweepStateError) as err:
        sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    message = str(err.value)
    target = name[:-4] if name.endswith(".tmp") else name
    assert "\n" not in message and message.startswith(str(out / target)) and "No space left on device" in message
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    if os.path.exists(out / sweep.RESULTS_CSV):
        assert (out / sweep.RESULTS_CSV).stat().st_size > 0
    monkeypatch.undo()  # space freed: the same command resumes and finishes
    store = sweep.run_sweep(spec, str(out), run_point=FakeRunner())
    assert len(store.rows) == len(spec.points()) * spec.grid_size
    clean = tmp_path / "clean"
    sweep.run_sweep(spec, str(clean), run_point=FakeRunner())
    strip = lambda rs: [{k: v for k, v in r.items() if k != "point_seconds"} for r in rs]  # noqa: E731
    assert strip(read_csv(str(out / sweep.RESULTS_CSV))) == strip(read_csv(str(clean / sweep.RESULTS_CSV)))
