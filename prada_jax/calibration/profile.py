"""Measured latency profiles: the CSV that experiments/measure_latency.py writes, read and interpolated.

A profile holds, for each role it covers, measured times of one forward pass:

    role,kind,batch,context,seconds
    server,prefill,1,256,0.0123        # prefill of `context` tokens, alone
    server,decode,8,1024,0.0071        # one decode iteration of `batch` requests at `context` cached tokens each

Roles: "server" (the LLM on the server accelerator) and "edge" (the SLM on the edge device) are required; "prm"
(the online PRM on the server) is optional: without it, a PRM check costs the server's prefill of the same tokens
(the LLM instead of the 1.5B PRM: an over-estimate). Lines starting with '#' are comments (measure_latency.py
writes its provenance there). Decode rows of a role must form a full batch x context grid with at least two
batches and two contexts; prefill rows need at least two contexts.

Interpolation (as Vidur does with profiled operator times): prefill time is piecewise linear in the prompt length
and decode time bilinear in (batch, context), both extended linearly beyond the measured range and kept above the
smallest measured time. Everything is jnp and broadcasts, so a profile model runs inside the simulator's jit.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os

import jax.numpy as jnp
import numpy as np

PROFILE_COLUMNS = ("role", "kind", "batch", "context", "seconds")
ROLES = ("server", "edge", "prm")
REQUIRED_ROLES = ("server", "edge")


class ProfileError(ValueError):
    """A missing or malformed latency profile (the message names the file)."""


@dataclasses.dataclass(frozen=True)
class RoleProfile:
    """Measured times of one role (NumPy float64, sorted): prefill over contexts, decode over a batch x context
    grid."""

    prefill_context: np.ndarray  # [P]
    prefill_seconds: np.ndarray  # [P]
    decode_batch: np.ndarray  # [B]
    decode_context: np.ndarray  # [C]
    decode_seconds: np.ndarray  # [B, C]


def load_profile(path: str) -> dict[str, RoleProfile]:
    """{role: RoleProfile} of a profile CSV; a one-line ProfileError naming path (and line) otherwise."""
    if not os.path.isfile(path):
        raise ProfileError(f"{path}: no such latency profile (experiments/measure_latency.py --profile writes one)")
    points: dict[str, dict[str, dict]] = {}
    with open(path, newline="") as f:
        lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ProfileError(f"{path}: empty latency profile")
    header = [c.strip() for c in next(csv.reader([lines[0][1]]))]
    if tuple(header) != PROFILE_COLUMNS:
        raise ProfileError(f"{path}:{lines[0][0]}: header must be {','.join(PROFILE_COLUMNS)}, got {','.join(header)}")
    for lineno, line in lines[1:]:
        cells = [c.strip() for c in next(csv.reader([line]))]
        if len(cells) != len(PROFILE_COLUMNS):
            raise ProfileError(f"{path}:{lineno}: {len(cells)} fields, expected {len(PROFILE_COLUMNS)}")
        role, kind, batch, context, seconds = cells
        if role not in ROLES:
            raise ProfileError(f"{path}:{lineno}: role {role!r} is not one of {ROLES}")
        if kind not in ("prefill", "decode"):
            raise ProfileError(f"{path}:{lineno}: kind {kind!r} is not prefill or decode")
        try:
            b, m, s = int(batch), int(context), float(seconds)
        except ValueError:
            raise ProfileError(f"{path}:{lineno}: batch and context must be integers and seconds a number") from None
        if b < 1 or m < 1 or not np.isfinite(s) or s <= 0:
            raise ProfileError(f"{path}:{lineno}: batch, context and seconds must be positive")
        if kind == "prefill" and b != 1:
            raise ProfileError(f"{path}:{lineno}: prefill rows are batch 1 (a prefill runs alone)")
        key = (b, m)
        table = points.setdefault(role, {}).setdefault(kind, {})
        if key in table:
            raise ProfileError(f"{path}:{lineno}: a second {role} {kind} row at batch {b}, context {m}")
        table[key] = s
    missing = [r for r in REQUIRED_ROLES if r not in points]
    if missing:
        raise ProfileError(f"{path}: no rows for role(s) {missing}; a profile needs {list(REQUIRED_ROLES)}")
    out = {}
    for role, kinds in points.items():
        pre, dec = kinds.get("prefill", {}), kinds.get("decode", {})
        if len(pre) < 2:
            raise ProfileError(f"{path}: role {role} needs prefill rows at two or more contexts")
        batches = sorted({b for b, _ in dec})
        contexts = sorted({m for _, m in dec})
        if len(batches) < 2 or len(contexts) < 2:
            raise ProfileError(f"{path}: role {role} needs decode rows at two or more batches and contexts")
        grid = np.full((len(batches), len(contexts)), np.nan)
        for (b, m), s in dec.items():
            grid[batches.index(b), contexts.index(m)] = s
        if np.isnan(grid).any():
            raise ProfileError(f"{path}: role {role} decode rows do not cover the full grid batches {batches} x "
                               f"contexts {contexts}")
        pc = sorted(m for _, m in pre)
        out[role] = RoleProfile(np.asarray(pc, float), np.asarray([pre[(1, m)] for m in pc], float),
                                np.asarray(batches, float), np.asarray(contexts, float), grid)
    return out


def profile_fingerprint(path: str) -> str:
    """First 8 hex digits of the SHA-1 of the profile file (names its tables' folder)."""
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:8]


