"""The multi-process path of prada_jax.sharding: 2 JAX processes on localhost, 2 CPU devices each.

Both processes call `sharding.initialize_distributed()` (jax.distributed with a coordinator on a free local
port; CPU collectives over gloo, jax's default on CPU), run `simulate_grid_sharded` with the episodes split
over the 4 devices of both processes, gather the result with `process_allgather`, and write it to an .npz
(tests/multiprocess_worker.py). This test compares each process's result, metric by metric, with the
single-process run on the same problem and seed (`sharding.prepare_grid`'s one-device program, which
tests/test_sharding.py shows to be `prada_jax.sim.simulate_grid`'s): they must be identical, as in the
single-process sharded test (tests/test_sharding.py). The workers and the reference compile with XLA:CPU's
default fusion emitters (conftest.DEFAULT_EMITTER_XLA_FLAGS).

The children get a deadline and are killed (with their process groups) on timeout or failure, so a hung
coordinator or collective cannot hang the test run.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from conftest import DEFAULT_EMITTER_OPTIONS, DEFAULT_EMITTER_XLA_FLAGS

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
WORKER = TESTS_DIR / "multiprocess_worker.py"
NUM_PROCESSES, LOCAL_DEVICES = 2, 2
DEADLINE_S = 240  # the whole 2-process run; ~45 s on a 2-core machine at load 7, mostly 3 XLA compiles


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # each child leads its own session (start_new_session)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _launch(tmp_path: pathlib.Path):
    """Start the workers; returns (procs, out paths, log paths)."""
    port = _free_port()
    base = dict(os.environ)
    base["PYTHONPATH"] = os.pathsep.join(p for p in [str(TESTS_DIR), str(REPO_ROOT), base.get("PYTHONPATH")] if p)
    base["JAX_PLATFORMS"] = "cpu"
    base["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
    base["JAX_NUM_PROCESSES"] = str(NUM_PROCESSES)
    for var in ("JAX_LOCAL_DEVICE_IDS", "PRADA_DISTRIBUTED"):
        base.pop(var, None)
    base["XLA_FLAGS"] = DEFAULT_EMITTER_XLA_FLAGS  # the worker adds its own device count
    procs, outs, logs = [], [], []
    try:
        for pid in range(NUM_PROCESSES):
            out, log = tmp_path / f"proc{pid}.npz", tmp_path / f"proc{pid}.log"
            env = dict(base, JAX_PROCESS_ID=str(pid))
            with open(log, "wb") as log_file:
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), str(out), str(LOCAL_DEVICES)], cwd=REPO_ROOT, env=env,
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True))
            outs.append(out)
            logs.append(log)
    except BaseException:
        _kill(procs)
        raise
    return procs, outs, logs


def _wait(procs, logs, deadline: float) -> None:
    """Wait for every worker; kill all of them and fail with their logs if one fails or time runs out."""
    while time.monotonic() < deadline:
        codes = [proc.poll() for proc in procs]
        if codes == [0] * len(procs) or any(c not in (None, 0) for c in codes):
            break
        time.sleep(0.2)
    codes = [proc.poll() for proc in procs]
    if codes != [0] * len(procs):
        _kill(procs)  # a worker whose peer died would otherwise wait for it until jax's own timeouts
        tails = "\n".join(f"--- process {i} (exit {c}) ---\n{log.read_text(errors='replace')[-3000:]}"
                          for i, (c, log) in enumerate(zip(codes, logs)))
        raise AssertionError(f"multi-process workers failed or did not finish within {DEADLINE_S} s:\n{tails}")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_two_processes_match_single_process(tmp_path):
    from multiprocess_worker import problem

    from prada_jax import sharding

    start = time.monotonic()
    procs, outs, logs = _launch(tmp_path)
    try:
        # The single-process reference, computed here (one device) while the workers start up.
        packed, table, grid, config, episodes, seed = problem()
        fn, args, trim = sharding.prepare_grid(packed, table, grid, config, episodes, seed)
        want = trim(fn.lower(*args).compile(DEFAULT_EMITTER_OPTIONS)(*args))
        want = {k: np.asarray(getattr(want, k)) for k in want.__dataclass_fields__}
    except BaseException:
        _kill(procs)
        raise
    _wait(procs, logs, start + DEADLINE_S)

    assert int(want["completed"].sum()) > 0
    for pid, out in enumerate(outs):
        with np.load(out) as data:
            got = {k: data[k] for k in data.files}
        assert int(got["info.process_index"]) == pid
        assert int(got["info.process_count"]) == NUM_PROCESSES
        assert int(got["info.local_devices"]) == LOCAL_DEVICES
        assert int(got["info.global_devices"]) == NUM_PROCESSES * LOCAL_DEVICES
        assert got["info.mesh"].tolist() == [1, 4]  # episodes over all 4 devices, i.e. across both processes
        # The un-gathered output spans both processes: each holds 2 of the 4 shards of the padded [3, 8].
        assert not bool(got["info.raw_fully_addressable"])
        assert got["info.raw_global_shape"].tolist() == [3, 8]
        assert int(got["info.raw_local_shards"]) == LOCAL_DEVICES
        assert got["info.raw_shard_shape"].tolist() == [3, 2]
        for prefix in ("sharded", "prepared"):
            bad = [name for name, a in want.items() if not _same(got[f"{prefix}.{name}"], a)]
            assert bad == [], f"process {pid} {prefix}: metrics differ from simulate_grid: {bad}"
