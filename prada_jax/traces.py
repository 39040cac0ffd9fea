"""Trace format v1: per-(problem, step) SLM / LLM / PRM traces, validation and packing.

A trace is one `.npz` per dataset (fields in docs/design.md). `load_trace` validates every field and raises
`TraceError` naming the file and the field; nothing is clipped or repaired. `pack_traces` turns a trace into
device arrays ready for `jit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C


class TraceError(ValueError):
    """A trace file or array violates format v1. The message names the file and the field."""


# name -> (dtype kind, rank, numeric range check)
_STEP_FIELDS_INT = ("slm_step_tokens", "llm_step_tokens")
_STEP_FIELDS_PROB = (
    "slm_step_success",
    "llm_step_success",
    "prm_context",
    "prm_after_slm",
    "prm_after_llm",
)
ARRAY_FIELDS = ("query_tokens", "num_steps") + _STEP_FIELDS_INT + _STEP_FIELDS_PROB + ("features",)
REQUIRED_METADATA = ("dataset", "slm", "llm", "prm", "provenance", "generator_seed", "calibration_targets")
PROVENANCES = ("synthetic", "collected", "imported")


@dataclasses.dataclass(frozen=True)
class TraceData:
    """Host-side (NumPy) trace of N problems padded to K steps with F features per step."""

    query_tokens: np.ndarray  # int32 [N]
    num_steps: np.ndarray  # int32 [N]
    slm_step_tokens: np.ndarray  # int32 [N, K]
    llm_step_tokens: np.ndarray  # int32 [N, K]
    slm_step_success: np.ndarray  # float32 [N, K]
    llm_step_success: np.ndarray  # float32 [N, K]
    prm_context: np.ndarray  # float32 [N, K]
    prm_after_slm: np.ndarray  # float32 [N, K]
    prm_after_llm: np.ndarray  # float32 [N, K]
    features: np.ndarray  # float32 [N, K, F]
    metadata: dict[str, Any]

    @property
    def num_problems(self) -> int:
        return int(self.query_tokens.shape[0])

    @property
    def max_steps(self) -> int:
        return int(self.slm_step_tokens.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def dataset(self) -> str:
        return str(self.metadata["dataset"])

    @property
    def step_mask(self) -> np.ndarray:
        """bool [N, K]: True on real steps, False on padding."""
        return np.arange(self.max_steps)[None, :] < self.num_steps[:, None]

    def expected_accuracy(self, model: str) -> float:
        """Mean over problems of prod_k p_model[n, k] (the latent quality model, design notes section 3)."""
        probs = {"slm": self.slm_step_success, "llm": self.llm_step_success}[model]
        return float(np.mean(np.prod(np.where(self.step_mask, probs, 1.0), axis=1)))

    def reference_context_tokens(self) -> np.ndarray:
        """int [N, K]: context length before step k on the all-SLM reference path (query + earlier SLM steps)."""
        return reference_context(self.query_tokens, self.slm_step_tokens, self.step_mask)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_FIELDS}


def reference_context(query_tokens, slm_step_tokens, step_mask=None):
    """[N, K]: the context before step k on the all-SLM reference path, in tokens: the query plus the earlier SLM
    steps. The one definition of the reference context (D_psi's input and target, the trace MDP's step costs, the
    generator's features). NumPy arrays in, NumPy out; anything else is computed with jax.numpy. With `step_mask`,
    0 on padding."""
    xp = np if isinstance(slm_step_tokens, np.ndarray) else jnp
    tokens = xp.asarray(slm_step_tokens)
    ctx = xp.asarray(query_tokens)[:, None] + xp.cumsum(tokens, axis=1) - tokens
    return ctx if step_mask is None else ctx * step_mask


def _fail(source: str, field: str, what: str) -> TraceError:
    return TraceError(f"{source}: field '{field}': {what}")


def validate_trace(trace: TraceData, source: str = "<trace>") -> TraceData:
    """Check shapes, dtypes, ranges, padding and metadata; raise TraceError naming `source` and the field."""
    expected_dtypes = {"query_tokens": np.int32, "num_steps": np.int32, "features": np.float32}
    expected_dtypes.update({f: np.int32 for f in _STEP_FIELDS_INT})
    expected_dtypes.update({f: np.float32 for f in _STEP_FIELDS_PROB})
    for name, dtype in expected_dtypes.items():
        value = getattr(trace, name)
        if not isinstance(value, np.ndarray):
            raise _fail(source, name, f"expected a numpy array, got {type(value).__name__}")
        if value.dtype != dtype:
            raise _fail(source, name, f"dtype {value.dtype}, expected {np.dtype(dtype)}")

    if trace.query_tokens.ndim != 1 or trace.query_tokens.shape[0] == 0:
        raise _fail(source, "query_tokens", f"shape {trace.query_tokens.shape}, expected [N] with N > 0")
    n = trace.query_tokens.shape[0]
    if trace.num_steps.shape != (n,):
        raise _fail(source, "num_steps", f"shape {trace.num_steps.shape}, expected ({n},)")
    if trace.slm_step_tokens.ndim != 2 or trace.slm_step_tokens.shape[0] != n:
        raise _fail(source, "slm_step_tokens", f"shape {trace.slm_step_tokens.shape}, expected [{n}, K]")
    k = trace.slm_step_tokens.shape[1]
    if k == 0:
        raise _fail(source, "slm_step_tokens", "padded step width K is 0")
    for name in _STEP_FIELDS_INT + _STEP_FIELDS_PROB:
        if getattr(trace, name).shape != (n, k):
            raise _fail(source, name, f"shape {getattr(trace, name).shape}, expected ({n}, {k})")
    if trace.features.ndim != 3 or trace.features.shape[:2] != (n, k) or trace.features.shape[2] == 0:
        raise _fail(source, "features", f"shape {trace.features.shape}, expected ({n}, {k}, F) with F > 0")

    if np.any(trace.query_tokens <= 0):
        bad = int(np.argmax(trace.query_tokens <= 0))
        raise _fail(source, "query_tokens", f"must be > 0; problem {bad} has {trace.query_tokens[bad]}")
    if np.any((trace.num_steps < 1) | (trace.num_steps > k)):
        bad = int(np.argmax((trace.num_steps < 1) | (trace.num_steps > k)))
        raise _fail(source, "num_steps", f"must be in 1..{k} (padded width); problem {bad} has {trace.num_steps[bad]}")

    mask = trace.step_mask
    for name in _STEP_FIELDS_INT:
        value = getattr(trace, name)
        if np.any(value[mask] <= 0):
            raise _fail(source, name, "token counts must be > 0 on every real step")
    for name in _STEP_FIELDS_PROB:
        value = getattr(trace, name)
        if not np.all(np.isfinite(value)):
            raise _fail(source, name, "contains NaN or infinite values")
        if np.any((value < 0.0) | (value > 1.0)):
            raise _fail(source, name, "probabilities/scores must lie in [0, 1]")
    if not np.all(np.isfinite(trace.features)):
        raise _fail(source, "features", "contains NaN or infinite values")
    for name in _STEP_FIELDS_INT + _STEP_FIELDS_PROB + ("features",):
        value = getattr(trace, name)
        if np.any(value[~mask] != 0):
            raise _fail(source, name, "padding beyond num_steps must be exactly 0")

    _validate_metadata(trace.metadata, source)
    return trace


def _validate_metadata(meta: Any, source: str) -> None:
    if not isinstance(meta, dict):
        raise _fail(source, "metadata", "must be a JSON object")
    for key in REQUIRED_METADATA:
        if key not in meta:
            raise _fail(source, f"metadata.{key}", "missing")
    if not isinstance(meta["dataset"], str) or not meta["dataset"]:
        raise _fail(source, "metadata.dataset", "must be a non-empty string")
    for role in ("slm", "llm", "prm"):
        arch = meta[role]
        if not isinstance(arch, dict) or not {"name", "hidden", "layers"} <= set(arch):
            raise _fail(source, f"metadata.{role}", "must be {name, hidden, layers}")
        if not (isinstance(arch["hidden"], int) and arch["hidden"] > 0 and isinstance(arch["layers"], int) and arch["layers"] > 0):
            raise _fail(source, f"metadata.{role}", "hidden and layers must be positive integers")
    if meta["provenance"] not in PROVENANCES:
        raise _fail(source, "metadata.provenance", f"{meta['provenance']!r} is not one of {PROVENANCES}")
    targets = meta["calibration_targets"]
    if targets is not None:
        if not isinstance(targets, dict):
            raise _fail(source, "metadata.calibration_targets", "must be an object or null")
        for key, value in targets.items():
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise _fail(source, f"metadata.calibration_targets.{key}", "must be a number in [0, 1]")


def save_trace(path: str | os.PathLike, trace: TraceData) -> None:
    """Validate, then write a compressed `.npz`. Byte-identical for identical traces (fixed zip timestamps)."""
    validate_trace(trace, str(path))
    entries = {"format_version": np.asarray(C.TRACE_FORMAT_VERSION, np.int64)}
    entries["metadata"] = np.asarray(json.dumps(trace.metadata, sort_keys=True))
    entries.update(trace.arrays())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (traces, policy tables): what results and tables record to name their inputs."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_trace(path: str | os.PathLike) -> TraceData:
    """Read and validate a trace file; raise TraceError naming the file and the offending field."""
    source = str(path)
    if not os.path.exists(source):
        raise TraceError(f"{source}: file not found")
    try:
        archive = np.load(source, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a format error
        raise TraceError(f"{source}: not a readable .npz trace ({exc})") from exc
    def read(field):
        try:
            return archive[field]
        except Exception as exc:  # noqa: BLE001 - a damaged member (bad CRC, truncated) is a format error
            raise _fail(source, field, f"unreadable ({type(exc).__name__}: {exc})") from exc

    with archive:
        names = set(archive.files)
        for field in ("format_version", "metadata") + ARRAY_FIELDS:
            if field not in names:
                raise _fail(source, field, "missing")
        version = read("format_version")
        if version.shape != () or int(version) != C.TRACE_FORMAT_VERSION:
            raise _fail(source, "format_version", f"{version!r} is not the supported version {C.TRACE_FORMAT_VERSION}")
        try:
            metadata = json.loads(str(read("metadata")))
        except json.JSONDecodeError as exc:
            raise _fail(source, "metadata", f"not valid JSON ({exc})") from exc
        arrays = {field: read(field) for field in ARRAY_FIELDS}
    return validate_trace(TraceData(metadata=metadata, **arrays), source)


@struct.dataclass
class PackedTraces:
    """Device arrays of one trace, padded to [N, K] with a step mask, ready for jit."""

    query_tokens: jnp.ndarray  # int32 [N]
    num_steps: jnp.ndarray  # int32 [N]
    step_mask: jnp.ndarray  # bool [N, K]
    slm_step_tokens: jnp.ndarray  # int32 [N, K]
    llm_step_tokens: jnp.ndarray  # int32 [N, K]
    slm_step_success: jnp.ndarray  # float32 [N, K]
    llm_step_success: jnp.ndarray  # float32 [N, K]
    prm_context: jnp.ndarray  # float32 [N, K]
    prm_after_slm: jnp.ndarray  # float32 [N, K]
    prm_after_llm: jnp.ndarray  # float32 [N, K]
    features: jnp.ndarray  # float32 [N, K, F]

    @property
    def num_problems(self) -> int:
        return self.query_tokens.shape[0]

    @property
    def max_steps(self) -> int:
        return self.slm_step_tokens.shape[1]


def pack_traces(trace: TraceData) -> PackedTraces:
    """Move a validated trace to device arrays (static shapes, padding masked by `step_mask`)."""
    arrays = {name: jnp.asarray(value) for name, value in trace.arrays().items()}
    return PackedTraces(step_mask=jnp.asarray(trace.step_mask), **arrays)