# ---- interpolation (jnp, broadcasting) ----

def _interp_linear_extrap(x, xs: np.ndarray, ys: np.ndarray):
    """Piecewise-linear interpolation of (xs, ys) at x, extended linearly with the end segments."""
    x = jnp.asarray(x, jnp.float32)
    xs32, ys32 = jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)
    i = jnp.clip(jnp.searchsorted(xs32, x, side="right") - 1, 0, len(xs) - 2)
    x0, x1, y0, y1 = xs32[i], xs32[i + 1], ys32[i], ys32[i + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def prefill_seconds(profile: RoleProfile, tokens):
    """Measured prefill time of `tokens` tokens (alone), interpolated; at least the smallest measured prefill."""
    t = _interp_linear_extrap(tokens, profile.prefill_context, profile.prefill_seconds)
    return jnp.maximum(t, float(profile.prefill_seconds.min()))


def prefill_extension_seconds(profile: RoleProfile, context, cached):
    """Prefill of tokens cached+1..context: t(context) - t(cached) + t(0), where t(0) (the extrapolated fixed cost,
    kept >= 0) is paid once; equals prefill_seconds(context) when nothing is cached. 0 when nothing is new."""
    m, c = jnp.asarray(context, jnp.float32), jnp.asarray(cached, jnp.float32)
    t0 = jnp.maximum(_interp_linear_extrap(0.0, profile.prefill_context, profile.prefill_seconds), 0.0)
    full = prefill_seconds(profile, m)
    ext = jnp.where(c > 0, _interp_linear_extrap(m, profile.prefill_context, profile.prefill_seconds)
                    - _interp_linear_extrap(c, profile.prefill_context, profile.prefill_seconds) + t0, full)
    return jnp.where(m > c, jnp.maximum(ext, 0.0), 0.0)


def decode_iteration_seconds(profile: RoleProfile, batch, context):
    """Measured time of one decode iteration of `batch` requests at `context` cached tokens each, bilinear in
    (batch, context) and extended linearly; at least the smallest measured decode iteration."""
    b, m = jnp.broadcast_arrays(jnp.asarray(batch, jnp.float32), jnp.asarray(context, jnp.float32))
    bs, cs = profile.decode_batch, profile.decode_context
    # interpolate along context in every measured batch row, then along batch
    rows = jnp.stack([_interp_linear_extrap(m, cs, profile.decode_seconds[k]) for k in range(len(bs))], axis=-1)
    bs32 = jnp.asarray(bs, jnp.float32)
    i = jnp.clip(jnp.searchsorted(bs32, b, side="right") - 1, 0, len(bs) - 2)
    y0 = jnp.take_along_axis(rows, i[..., None], axis=-1)[..., 0]
    y1 = jnp.take_along_axis(rows, (i + 1)[..., None], axis=-1)[..., 0]
    t = y0 + (y1 - y0) * (b - bs32[i]) / (bs32[i + 1] - bs32[i])
    return jnp.maximum(t, float(profile.decode_seconds.min()))


def decode_tokens_seconds(profile: RoleProfile, first_context, tokens, other_requests=0, other_context_tokens=0):
    """`tokens` decode iterations of one request at contexts first_context, first_context + 1, ..., batched with
    `other_requests` requests holding `other_context_tokens` in all: tokens x the iteration time at the batch size
    and the batch's mean context at the middle iteration (exact where the profile is linear in context)."""
    n = jnp.maximum(jnp.asarray(tokens, jnp.float32), 0.0)
    r = jnp.asarray(other_requests, jnp.float32)
    mid = jnp.asarray(first_context, jnp.float32) + 0.5 * jnp.maximum(n - 1.0, 0.0)
    mean_ctx = (mid + jnp.asarray(other_context_tokens, jnp.float32)) / (1.0 + r)
    return n * decode_iteration_seconds(profile, jnp.broadcast_to(1.0 + r, jnp.shape(mean_ctx)), mean_ctx)


def step_seconds(profile: RoleProfile, context, cached, new_tokens, other_requests=0, other_context_tokens=0):
    """A reasoning step as in prada_jax.latency.step_seconds: prefill beyond `cached` (at least the last token),
    then new_tokens - 1 decode iterations at growing context."""
    m = jnp.asarray(context, jnp.float32)
    c = jnp.minimum(jnp.asarray(cached, jnp.float32), m - 1.0)
    n = jnp.maximum(jnp.asarray(new_tokens, jnp.float32), 1.0)
    return (prefill_extension_seconds(profile, m, c)
            + decode_tokens_seconds(profile, m + 1.0, n - 1.0, other_requests, other_context_tokens))
