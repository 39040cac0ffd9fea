"""Results of a sweep on disk: results.csv (append + fsync), results.json (atomic rewrite), run.json, the lock.

`ResultStore` owns one out_dir: it refuses results of other flags (unless overwrite), drops a partial last
line or an incomplete last point left by a killed run, and appends one point's rows in a single write.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Sequence

from absl import logging

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
FIGURE_PREFIX = "fig_"

class SweepStateError(RuntimeError):
    """The out_dir holds results that do not belong to this sweep, or are corrupt."""

def _fsync_write(path: str, data: str, mode: str) -> None:
    with open(path, mode, encoding="utf-8", newline="") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write(path: str, data: str) -> None:
    tmp = path + ".tmp"
    _fsync_write(tmp, data, "w")
    os.replace(tmp, path)


def format_value(value: Any) -> str:
    """CSV cell: ints as ints, floats round-trip exact (repr), strings as they are."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_cell(column: str, text: str) -> Any:
    """One CSV cell; ValueError naming the column for a cell that is not what the column holds."""
    if column in ("dataset", "policy", "sweep_param"):
        return text
    try:
        if column == "episodes":
            return int(text)
        if text == "":
            return None
        return float(text)
    except ValueError:
        raise ValueError(f"column {column!r}: {text[:40]!r} is not a number") from None


LOCK_FILE = ".sweep.lock"


def acquire_lock(out_dir: str):
    """One writer per result directory: an exclusive `filelock` on <out_dir>/.sweep.lock, or SweepStateError at
    once if another sweep holds it (its results stay intact)."""
    import filelock

    os.makedirs(out_dir, exist_ok=True)
    lock = filelock.FileLock(os.path.join(out_dir, LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise SweepStateError(
            f"{out_dir} is being written by another sweep (lock {os.path.join(out_dir, LOCK_FILE)} is held); "
            "wait for it to finish or use another --out_dir"
        ) from None
    return lock


class ResultStore:
    """results.csv (append + fsync, the source of truth), results.json (atomic rewrite) and run.json in out_dir."""

    def __init__(self, out_dir: str, spec: SweepSpec, overwrite: bool = False, argv: Sequence[str] | None = None,
                 lock: "filelock.FileLock | None" = None):
        self.out_dir = out_dir
        self.spec = spec
        self.csv_path = os.path.join(out_dir, RESULTS_CSV)
        self.json_path = os.path.join(out_dir, RESULTS_JSON)
        self.run_path = os.path.join(out_dir, RUN_JSON)
        self.lock = lock if lock is not None else acquire_lock(out_dir)
        config = spec.to_config()
        try:
            existing = self._read_run()
        except SweepStateError:
            if not overwrite:
                raise
            self._discard("run.json is corrupt and --overwrite is set")
            existing = None
        if existing is not None and not os.path.exists(self.csv_path):
            existing = None  # only a failed run's metadata (no result rows): nothing to protect
        if existing is not None and existing.get("config") != config:
            if not overwrite:
                diff = _config_diff(existing.get("config", {}), config)
                raise SweepStateError(
                    f"{out_dir} holds results of a sweep with different flags ({diff}); "
                    "use another --out_dir, or --overwrite to discard them"
                )
            self._discard("flags changed and --overwrite is set")
            existing = None
        elif existing is None and os.path.exists(self.csv_path):
            if not overwrite:
                raise SweepStateError(
                    f"{self.csv_path} exists without {RUN_JSON}: cannot tell which sweep wrote it; "
                    "use another --out_dir, or --overwrite to discard it"
                )
            self._discard(f"no {RUN_JSON} and --overwrite is set")
        self.run = existing or {"config": config, "sessions": []}
        self.run["sessions"].append(session_metadata(argv))
        _atomic_write(self.run_path, json.dumps(self.run, indent=2, sort_keys=True) + "\n")
        self.columns: list[str] | None = None
        self.rows: list[dict[str, Any]] = []
        self._load_rows()

    # -- reading ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the out_dir lock."""
        self.lock.release()

    def _read_run(self) -> dict | None:
        if not os.path.exists(self.run_path):
            return None
        try:
            with open(self.run_path, encoding="utf-8") as handle:
                return json.load(handle)
        except json.JSONDecodeError as err:
            raise SweepStateError(f"{self.run_path} is not valid JSON ({err}); remove it or use --overwrite") from err

    def _discard(self, why: str) -> None:
        removed = []
        for name in sorted(os.listdir(self.out_dir)):
            if name in (RESULTS_CSV, RESULTS_JSON, RUN_JSON) or (name.startswith(FIGURE_PREFIX) and name.endswith(".png")):
                os.remove(os.path.join(self.out_dir, name))
                removed.append(name)
        logging.warning("Discarded %s from %s (%s)", removed, self.out_dir, why)

    def _load_rows(self) -> None:
        if not os.path.exists(self.csv_path):
            return
        with open(self.csv_path, "rb") as handle:
            raw = handle.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SweepStateError(f"{self.csv_path}: not a text CSV ({err}); remove it or use --overwrite") from err
        keep_bytes = len(raw)
        if text and not text.endswith("\n"):
            # A kill mid-write leaves a partial last line: drop it (reported, then truncated below).
            cut = text.rfind("\n") + 1
            logging.warning("%s: dropping a partial last line left by an interrupted run", self.csv_path)
            text = text[:cut]
            keep_bytes = len(text.encode("utf-8"))
        lines = text.splitlines(keepends=True)
        if not lines:
            self._truncate(0)
            return
        self.columns = next(csv.reader([lines[0]]))
        missing = [c for c in KEY_COLUMNS + self.spec.point_columns() + TAIL_COLUMNS if c not in self.columns]
        if missing:
            raise SweepStateError(f"{self.csv_path}: header lacks columns {missing}")
        offsets = [len(lines[0].encode("utf-8"))]
        rows = []
        for line in lines[1:]:
            cells = next(csv.reader([line]))
            if len(cells) != len(self.columns):
                raise SweepStateError(f"{self.csv_path}: row {len(rows) + 1} has {len(cells)} cells, header {len(self.columns)}")
            try:
                rows.append({c: parse_cell(c, v) for c, v in zip(self.columns, cells)})
            except ValueError as err:
                raise SweepStateError(f"{self.csv_path}: row {len(rows) + 1}: {err}; remove the file or use --overwrite") from err
            offsets.append(offsets[-1] + len(line.encode("utf-8")))
        # Group rows into points (contiguous blocks); only the last block may be incomplete.
        expected = self._expected_values()
        point_columns = self.spec.point_columns()
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
                raise SweepStateError(f"{self.csv_path}: point {key} appears twice")
            if key not in self.spec.points():
                raise SweepStateError(f"{self.csv_path}: point {key} is not part of this sweep")
            values = [tuple(r[c] for c in point_columns) for r in block]
            if len(block) < len(expected) and j == len(rows) and _is_prefix(values, expected):
                logging.warning(
                    "%s: discarding %d rows of the incomplete point %s left by an interrupted run",
                    self.csv_path, len(block), key,
                )
                keep_bytes = offsets[i]
                break
            if values != expected:
                raise SweepStateError(f"{self.csv_path}: point {key} has sweep values {values}, expected {expected}")
            seen.add(key)
            done.extend(block)
            i = j
        if keep_bytes != len(raw):
            self._truncate(keep_bytes)
        self.rows = done

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
        _fsync_write(self.csv_path, block, "a")
        self.rows.extend(rows)
        self.write_json()

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
