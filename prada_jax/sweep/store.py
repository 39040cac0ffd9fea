"""Results of a sweep on disk: results.csv (append + fsync), results.json (atomic rewrite), run.json, the lock.

`inspect_out_dir` reads and checks an out_dir once (refusing results of other flags unless overwrite); a
`ResultStore` opened from what it read owns the out_dir: it drops a partial last line or an incomplete last point
left by a killed run, and appends one point's rows in a single write.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import filelock
from absl import logging

from prada_jax import locks
from prada_jax.data_paths import output_folder_problem
from prada_jax.sweep.metadata import session_metadata
from prada_jax.sweep.spec import SweepSpec

# Metrics every row must carry (prada_jax.sim.metrics.summarize names); extra summary metrics are kept too.
REQUIRED_METRICS = (
    "accuracy",
    "processing_ms",
    "communication_ms",
    "queuing_ms",
    "end_to_end_ms",
    "sojourn_ms",
    "offload_fraction",
    "arrived",
    "completed",
    "unfinished",
    "dropped",
    "overloaded",
)
KEY_COLUMNS = ("dataset", "policy", "sweep_param", "sweep_value", "episodes")
# A --grid sweep (sweep_param == "grid") adds one column per grid parameter, named after it, right after
# KEY_COLUMNS (SweepSpec.point_columns); its sweep_value cells are empty.
TAIL_COLUMNS = ("point_seconds",)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RUN_JSON = "run.json"
# SHA-256 of each line of results.csv (header first), one hex digest a line, appended after the rows it covers:
# a results.csv edited by hand (a changed, NaN or renamed cell) is refused on resume, naming the row and column.
RESULTS_SUMS = "results.csv.sha256"
FIGURE_PREFIX = "fig_"

class SweepStateError(RuntimeError):
    """The out_dir holds results that do not belong to this sweep, or are corrupt."""

def _fsync_write(path: str, data: str, mode: str) -> None:
    with open(path, mode, encoding="utf-8", newline="") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_failed(path: str, err: OSError, what: str = "") -> SweepStateError:
    """The one-line error of a failed write (a full disk, a read-only folder): names the file and the cause."""
    return SweepStateError(f"{path}: cannot write ({err.strerror or err}){what}; free space (or fix the folder) and "
                           "rerun the same command to resume")


def _atomic_write(path: str, data: str) -> None:
    """Write `data` to path.tmp, fsync, rename over path; on failure remove path.tmp (path keeps its old content)
    and raise SweepStateError naming path."""
    tmp = path + ".tmp"
    try:
        _fsync_write(tmp, data, "w")
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise _write_failed(path, err, f"; {os.path.basename(path)} keeps its previous content") from None


def line_sha256(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def format_value(value: Any) -> str:
    """CSV cell: ints as ints, floats round-trip exact (repr), NaN (undefined) as "n/a", strings as they are."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return NOT_AVAILABLE if math.isnan(value) else repr(value)
    return str(value)


# The CSV cell of a metric that is undefined at a point (no task entered, nothing executed): NaN in Python, null in
# results.json. Read back as NaN (as is the "nan" of results written before).
NOT_AVAILABLE = "n/a"


def parse_cell(column: str, text: str) -> Any:
    """One CSV cell; ValueError naming the column for a cell that is not what the column holds."""
    if column in ("dataset", "policy", "sweep_param"):
        return text
    try:
        if column == "episodes":
            return int(text)
        if text == "":
            return None
        if text == NOT_AVAILABLE:
            return math.nan
        return float(text)
    except ValueError:
        raise ValueError(f"column {column!r}: {text[:40]!r} is not a number") from None


LOCK_FILE = ".sweep.lock"


def check_out_dir_path(out_dir: str) -> None:
    """Read-only: SweepStateError naming --out_dir when it can never be a result folder (a file, or a path through
    a file); what only creating it can tell (permissions, /proc) acquire_lock reports."""
    problem = output_folder_problem(out_dir, writable=False)
    if problem:
        raise SweepStateError(f"--out_dir={out_dir}: {problem}")


