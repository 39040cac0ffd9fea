"""Where the shipped data lives: the flagfiles, the traces and the trained policy tables.

In a source checkout `traces/` and `checkpoints/` sit next to `prada_jax/`; a plain (non-editable)
`pip install .` copies the traces (`traces/*.npz`) and the trained tables (`checkpoints/<dataset>/policy_table.npz`
and `eval.json`, not the orbax `models/`) into the package as `prada_jax/_data/{traces,checkpoints}`
(pyproject.toml maps those two folders). The commands' relative defaults (`--traces_dir=traces`,
`--ckpt_dir=checkpoints`) are used as given when that folder exists in the working directory; otherwise they
fall back to the shipped copy (`resolve_data_dir`), so `prada-sweep --flagfile=smoke.cfg` works from anywhere.
The shipped checkpoints are read-only: a table that must be trained needs an explicit, writable `--ckpt_dir`.
"""

from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(PACKAGE_DIR, "configs")  # the shipped *.cfg flagfiles (package data)
SHIPPED_DATA = ("traces", "checkpoints")


def source_root() -> str | None:
    """The source checkout holding this package (its pyproject.toml next to prada_jax/), or None when installed."""
    root = os.path.dirname(PACKAGE_DIR)
    return root if os.path.isfile(os.path.join(root, "pyproject.toml")) else None


def shipped_dir(name: str) -> str | None:
    """The shipped copy of `name` ("traces" or "checkpoints"): installed package data, else the checkout's folder."""
    if name not in SHIPPED_DATA:
        raise ValueError(f"{name!r} is not one of {SHIPPED_DATA}")
    installed = os.path.join(PACKAGE_DIR, "_data", name)
    if os.path.isdir(installed):
        return installed
    root = source_root()
    if root is not None and os.path.isdir(os.path.join(root, name)):
        return os.path.join(root, name)
    return None


def resolve_data_dir(path: str, name: str) -> str:
    """`path` unless it is the bare default `name` and no such folder exists here: then the shipped copy."""
    if os.path.normpath(path) == name and not os.path.isdir(path):
        shipped = shipped_dir(name)
        if shipped is not None:
            return shipped
    return path


def is_installed_data(path: str) -> bool:
    """True for a path inside the installed package's data (read-only: never train or write there)."""
    data = os.path.join(PACKAGE_DIR, "_data")
    full = os.path.abspath(path)
    return full == data or full.startswith(data + os.sep)


def output_folder_problem(path: str, writable: bool = True) -> str | None:
    """Why `path` cannot be used (or created) as an output folder, or None; nothing is created. The nearest existing
    of `path` and its parents must be a folder, and with `writable` one this process may write into. Callers put
    the flag in front ('--out_dir=...: <problem>')."""
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is not a folder"
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
