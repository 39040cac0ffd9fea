"""Run metadata recorded in run.json per session: time, git revision, package versions, device, argv."""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from typing import Any

from prada_jax import data_paths


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("prada-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "matplotlib", "absl-py"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


GENERATED_DIR = "figures"  # tracked outputs of the experiments (make_figures, scheduler_study)


def git_revision() -> dict[str, Any]:
    """HEAD commit of the repository holding this package and whether its tracked files differ from it (read-only
    git calls). The outputs under figures/ do not count: make_figures rewrites them while it runs its sweeps, which
    would otherwise mark every sweep after the first as made from a dirty tree."""
    root = data_paths.source_root()
    if root is None:  # an installed copy (site-packages): not a checkout, whatever repository may surround it
        return {"commit": None, "dirty": None}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", f":(top,exclude){GENERATED_DIR}"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return {"commit": head, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    import jax

    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def session_metadata(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What this process is: when, which code, which packages, which device, which command line."""
    return {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv if argv is not None else sys.argv),
        "git": git_revision(),
        "versions": package_versions(),
        "device": device_info(),
    }
