"""Orbax checkpoints of training state (CheckpointManager, StandardSave / JsonSave composite).

Each step directory holds `state` (any pytree of arrays) and `meta` (JSON: config, data shapes, ...).
`restore` checks the stored `meta` against what the caller expects and the stored tree against the caller's
template; any mismatch, a missing directory or an empty one raises `CheckpointError` naming the path.

One writer per training directory: `acquire_lock` takes an exclusive `filelock` on <directory>/.train.lock
(prada_jax.locks; prada-train holds one per <ckpt_dir>/<dataset> for the whole run, so two runs never write the
same orbax checkpoints); `data_paths.output_folder_problem` says why a path cannot be one before anything is written.
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from prada_jax import locks


class CheckpointError(RuntimeError):
    """Missing, empty or mismatched checkpoint; the message names the path."""


class LockHeldError(CheckpointError):
    """Another process holds the training lock of a directory; the message names the lock file."""


LOCK_FILE = ".train.lock"


def acquire_lock(directory: str, wait: bool = False, timeout: float = -1):
    """Exclusive `filelock.FileLock` on <directory>/.train.lock (the directory is created). Returns (lock, waited).

    When another process holds it: LockHeldError naming the lock at once, or with `wait` block until it is
    released (at most `timeout` seconds when >= 0; LockHeldError after that) and return waited=True, so that the
    caller re-checks what the other writer left behind. The lock is released by `lock.release()` or when this
    process exits (a killed holder never leaves a stale lock: flock locks die with their process).
    A lock file that cannot be made is `locks.LockUnavailable` (an OSError).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    try:
        return locks.lock_folder(directory, LOCK_FILE), False
    except locks.LockHeld:
        if not wait:
            raise LockHeldError(f"{directory} is being written by another training run (lock {path} is held); "
                                "wait for it to finish or use another --ckpt_dir") from None
    logging.info("%s is being written by another training run (lock %s is held): waiting for it", directory, path)
    try:
        return locks.lock_folder(directory, LOCK_FILE, timeout=timeout), True
    except locks.LockHeld:
        raise LockHeldError(f"{directory} is still being written by another training run after {timeout:g} s "
                            f"(lock {path} is held)") from None


def _manager(directory: str, max_to_keep: int | None = 3, create: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)


def _leaves(tree) -> dict:
    """{'a/b/0': (shape, dtype)} of a pytree of arrays / ShapeDtypeStructs / orbax array metadata."""
    def name(k):
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name(k) for k in path): (tuple(x.shape), str(x.dtype)) for path, x in flat}


def _structure_diff(expected, stored) -> list[str]:
    e, s = _leaves(expected), _leaves(stored)
    out = [f"'{k}' missing in checkpoint" for k in sorted(set(e) - set(s))]
    out += [f"'{k}' in checkpoint only" for k in sorted(set(s) - set(e))]
    out += [f"'{k}': checkpoint has {s[k]}, expected {e[k]}" for k in sorted(set(e) & set(s)) if e[k] != s[k]]
    return out


def save(directory: str, step: int, state: Any, meta: dict, max_to_keep: int | None = 3) -> str:
    """Save `state` and JSON `meta` as checkpoint `step`; returns the step directory. Blocks until written."""
    with _manager(directory, max_to_keep) as mngr:
        mngr.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
    return os.path.join(os.path.abspath(directory), str(int(step)))


