"""One writer per output folder: an exclusive `filelock` on a lock file inside it (the sweep's <out_dir>/.sweep.lock,
prada-train's <ckpt_dir>/<dataset>/.train.lock). Callers turn the two errors into their own one-line messages."""

from __future__ import annotations

import os


class LockHeld(RuntimeError):
    """Another process holds the lock at `path` (still, after `timeout` seconds when one was given)."""

    def __init__(self, path: str):
        super().__init__(f"lock {path} is held")
        self.path = path


class LockUnavailable(OSError):
    """The lock file cannot be created (the folder refuses new files); the message names it."""


def lock_folder(directory: str, name: str, timeout: float = 0):
    """Exclusive `filelock.FileLock` on <directory>/<name> (an existing folder: callers create it, each with its
    own message). `timeout`: seconds to wait for another holder (0: fail at once, < 0: wait for ever), then
    LockHeld; a lock file that cannot be made is LockUnavailable. Released by `lock.release()` or when this
    process exits (flock locks die with their process, so a killed holder never leaves a stale lock)."""
    import filelock

    path = os.path.join(directory, name)
    lock = filelock.FileLock(path, thread_local=False)  # one lock per process, whichever thread releases it
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        if not os.path.exists(path):  # no lock file, so no other holder: the folder refuses new files
            raise LockUnavailable(f"cannot create the lock file {path}") from None
        raise LockHeld(path) from None
    except OSError as err:
        raise LockUnavailable(f"cannot create the lock file {path} ({err.strerror or err})") from None
    return lock
