"""Latency models of the slot simulator: how long a local SLM step, a server LLM step and an online PRM check take.

`SimConfig.latency_model` names one registered model (static: a recompile per model):

* "flops" (default): the paper's eqs. 14-18 (`prada_jax/costs.py`): FLOPs / `flops_slm` or `flops_llm`; every
  server slot gets the whole `flops_llm`, so the load of the server does not matter.
* "roofline": `prada_jax/latency.py` on the traced hardware leaves of SimParams (`server_*`, `edge_*`, filled from
  the presets of `prada_jax/hardware.py`), with the Qwen2.5-Math 1.5B (SLM, and the 1.5B online PRM) and 7B (LLM)
  architectures. A server step is the prefill of the uncached context (run alone on the device) plus the decode of
  the new tokens in batched decode iterations shared with the other requests in service (docs/latency.md,
  "Wiring into the simulator").

* "calibrated": the roofline formulas with, per device, the efficiencies and the per-pass overheads (decode and
  prefill apart) fitted to published measurements (prada_jax/calibration/published_latency.csv, fitted by
  `python -m prada_jax.calibration.fit_published` into published_fit.json). The device is the preset whose peaks
  the `server_*` / `edge_*` leaves hold; other peaks get the fitted fallback of their side. The leaves' own
  efficiencies multiply the fitted ones and their overheads add to them (defaults 1 and 0: the fit alone).
* "profile:<csv>": a measured profile (prada_jax/calibration/profile.py; experiments/measure_latency.py --profile
  writes one), interpolated. Resolved on first use, one model per file; the hardware leaves are ignored.

A model is registered once (`register`); adding a third one is one `LatencyModel` and one `register` call (plus its
float64 twin in tests/reference_sim.py: ORACLE_LATENCY_MODELS, checked name by name).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C
from prada_jax import costs, latency
from prada_jax.calibration import profile as prof
from prada_jax.calibration.published import load_fit
from prada_jax.hardware import HARDWARE_PRESETS, Hardware, hardware_preset
from prada_jax.latency import QWEN25_MATH_1_5B, QWEN25_MATH_7B, TransformerArch
from prada_jax.sim.errors import SimParamsError
from prada_jax.sim.named import Registry
from prada_jax.traces import reference_context

FLOPS, ROOFLINE, CALIBRATED = "flops", "roofline", "calibrated"
PROFILE_PREFIX = "profile:"

# Roofline architectures. The online PRM of RSD (Skywork-o1-Open-PRM-Qwen-2.5-1.5B) is a Qwen2.5-1.5B with a value
# head: the 1.5B shape is used (its LM head on the last token is a negligible over-count of a scalar head).
SLM_ARCH: TransformerArch = QWEN25_MATH_1_5B
LLM_ARCH: TransformerArch = QWEN25_MATH_7B
PRM_ARCH: TransformerArch = QWEN25_MATH_1_5B

# The roofline hardware of SimParams: leaves `{side}_{field}` for side "server" and "edge" (params.SimParams).
HARDWARE_FIELDS = ("peak_flops", "memory_bandwidth", "compute_efficiency", "bandwidth_efficiency", "overhead_s",
                   "bytes_per_param")


def hardware_leaves(side: str, hw: Hardware | str, bytes_per_param: float = 2.0) -> dict:
    """SimParams leaves `{side}_peak_flops`, ... of a Hardware (or a preset name) for side "server" or "edge":
    `make_params(**hardware_leaves("server", "l4"), **hardware_leaves("edge", "phone-snapdragon-8gen3"))`."""
    if side not in ("server", "edge"):
        raise SimParamsError(f"hardware_leaves: side must be 'server' or 'edge', got {side!r}")
    hw = hardware_preset(hw) if isinstance(hw, str) else hw
    values = (hw.peak_flops, hw.memory_bandwidth, hw.compute_efficiency, hw.bandwidth_efficiency,
              hw.overhead_seconds, bytes_per_param)
    return {f"{side}_{name}": value for name, value in zip(HARDWARE_FIELDS, values)}


def params_hardware(params, side: str) -> Hardware:
    """The traced Hardware of side "server" or "edge" of SimParams `params` (for prada_jax.latency)."""
    def get(name):
        return getattr(params, f"{side}_{name}")
    return Hardware(peak_flops=get("peak_flops"), memory_bandwidth=get("memory_bandwidth"),
                    compute_efficiency=get("compute_efficiency"), bandwidth_efficiency=get("bandwidth_efficiency"),
                    overhead_seconds=get("overhead_s"), name=side)


@struct.dataclass
class ServerLoad:
    """What a server request shares the server with, per user row [U] (valid on rows admitted this slot).

    other_requests: requests in service besides this one (holding a server slot: UPLOAD or SERVE, or admitted in
        the same slot); other_context_tokens: the sum of their contexts (tokens before their current step).
    """

    other_requests: jnp.ndarray  # float32 [U]
    other_context_tokens: jnp.ndarray  # float32 [U]


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    """local_step(context, slm_cached, new_tokens, params) -> seconds of an SLM step on the edge device;
    server_step(context, server_cached, new_tokens, params, load) -> seconds of an LLM step on the server;
    prm_check(context, draft_tokens, params, load) -> seconds of the online PRM scoring context + draft (RSD).
    All broadcast over [U] and are pure jnp (traced params)."""

    name: str
    local_step: Callable
    server_step: Callable
    prm_check: Callable
    description: str


class _LatencyRegistry(Registry):
    """The registry of latency models, which also resolves "profile:<csv>" names on first use (kept apart from
    the registered entries, so iterating it lists only the registered models)."""

    def __init__(self):
        super().__init__("latency model")
        self.profiles: dict[str, LatencyModel] = {}

    def __contains__(self, name) -> bool:
        if isinstance(name, str) and name.startswith(PROFILE_PREFIX):
            return self._profile(name) is not None  # a missing or malformed file raises its one-line error
        return dict.__contains__(self, name)

    def lookup(self, name: str) -> LatencyModel:
        if isinstance(name, str) and name.startswith(PROFILE_PREFIX):
            return self._profile(name)
        return super().lookup(name)

    def _profile(self, name: str) -> LatencyModel:
        if name not in self.profiles:
            self.profiles[name] = _profile_model(name)
        return self.profiles[name]


LATENCY_MODELS: _LatencyRegistry = _LatencyRegistry()


def register(model: LatencyModel) -> LatencyModel:
    return LATENCY_MODELS.add(model.name, model)


def get(name: str) -> LatencyModel:
    return LATENCY_MODELS.lookup(name)


def name_problem(name) -> str | None:
    """Why `name` is not a usable latency model (one line: an unknown name, or a missing or malformed profile file),
    or None."""
    try:
        if name in LATENCY_MODELS:
            return None
    except ValueError as e:
        return str(e)
    return f"{name!r} is not one of {sorted(LATENCY_MODELS)} or {PROFILE_PREFIX}<csv>"


def storage_name(name: str) -> str:
    """A folder name for the tables trained under latency model `name`: the name itself, or for a profile
    "profile-<file stem>-<8 hex digits of its content hash>" (tables of different profiles never share a folder)."""
    if name.startswith(PROFILE_PREFIX):
        path = name[len(PROFILE_PREFIX):]
        get(name)  # validates the file
        stem = os.path.splitext(os.path.basename(path))[0]
        return f"profile-{stem}-{prof.profile_fingerprint(path)}"
    return name


def server_load(in_service, context) -> ServerLoad:
    """ServerLoad of every row from the mask of requests in service [U] (after this slot's admissions)."""
    n = jnp.sum(in_service).astype(jnp.float32)
    ctx = jnp.sum(jnp.where(in_service, context, 0)).astype(jnp.float32)
    mine = in_service.astype(jnp.float32)
    return ServerLoad(other_requests=n - mine,
                      other_context_tokens=ctx - jnp.where(in_service, context, 0).astype(jnp.float32))


# ---- "flops": the paper (eqs. 14-18) ----

def _flops_local(context, slm_cached, new_tokens, params):
    return costs.local_step_seconds(context, slm_cached, new_tokens, params.flops_slm)


def _flops_server(context, server_cached, new_tokens, params, load):
    del load  # every server slot has the whole flops_llm
    return costs.server_step_seconds(context, server_cached, new_tokens, params.flops_llm, params.prefix_cache)


def _flops_prm(context, draft_tokens, params, load):
    del load
    return costs.prm_check_seconds(context, draft_tokens, params.flops_llm)


# ---- "roofline": prada_jax/latency.py on the traced hardware leaves ----

def _roofline_local(context, slm_cached, new_tokens, params):
    """Prefill of the tokens the SLM has not cached, then decode of the step at batch 1 on the edge device."""
    return latency.step_seconds(context, slm_cached, new_tokens, SLM_ARCH, params_hardware(params, "edge"),
                                bytes_per_param=params.edge_bytes_per_param)


def _roofline_server(context, server_cached, new_tokens, params, load):
    """Prefill of the uncached context alone on the server, then new_tokens - 1 decode iterations batched with
    `load.other_requests` requests (their contexts held fixed at admission)."""
    cached = jnp.where(params.prefix_cache, server_cached, 0)
    return latency.step_seconds(context, cached, new_tokens, LLM_ARCH, params_hardware(params, "server"),
                                load.other_requests, load.other_context_tokens,
                                bytes_per_param=params.server_bytes_per_param)


def _roofline_prm(context, draft_tokens, params, load):
    """One prefill of context + draft by the 1.5B PRM, alone on the server (prefills do not batch)."""
    del load
    total = jnp.asarray(context) + jnp.asarray(draft_tokens)
    return latency.prefill_seconds(total, 0, PRM_ARCH, params_hardware(params, "server"),
                                   bytes_per_param=params.server_bytes_per_param)


register(LatencyModel(FLOPS, _flops_local, _flops_server, _flops_prm,
                      "paper eqs. 14-18: FLOPs / flops_slm or flops_llm, each server slot at the full flops_llm"))
register(LatencyModel(ROOFLINE, _roofline_local, _roofline_server, _roofline_prm,
                      "roofline (prada_jax/latency.py) on the server_*/edge_* hardware leaves; batched server decode"))


# ---- "calibrated": the roofline with efficiencies and overheads fitted to published measurements ----

_CALIBRATION = None  # (device peaks [K, 2], fitted [K, 4], fallback {side: [4]}) from published_fit.json


def _calibration():
    global _CALIBRATION
    if _CALIBRATION is None:
        fit = load_fit()
        keys = ("bandwidth_efficiency", "compute_efficiency", "decode_overhead_s", "prefill_overhead_s")
        names = [n for n in HARDWARE_PRESETS if n in fit["devices"]]
        peaks = np.array([[HARDWARE_PRESETS[n].memory_bandwidth, HARDWARE_PRESETS[n].peak_flops] for n in names])
        fitted = np.array([[fit["devices"][n][k] for k in keys] for n in names])
        fallback = {side: np.array([fit["fallback"][side][k] for k in keys]) for side in ("server", "edge")}
        _CALIBRATION = (names, peaks, fitted, fallback)
    return _CALIBRATION


def calibrated_values(params, side: str):
    """(bandwidth efficiency, compute efficiency, decode overhead s, prefill overhead s) fitted for the device whose
    peaks the `side` leaves of `params` hold (relative tolerance 1e-4), else the side's fallback; traced."""
    names, peaks, fitted, fallback = _calibration()
    bw = jnp.asarray(getattr(params, f"{side}_memory_bandwidth"), jnp.float32)
    pf = jnp.asarray(getattr(params, f"{side}_peak_flops"), jnp.float32)
    values = [jnp.full(jnp.shape(bw), float(v), jnp.float32) for v in fallback[side]]
    for k in reversed(range(len(names))):
        match = (jnp.abs(bw / float(peaks[k, 0]) - 1.0) < 1e-4) & (jnp.abs(pf / float(peaks[k, 1]) - 1.0) < 1e-4)
        values = [jnp.where(match, float(fitted[k, j]), values[j]) for j in range(4)]
    return tuple(values)


def calibrated_hardware(params, side: str, phase: str):
    """The traced Hardware of `side` under the calibration, for `phase` "decode" or "prefill" (its overhead)."""
    eff_b, eff_c, ovh_d, ovh_p = calibrated_values(params, side)
    hw = params_hardware(params, side)
    return hw.replace(compute_efficiency=hw.compute_efficiency * eff_c,
                      bandwidth_efficiency=hw.bandwidth_efficiency * eff_b,
                      overhead_seconds=hw.overhead_seconds + (ovh_p if phase == "prefill" else ovh_d))


def _calibrated_step(context, cached, new_tokens, arch, params, side, bytes_per_param, other_requests=0,
                     other_context_tokens=0):
    """latency.step_seconds with the prefill pass on the prefill calibration and the decode passes on the
    decode one."""
    m = jnp.asarray(context, jnp.float32)
    c = jnp.minimum(jnp.asarray(cached, jnp.float32), m - 1.0)
    n = jnp.maximum(jnp.asarray(new_tokens, jnp.float32), 1.0)
    prefill = latency.prefill_seconds(m, c, arch, calibrated_hardware(params, side, "prefill"), bytes_per_param)
    decode = latency.decode_tokens_seconds(m + 1.0, n - 1.0, arch, calibrated_hardware(params, side, "decode"),
                                           other_requests, other_context_tokens, bytes_per_param)
    return prefill + decode


def _calibrated_local(context, slm_cached, new_tokens, params):
    return _calibrated_step(context, slm_cached, new_tokens, SLM_ARCH, params, "edge", params.edge_bytes_per_param)


def _calibrated_server(context, server_cached, new_tokens, params, load):
    cached = jnp.where(params.prefix_cache, server_cached, 0)
    return _calibrated_step(context, cached, new_tokens, LLM_ARCH, params, "server", params.server_bytes_per_param,
                            load.other_requests, load.other_context_tokens)


def _calibrated_prm(context, draft_tokens, params, load):
    del load
    total = jnp.asarray(context) + jnp.asarray(draft_tokens)
    return latency.prefill_seconds(total, 0, PRM_ARCH, calibrated_hardware(params, "server", "prefill"),
                                   bytes_per_param=params.server_bytes_per_param)


register(LatencyModel(CALIBRATED, _calibrated_local, _calibrated_server, _calibrated_prm,
                      "roofline with per-device efficiencies and decode/prefill overheads fitted to published "
                      "measurements (prada_jax/calibration/published_fit.json)"))


# ---- "profile:<csv>": a measured latency profile, interpolated ----

def _profile_model(name: str) -> LatencyModel:
    path = name[len(PROFILE_PREFIX):]
    roles = prof.load_profile(path)  # a missing or malformed file: one line naming it (ProfileError)
    server, edge = roles["server"], roles["edge"]
    prm = roles.get("prm")

    def local(context, slm_cached, new_tokens, params):
        del params
        return prof.step_seconds(edge, context, slm_cached, new_tokens)

    def server_step(context, server_cached, new_tokens, params, load):
        cached = jnp.where(params.prefix_cache, server_cached, 0)
        return prof.step_seconds(server, context, cached, new_tokens, load.other_requests, load.other_context_tokens)

    def prm_check(context, draft_tokens, params, load):
        del params, load
        total = jnp.asarray(context, jnp.float32) + jnp.asarray(draft_tokens, jnp.float32)
        return prof.prefill_seconds(prm if prm is not None else server, total)

    return LatencyModel(name, local, server_step, prm_check, f"measured profile {path}, interpolated")


# ---- batch-1 step times on the all-SLM reference path (the trace MDP's costs, D_psi) under a latency model ----

def reference_step_seconds(query_tokens, slm_step_tokens, llm_step_tokens, step_mask, params,
                           model: str = C.DEFAULT_LATENCY_MODEL):
    """(TS, TL) [N, K] seconds of every step under latency model `model` on the all-SLM reference context (query +
    earlier SLM steps, traces.reference_context), each request alone (batch 1), the server without a prefix cache
    (full prefill); TS includes the query prefill at k = 0. 0 on padding. The one definition behind the trace MDP's
    step costs (learn/mdp.py) and D_psi's target (reference_server_seconds)."""
    mask = jnp.asarray(step_mask)
    slm = jnp.asarray(slm_step_tokens)
    ctx = reference_context(jnp.asarray(query_tokens), slm)
    slm_cached = jnp.where(jnp.arange(slm.shape[1])[None, :] == 0, 0, ctx)
    alone = ServerLoad(other_requests=jnp.zeros(ctx.shape, jnp.float32),
                       other_context_tokens=jnp.zeros(ctx.shape, jnp.float32))
    latency_model = get(model)
    params = params.replace(prefix_cache=jnp.bool_(False))
    ts = latency_model.local_step(ctx, slm_cached, slm, params)
    tl = latency_model.server_step(ctx, 0, jnp.asarray(llm_step_tokens), params, alone)
    return jnp.where(mask, ts, 0.0).astype(jnp.float32), jnp.where(mask, tl, 0.0).astype(jnp.float32)


def reference_server_seconds(trace, params, model: str = C.DEFAULT_LATENCY_MODEL):
    """D_psi's target [N, K]: the TL of reference_step_seconds for a trace (TraceData or PackedTraces). PRADA's
    queueing-delay estimate (TQ) reads D_psi from the table, so a run under another latency model should use a
    table whose D_psi comes from that model (`with_reference_server_seconds`); the table builders store the
    "flops" one."""
    return reference_step_seconds(trace.query_tokens, trace.slm_step_tokens, trace.llm_step_tokens, trace.step_mask,
                                  params, model)[1]


def with_reference_server_seconds(table, trace, params, model: str = C.DEFAULT_LATENCY_MODEL):
    """`table` (a PolicyTable) with D_psi replaced by reference_server_seconds(trace, params, model)."""
    return table.replace(server_seconds=reference_server_seconds(trace, params, model))