def acquire_lock(out_dir: str):
    """One writer per result directory: an exclusive `filelock` on <out_dir>/.sweep.lock, or SweepStateError at
    once if another sweep holds it (its results stay intact). Creates out_dir; a folder that cannot be made or
    written is a one-line SweepStateError naming --out_dir."""
    check_out_dir_path(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise SweepStateError(f"--out_dir={out_dir}: cannot create the folder ({err.strerror or err})") from None
    try:
        return locks.lock_folder(out_dir, LOCK_FILE)
    except locks.LockHeld as err:
        raise SweepStateError(
            f"{out_dir} is being written by another sweep (lock {err.path} is held); "
            "wait for it to finish or use another --out_dir"
        ) from None
    except locks.LockUnavailable as err:
        raise SweepStateError(f"--out_dir={out_dir}: {err}") from None


@dataclasses.dataclass
class OutDirState:
    """What inspect_out_dir read from an out_dir, checked against one sweep, and what opening a ResultStore on it
    will do; nothing is written before that."""

    config: dict  # the sweep's fingerprint (SweepSpec.to_config) it was checked against
    existing: dict | None = None  # run.json to continue; None: start a new one
    discard: str | None = None  # why results.* / run.json / fig_*.png are to be removed (--overwrite), or None
    columns: list[str] | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    keep_bytes: int | None = None  # cut results.csv to this size (a partial last line or point of a killed run)
    repairs: list[str] = dataclasses.field(default_factory=list)  # what the cut removes (logged when applied)


def _read_run(run_path: str) -> dict | None:
    if not os.path.exists(run_path):
        return None
    try:
        with open(run_path, encoding="utf-8") as handle:
            run = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SweepStateError(f"{run_path} is not valid JSON ({err}); remove it or use --overwrite") from err
    except OSError as err:
        raise SweepStateError(f"{run_path}: unreadable ({err.strerror or err})") from err
    if not isinstance(run, dict) or not isinstance(run.get("sessions", []), list):
        raise SweepStateError(f"{run_path} is not a sweep's run.json (no config/sessions); remove it or use --overwrite")
    run.setdefault("sessions", [])
    return run


def _pending_tables_as_recorded(old: Any, new: dict) -> dict:
    """`new` with each learned-table hash that is None (table not trained yet) replaced by the recorded one: such
    a table is trained after this check, and settle_pending_tables compares its real hash."""
    old_tables = old.get("table_sha256") if isinstance(old, dict) else None
    new_tables = new.get("table_sha256")
    if not isinstance(old_tables, dict) or not isinstance(new_tables, dict):
        return new
    return dict(new, table_sha256={d: (old_tables.get(d) if h is None else h) for d, h in new_tables.items()})


def _check_config(out_dir: str, recorded: Any, config: dict, overwrite: bool, pending_tables: bool) -> str | None:
    """None if run.json's `recorded` config is this sweep's; else SweepStateError naming the changed flags, or
    with --overwrite the reason to discard the old results."""
    compared = _pending_tables_as_recorded(recorded, config) if pending_tables else config
    if recorded == compared:
        return None
    if overwrite:
        return "flags changed and --overwrite is set"
    shown = compared
    if pending_tables and isinstance(compared.get("table_sha256"), dict):
        shown = dict(compared, table_sha256={d: "<to be trained>" if h is None else h
                                             for d, h in compared["table_sha256"].items()})
    raise SweepStateError(
        f"{out_dir} holds results of a sweep with different flags ({_config_diff(recorded or {}, shown)}); "
        "use another --out_dir, or --overwrite to discard them"
    )


def inspect_out_dir(out_dir: str, spec: SweepSpec, config: dict, overwrite: bool = False,
                    pending_tables: bool = False) -> OutDirState:
    """Read-only check of out_dir against a sweep: SweepStateError if it holds results of other flags, a corrupt
    run.json or a corrupt results.csv (unless --overwrite, then the state discards them). `pending_tables`: tables
    not trained yet (hash None in `config`) match whatever run.json recorded (run_sweep's check before training;
    settle_pending_tables completes it). A ResultStore opens out_dir from the returned state."""
    run_path, csv_path = os.path.join(out_dir, RUN_JSON), os.path.join(out_dir, RESULTS_CSV)
    try:
        existing = _read_run(run_path)
    except SweepStateError:
        if not overwrite:
            raise
        return OutDirState(config, discard=f"{RUN_JSON} is corrupt and --overwrite is set")
    if existing is not None and not os.path.exists(csv_path):
        existing = None  # only a failed run's metadata (no result rows): nothing to protect
    if existing is not None:
        discard = _check_config(out_dir, existing.get("config"), config, overwrite, pending_tables)
        if discard:
            return OutDirState(config, discard=discard)
    elif os.path.exists(csv_path):
        if not overwrite:
            raise SweepStateError(
                f"{csv_path} exists without {RUN_JSON}: cannot tell which sweep wrote it; "
                "use another --out_dir, or --overwrite to discard it"
            )
        return OutDirState(config, discard=f"no {RUN_JSON} and --overwrite is set")
    state = OutDirState(config, existing=existing)
    try:
        _parse_results_csv(csv_path, spec, state)
    except SweepStateError:
        if not overwrite:
            raise
        return OutDirState(config, discard=f"{RESULTS_CSV} is corrupt and --overwrite is set")
    return state


def settle_pending_tables(state: OutDirState, out_dir: str, spec: SweepSpec, overwrite: bool = False) -> OutDirState:
    """`state` of inspect_out_dir(..., pending_tables=True) once the missing learned tables are trained: hashes
    only those tables and compares the completed fingerprint with run.json's (SweepStateError, or with --overwrite
    a state that discards the old results)."""
    tables = state.config.get("table_sha256")
    if not isinstance(tables, dict) or None not in tables.values():
        return state
    config = dict(state.config, table_sha256={d: spec.table_sha256(d) if h is None else h for d, h in tables.items()})
    if state.existing is not None:
        discard = _check_config(out_dir, state.existing.get("config"), config, overwrite, pending_tables=False)
        if discard:
            return OutDirState(config, discard=discard)
    return dataclasses.replace(state, config=config)


def _parse_results_csv(csv_path: str, spec: SweepSpec, state: OutDirState) -> None:
    """Read results.csv (if any) into state.columns / state.rows: complete points only; a partial last line or an
    incomplete last point (a kill during a write) becomes state.keep_bytes. SweepStateError names what is corrupt."""
    if not os.path.exists(csv_path):
        return
    try:
        with open(csv_path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise SweepStateError(f"{csv_path}: unreadable ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SweepStateError(f"{csv_path}: not a text CSV ({err}); remove it or use --overwrite") from err
    keep_bytes = len(raw)
    if text and not text.endswith("\n"):
        # A kill mid-write leaves a partial last line: drop it (reported, then truncated when applied).
        cut = text.rfind("\n") + 1
        state.repairs.append("dropping a partial last line left by an interrupted run")
        text = text[:cut]
        keep_bytes = len(text.encode("utf-8"))
    lines = text.splitlines(keepends=True)
    keep = _verify_checksums(csv_path, lines, spec, state)
    if keep < len(lines):
        lines = lines[:keep]
        keep_bytes = sum(len(line.encode("utf-8")) for line in lines)
    if not lines:
        state.keep_bytes = 0 if raw else None
        return
    try:
        columns = next(csv.reader([lines[0]]))
    except csv.Error as err:
        raise SweepStateError(f"{csv_path}: unreadable header ({err}); remove the file or use --overwrite") from err
    missing = [c for c in KEY_COLUMNS + spec.point_columns() + TAIL_COLUMNS if c not in columns]
    if missing:
        raise SweepStateError(f"{csv_path}: header lacks columns {missing}")
    offsets = [len(lines[0].encode("utf-8"))]
    rows = []
    for line in lines[1:]:
        try:
            cells = next(csv.reader([line]))
        except csv.Error as err:
            raise SweepStateError(f"{csv_path}: row {len(rows) + 1}: {err}; remove the file or use --overwrite") from err
        if len(cells) != len(columns):
            raise SweepStateError(f"{csv_path}: row {len(rows) + 1} has {len(cells)} cells, header {len(columns)}")
        try:
            rows.append({c: parse_cell(c, v) for c, v in zip(columns, cells)})
        except ValueError as err:
            raise SweepStateError(f"{csv_path}: row {len(rows) + 1}: {err}; remove the file or use --overwrite") from err
        offsets.append(offsets[-1] + len(line.encode("utf-8")))
    # Group rows into points (contiguous blocks); only the last block may be incomplete.
    expected = spec.point_keys()
    point_columns = spec.point_columns()
    done: list[dict] = []
    seen: set[tuple[str, str]] = set()
    i = 0
    while i < len(rows):
        key = (rows[i]["dataset"], rows[i]["policy"])
        j = i
        while j < len(rows) and (rows[j]["dataset"], rows[j]["policy"]) == key:
            j += 1
        block = rows[i:j]
        if key in seen:
            raise SweepStateError(f"{csv_path}: point {key} appears twice")
        if key not in spec.points():
            raise SweepStateError(f"{csv_path}: point {key} is not part of this sweep")
        values = [tuple(r[c] for c in point_columns) for r in block]
        if len(block) < len(expected) and j == len(rows) and _is_prefix(values, expected):
            state.repairs.append(f"discarding {len(block)} rows of the incomplete point {key} left by an interrupted run")
            keep_bytes = offsets[i]
            break
        if values != expected:
            raise SweepStateError(f"{csv_path}: point {key} has sweep values {values}, expected {expected}")
        seen.add(key)
        done.extend(block)
        i = j
    state.columns = columns
    state.rows = done
    if keep_bytes != len(raw):
        state.keep_bytes = keep_bytes


def _read_sums(sums_path: str) -> list[str]:
    try:
        with open(sums_path, "rb") as handle:
            text = handle.read().decode("ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise SweepStateError(f"{sums_path}: unreadable ({getattr(err, 'strerror', None) or err}); restore it or use "
                              "--overwrite to recompute the results") from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a kill while appending checksums: their rows are dropped, recomputed
    sums = text.splitlines()
    for i, digest in enumerate(sums):
        if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise SweepStateError(f"{sums_path}: line {i + 1} is not a SHA-256 digest; restore it or use --overwrite")
    return sums


def _verify_checksums(csv_path: str, lines: list[str], spec: SweepSpec, state: OutDirState) -> int:
    """How many leading lines of results.csv to keep, each verified against RESULTS_SUMS; SweepStateError naming
    the row and column of a line that differs from what the sweep wrote. Lines after the last checksum (a kill
    between writing a point's rows and their checksums: at most one point) are dropped and recomputed. A folder
    whose run.json predates checksums is read as it is (its checksums are written when it is opened)."""
    folder = os.path.dirname(csv_path)
    sums_path = os.path.join(folder, RESULTS_SUMS)
    recorded = isinstance(state.existing, dict) and state.existing.get("checksums") == RESULTS_SUMS
    if not os.path.exists(sums_path):
        if recorded and lines:
            raise SweepStateError(f"{sums_path} is missing, so {csv_path} cannot be checked against what the sweep "
                                  "wrote; restore it, or use --overwrite to recompute the results")
        return len(lines)
    sums = _read_sums(sums_path)
    for i in range(min(len(lines), len(sums))):
        if line_sha256(lines[i]) != sums[i]:
            raise SweepStateError(_describe_change(csv_path, lines, i) + "; restore the file or use --overwrite to "
                                                                         "recompute the results")
    if len(lines) > len(sums):
        extra = len(lines) - len(sums)
        if extra > spec.grid_size + (0 if sums else 1):
            raise SweepStateError(f"{csv_path}: rows {len(sums)}-{len(lines) - 1} have no checksum in {RESULTS_SUMS} "
                                  "(not written by the sweep); remove them or use --overwrite")
        state.repairs.append(f"dropping {extra} lines whose checksums an interrupted run did not write")
        return len(sums)
    if len(lines) < len(sums):
        state.repairs.append(f"{len(sums) - len(lines)} lines at the end are missing; their points are recomputed")
    return len(lines)


def _describe_change(csv_path: str, lines: list[str], i: int) -> str:
    """One line saying which row (0 = the header) and, where results.json still tells, which column of results.csv
    differs from what the sweep wrote."""
    payload = None
    try:
        with open(os.path.join(os.path.dirname(csv_path), RESULTS_JSON), encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, ValueError):
        pass
    columns = payload.get("columns") if isinstance(payload, dict) else None
    try:
        header = next(csv.reader([lines[0]]))
        cells = next(csv.reader([lines[i]]))
    except (csv.Error, StopIteration):
        header = cells = []
    if i == 0:
        if isinstance(columns, list) and len(columns) == len(header):
            changed = [f"{a!r} -> {b!r}" for a, b in zip(columns, header) if a != b]
            if changed:
                return f"{csv_path}: the header differs from what the sweep wrote (column {', '.join(changed)})"
        return f"{csv_path}: the header differs from what the sweep wrote (a column was renamed, added or removed)"
    where = f"{csv_path}: row {i}"
    if len(cells) == len(header) and len(cells) >= 2:
        where += f" ({cells[0]}/{cells[1]})"
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if isinstance(rows, list) and i - 1 < len(rows) and isinstance(rows[i - 1], dict) and len(cells) == len(header):
        written = rows[i - 1]
        for column, cell in zip(header, cells):
            try:
                now = parse_cell(column, cell)
            except ValueError:
                now = cell
            was = written.get(column, _ABSENT)
            same = (now == was or (was is None and (now is None or (isinstance(now, float) and math.isnan(now)))))
            if not same:
                return f"{where}: column {column!r} is {cell!r}, the sweep wrote {was!r}"
    return f"{where} differs from what the sweep wrote (its checksum does not match)"


class ResultStore:
    """results.csv (append + fsync, the source of truth), results.json (atomic rewrite) and run.json in out_dir."""

    def __init__(self, out_dir: str, spec: SweepSpec, overwrite: bool = False, argv: Sequence[str] | None = None,
                 lock: filelock.FileLock | None = None, state: OutDirState | None = None):
        """Open out_dir from `state` (inspect_out_dir's, read under `lock`), or inspect it now (taking the lock
        unless given). Everything is read and checked before the first write: a refused folder is left as it was."""
        if state is not None and lock is None:
            raise ValueError("ResultStore: a state needs the lock it was read under")
        self.out_dir = out_dir
        self.spec = spec
        self.csv_path = os.path.join(out_dir, RESULTS_CSV)
        self.json_path = os.path.join(out_dir, RESULTS_JSON)
        self.run_path = os.path.join(out_dir, RUN_JSON)
        self.sums_path = os.path.join(out_dir, RESULTS_SUMS)
        self.lock = lock if lock is not None else acquire_lock(out_dir)
        try:
            self._open(state if state is not None else
                       inspect_out_dir(out_dir, spec, spec.to_config(), overwrite=overwrite), argv)
        except BaseException:
            if lock is None:  # taken here: a refused open must not keep the folder locked
                self.lock.release()
            raise

    def _open(self, state: OutDirState, argv: Sequence[str] | None) -> None:
        if state.discard:
            self._discard(state.discard)
        self.columns: list[str] | None = state.columns
        self.rows: list[dict[str, Any]] = list(state.rows)
        for repair in state.repairs:
            logging.warning("%s: %s", self.csv_path, repair)
        if state.keep_bytes is not None:
            self._truncate(state.keep_bytes)
        self._rewrite_sums()  # the checksums of the (verified) lines kept; before run.json says there are some
        run = state.existing or {"config": state.config, "sessions": []}
        self.run = dict(run, sessions=[*run["sessions"], session_metadata(argv)], checksums=RESULTS_SUMS)
        self._write_run()

    def _write_run(self) -> None:
        """Rewrite run.json atomically from `self.run`."""
        _atomic_write(self.run_path, json.dumps(self.run, indent=2, sort_keys=True) + "\n")

    def _rewrite_sums(self) -> None:
        lines = []
        if os.path.exists(self.csv_path):
            with open(self.csv_path, "rb") as handle:
                lines = handle.read().decode("utf-8").splitlines(keepends=True)
        _atomic_write(self.sums_path, "".join(line_sha256(line) + "\n" for line in lines))

    # -- reading ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the out_dir lock."""
        self.lock.release()

    def _discard(self, why: str) -> None:
        removed = []
        for name in sorted(os.listdir(self.out_dir)):
            if name in (RESULTS_CSV, RESULTS_JSON, RUN_JSON, RESULTS_SUMS) or (name.startswith(FIGURE_PREFIX) and name.endswith(".png")):
                os.remove(os.path.join(self.out_dir, name))
                removed.append(name)
        logging.warning("Discarded %s from %s (%s)", removed, self.out_dir, why)

    def _truncate(self, size: int) -> None:
        with open(self.csv_path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def _expected_values(self) -> list[tuple]:
        """The point_columns() values of a complete point's rows, in order (SweepSpec.point_keys)."""
        return self.spec.point_keys()

    def completed_points(self) -> set[tuple[str, str]]:
        return {(r["dataset"], r["policy"]) for r in self.rows}

    # -- writing ------------------------------------------------------------------------------------------------

    def record_point(self, dataset: str, policy: str, info: dict[str, Any]) -> None:
        """Record `info` about point (dataset, policy) under run.json's "points" (atomic rewrite; a re-run point's
        record is replaced, those of earlier sessions are kept)."""
        points = dict(self.run.get("points", {}))
        points[f"{dataset}/{policy}"] = info
        self.run = dict(self.run, points=points)
        self._write_run()

    def append_point(self, rows: list[dict[str, Any]]) -> None:
        """Append one point's rows in a single write + fsync, then rewrite results.json atomically."""
        if not rows:
            raise ValueError("append_point: no rows")
        keys = {(r["dataset"], r["policy"]) for r in rows}
        if len(keys) != 1:
            raise ValueError(f"append_point: rows of several points {sorted(keys)}")
        key = keys.pop()
        if key in self.completed_points():
            raise SweepStateError(f"point {key} is already in {self.csv_path}")
        values = [tuple(r.get(c) for c in self.spec.point_columns()) for r in rows]
        if values != self._expected_values():
            raise ValueError(f"append_point: point {key} has sweep values {values}, expected {self._expected_values()}")
        header = ""
        if self.columns is None:
            metrics = [c for c in rows[0] if c not in KEY_COLUMNS + TAIL_COLUMNS]
            self.columns = list(KEY_COLUMNS) + metrics + list(TAIL_COLUMNS)
            header = _csv_line(self.columns)
        for r in rows:
            if set(r) != set(self.columns):
                raise ValueError(
                    f"append_point: row columns differ from {self.csv_path}'s header: "
                    f"missing {sorted(set(self.columns) - set(r))}, extra {sorted(set(r) - set(self.columns))}"
                )
        block = header + "".join(_csv_line([format_value(r[c]) if r[c] is not None else "" for c in self.columns]) for r in rows)
        sizes = {path: (os.path.getsize(path) if os.path.exists(path) else None)
                 for path in (self.csv_path, self.sums_path)}
        for path, data in ((self.csv_path, block),
                           (self.sums_path, "".join(line_sha256(line) + "\n" for line in block.splitlines(keepends=True)))):
            try:
                _fsync_write(path, data, "a")
            except OSError as err:
                self._undo_append(sizes)
                if header:
                    self.columns = None
                raise _write_failed(path, err, f"; nothing of point {key} was kept") from None
        self.rows.extend(rows)
        self.write_json()

    @staticmethod
    def _undo_append(sizes: dict) -> None:
        """Best effort after a failed append: each file back to its size before it (removed if it was new), so a
        full disk leaves no partial point, empty results.csv or checksums of rows that are not there."""
        for path, size in sizes.items():
            try:
                if size is None:
                    if os.path.exists(path):
                        os.remove(path)
                else:
                    with open(path, "r+b") as handle:
                        handle.truncate(size)
            except OSError:
                pass

    def write_json(self) -> None:
        """Rewrite results.json atomically (strict JSON: NaN, e.g. a latency with no completed task, -> null)."""
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in self.rows]
        payload = {"config": self.run["config"], "sessions": self.run["sessions"], "columns": self.columns, "rows": rows}
        _atomic_write(self.json_path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _is_prefix(values: list, expected: list) -> bool:
    return values == expected[: len(values)]


_ABSENT = "<absent>"


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: old -> new' for each leaf that differs; nested dicts (params, trace_sha256) are descended into, so
    only the changed entries are named (never a whole dict twice)."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = []
        for k in sorted(set(old) | set(new), key=str):
            parts += _changed_keys(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{prefix}{k}.")
        return parts
    if old == new:
        return []
    name = prefix[:-1] if prefix.endswith(".") else prefix
    return [f"{name}: {old!r} -> {new!r}"]


def _config_diff(old: dict, new: dict) -> str:
    parts = _changed_keys(old, new)
    return "; ".join(parts) if parts else "metadata differs"


def read_results(out_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, rows) of a finished or partial sweep, from results.json."""
    path = os.path.join(out_dir, RESULTS_JSON)
    if not os.path.exists(path):
        raise SweepStateError(f"{path} not found: run the sweep first")
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    metric_columns = [c for c in payload["columns"] or [] if c not in KEY_COLUMNS]
    rows = [{k: (math.nan if k in metric_columns and v is None else v) for k, v in r.items()} for r in payload["rows"]]
    return payload["config"], rows