def latest_step(directory: str) -> int | None:
    """Latest saved step in `directory`, or None when there is none (or no directory)."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, create=False) as mngr:
        return mngr.latest_step()


def latest_meta(directory: str) -> tuple[str, dict] | None:
    """(step path, stored meta) of the newest step whose meta is readable, or None when there is no step.

    A cheap pre-check of what `restore` will read (no array is loaded). CheckpointError naming the directory when
    steps exist but no meta can be read."""
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        return None
    with _manager(path, create=False) as mngr:
        steps = sorted(mngr.all_steps(), reverse=True)
        problems = []
        for step in steps:
            try:
                meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as exc:  # noqa: BLE001 - a damaged step: restore falls back to an older one too
                problems.append(f"{step}: {type(exc).__name__}")
                _quiet_abandoned_reads()
                continue
            return os.path.join(path, str(step)), dict(meta)
    if steps:
        raise CheckpointError(f"{path}: no checkpoint step with readable metadata ({'; '.join(problems)})")
    return None


def meta_diff(expected: dict, found: dict, prefix: str = "") -> list[str]:
    """'key: checkpoint has X, expected Y' for each key of `expected` (nested dicts descended) that differs."""
    out = []
    for key in sorted(expected):  # only what the caller expects; extra stored keys are fine
        e, f = expected.get(key, "<missing>"), found.get(key, "<missing>")
        if isinstance(e, dict) and isinstance(f, dict):
            out += meta_diff(e, f, f"{prefix}{key}.")
        elif e != f:
            out.append(f"{prefix}{key}: checkpoint has {f!r}, expected {e!r}")
    return out


class _Damaged(Exception):
    """A step whose files cannot be read back (deleted or truncated data): try an older one."""


def _short(exc: BaseException, limit: int = 240) -> str:
    """`Type: first line` of an exception (orbax / TensorStore errors carry a whole JSON spec on later lines)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def _abandoned_read(unraisable) -> bool:
    """Whether an unraisable exception is the report of a read orbax abandoned when a damaged step failed: its
    pending read coroutines are garbage-collected later ('Exception ignored in: <coroutine ...>', or 'RuntimeError:
    Event loop is closed' once orbax's loop is gone), each with a traceback, though the fallback worked."""
    obj, exc = unraisable.object, unraisable.exc_value
    if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
        return True
    code = getattr(obj, "cr_code", None) if inspect.iscoroutine(obj) else None
    filename = getattr(code, "co_filename", "") or ""
    return "orbax" in filename or "tensorstore" in filename


def _quiet_abandoned_reads() -> None:
    """From the first damaged step on, drop the reports `_abandoned_read` recognises (the warning that names the
    damaged step has said what happened); every other unraisable exception still goes to Python's hook."""
    if getattr(sys.unraisablehook, "_prada_quiet", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _abandoned_read(unraisable):
            previous(unraisable)

    hook._prada_quiet = True
    sys.unraisablehook = hook


def restore(directory: str, like: Any, expected_meta: dict | None = None, step: int | None = None):
    """Restore (state, meta) of `step` (default: the newest intact step) into the structure of `like`.

    Raises CheckpointError naming the path when the directory or step is missing, when a key of
    `expected_meta` differs from the stored meta, or when no step can be read. With `step=None`, a newest step
    whose files are damaged (e.g. a deleted orbax data file) is skipped with a warning for the next older one.
    """
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: checkpoint directory not found")
    with _manager(path, create=False) as mngr:
        steps = mngr.all_steps()
        if not steps:
            raise CheckpointError(f"{path}: no checkpoint in this directory")
        if step is not None:
            if int(step) not in steps:
                raise CheckpointError(f"{os.path.join(path, str(step))}: checkpoint step {step} not found "
                                      f"(have {sorted(steps)})")
            try:
                return _restore_step(mngr, path, int(step), like, expected_meta)
            except _Damaged as exc:
                raise CheckpointError(str(exc)) from exc
        problems = []
        for candidate in sorted(steps, reverse=True):
            try:
                result = _restore_step(mngr, path, candidate, like, expected_meta)
            except _Damaged as exc:
                problems.append(str(exc))
                _quiet_abandoned_reads()
                gc.collect()  # the failed step's abandoned reads are reported (and dropped) now, not mid-training
                logging.warning("%s; falling back to an older checkpoint step", exc)
                continue
            return result
        raise CheckpointError(f"{path}: no intact checkpoint step ({'; '.join(problems)})")


def _restore_step(mngr, path: str, step: int, like: Any, expected_meta: dict | None):
    step_path = os.path.join(path, str(step))
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as exc:  # noqa: BLE001 - unreadable metadata: a damaged step
        raise _Damaged(f"{step_path}: metadata unreadable ({_short(exc)})") from exc
    if expected_meta is not None:
        diffs = meta_diff(expected_meta, {k: meta.get(k, "<missing>") for k in expected_meta})
        if diffs:
            raise CheckpointError(f"{step_path}: checkpoint does not match this run: " + "; ".join(diffs))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        stored = mngr.item_metadata(step)["state"]
    except Exception as exc:  # noqa: BLE001
        raise _Damaged(f"{step_path}: state metadata unreadable ({_short(exc)})") from exc
    diffs = _structure_diff(abstract, dict(stored) if stored is not None else {})
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")
        raise CheckpointError(f"{step_path}: stored state does not match the expected structure: {shown}")
    try:
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{step_path}: stored state does not match the expected structure ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - missing or truncated data files
        raise _Damaged(f"{step_path}: state data unreadable ({_short(exc)})") from exc
    return state, meta
