"""Simulator parameters: `SimParams` (traced, sweepable pytree) and `SimConfig` (static, hashable).

Everything a sweep varies is a traced leaf of `SimParams`, so one compile serves a whole grid; shapes and
algorithm choices live in the frozen `SimConfig`, which is a static argument of `jit`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from prada_jax import constants as C
from prada_jax.sim.draws import ARRIVAL_TAIL_TOLERANCE, arrival_tail_mass, check_arrival_rate, required_max_arrivals
from prada_jax.sim.errors import SimParamsError  # noqa: F401 (the API's error type, also imported from here)
from prada_jax.sim.latency_models import (
    HARDWARE_FIELDS,
    hardware_leaves,
    name_problem,
    params_hardware,  # noqa: F401 (also imported from here)
)
from prada_jax.sim.named import Registry, RegistryError


@struct.dataclass
class SimParams:
    """Traced system parameters (leaves are scalars, or [G] on a grid)."""

    bandwidth_bps: jnp.ndarray  # float32, total uplink bandwidth B (bit/s)
    server_capacity: jnp.ndarray  # int32, M concurrent LLM requests (<= config.max_servers)
    arrival_rate: jnp.ndarray  # float32, lambda, Poisson arrivals per slot
    beta: jnp.ndarray  # float32, PRM units per second
    snr_db: jnp.ndarray  # float32, mean SNR at the median distance
    snr_threshold_db: jnp.ndarray  # float32, gamma_th: upload infeasible below it
    path_loss_exponent: jnp.ndarray  # float32
    flops_slm: jnp.ndarray  # float32, FLOP/s of each edge device
    flops_llm: jnp.ndarray  # float32, FLOP/s of the server
    prefix_cache: jnp.ndarray  # bool, server keeps a prefix KV cache ("prefix" mode) instead of full prefill
    # Roofline hardware (read only by SimConfig.latency_model="roofline"; docs/latency.md). Defaults: the
    # C.DEFAULT_SERVER_HARDWARE / C.DEFAULT_EDGE_HARDWARE presets of prada_jax/hardware.py (`hardware_leaves`).
    server_peak_flops: jnp.ndarray  # float32, dense 16-bit FLOP/s of the server accelerator
    server_memory_bandwidth: jnp.ndarray  # float32, bytes/s (HBM)
    server_compute_efficiency: jnp.ndarray  # float32, achieved / peak FLOP/s
    server_bandwidth_efficiency: jnp.ndarray  # float32, achieved / peak bytes/s
    server_overhead_s: jnp.ndarray  # float32, seconds per forward pass (launch + dispatch)
    server_bytes_per_param: jnp.ndarray  # float32, weight bytes per parameter (2 = bf16; KV cache stays bf16)
    edge_peak_flops: jnp.ndarray  # float32, the same for each user's edge device (SLM)
    edge_memory_bandwidth: jnp.ndarray
    edge_compute_efficiency: jnp.ndarray
    edge_bandwidth_efficiency: jnp.ndarray
    edge_overhead_s: jnp.ndarray
    edge_bytes_per_param: jnp.ndarray


_FLOAT_FIELDS = (
    "bandwidth_bps",
    "arrival_rate",
    "beta",
    "snr_db",
    "snr_threshold_db",
    "path_loss_exponent",
    "flops_slm",
    "flops_llm",
)
_FLOAT_FIELDS = _FLOAT_FIELDS + tuple(f"{side}_{h}" for side in ("server", "edge") for h in HARDWARE_FIELDS)
PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(SimParams))


_DEFAULT_HW = {**hardware_leaves("server", C.DEFAULT_SERVER_HARDWARE), **hardware_leaves("edge", C.DEFAULT_EDGE_HARDWARE)}


# ---------------------------------------------------------------------------------------------------------------
# Sweepable system parameters: one rule per SimParams leaf, the one `check_leaf` (make_params, validate_params) and
# the sweep's flag of the same name apply. prada_jax.sim.registry re-exports them with the policies.
# ---------------------------------------------------------------------------------------------------------------


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be >= 1"


@dataclasses.dataclass(frozen=True)
class Param:
    """A sweepable system parameter: a traced `SimParams` leaf of the same name."""

    name: str
    kind: type  # int or float
    default: float
    help: str  # flag help text
    unit: str = ""
    check: Callable[[Any], str | None] | None = None  # value -> None, or what is wrong ("must be > 0")

    def validate(self, value: Any) -> Any:
        """The value converted to `kind`, or ValueError saying what is wrong (no flag name)."""
        if isinstance(value, bool):
            raise ValueError(f"{self.name} must be a number, got {value!r}")
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"{self.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"must be finite, got {value!r}")
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise ValueError(f"{self.name} {problem}, got {value!r}")
        return value


PARAMS: Registry[Param] = Registry("system parameter", RegistryError)


def register_param(name: str, kind: type, default: float, help: str, *, unit: str = "",
                   check: Callable[[Any], str | None] | None = None) -> Param:
    """Register a sweepable system parameter (once); `name` must be a `SimParams` field."""
    if name in PARAMS:
        raise RegistryError(f"system parameter {name!r} is already registered")
    if name not in PARAM_FIELDS:
        raise RegistryError(f"system parameter {name!r} is not a SimParams field ({list(PARAM_FIELDS)})")
    if kind not in (int, float):
        raise RegistryError(f"system parameter {name!r}: kind must be int or float, got {kind!r}")
    param = Param(name, kind, kind(default), help, unit, check)
    param.validate(param.default)  # a default that fails its own check is a registration bug
    return PARAMS.add(name, param)


def get_param(name: str) -> Param:
    return PARAMS.lookup(name)


register_param("bandwidth_bps", float, C.DEFAULT_BANDWIDTH_BPS, "Total uplink bandwidth B (bit/s).", unit="bit/s",
               check=positive)
register_param("server_capacity", int, C.DEFAULT_SERVER_CAPACITY, "Server parallel capacity M.",
               unit="requests", check=at_least_one)
register_param("arrival_rate", float, C.DEFAULT_ARRIVAL_RATE,
               "Poisson arrivals per ms (lambda; the sweep passes lambda x --slot_ms per slot to SimParams).",
               unit="tasks/ms", check=non_negative)
register_param("beta", float, C.DEFAULT_BETA, "Trade-off weight beta (PRM units per second).", unit="1/s",
               check=non_negative)
register_param("snr_db", float, C.DEFAULT_SNR_DB, "Mean SNR (dB) at the median user distance.", unit="dB")
register_param("snr_threshold_db", float, C.DEFAULT_SNR_THRESHOLD_DB, "gamma_th (dB): no upload below it.",
               unit="dB")
register_param("path_loss_exponent", float, C.DEFAULT_PATH_LOSS_EXPONENT, "Path-loss exponent.",
               check=non_negative)
register_param("flops_slm", float, C.FLOPS_SLM, "FLOP/s of each user's SLM.", unit="FLOP/s", check=positive)
register_param("flops_llm", float, C.FLOPS_LLM, "FLOP/s of the server LLM.", unit="FLOP/s", check=positive)


def fraction(value) -> str | None:
    return None if 0.0 < float(value) <= 1.0 else "must be in (0, 1]"


# The roofline latency model's hardware (--latency_model=roofline; unused by the default flops model): one set for
# the server accelerator, one for each user's edge device. Defaults: C.DEFAULT_SERVER_HARDWARE / DEFAULT_EDGE_HARDWARE.
for _side, _what in (("server", "server accelerator"), ("edge", "edge device")):
    _hw = _DEFAULT_HW  # the presets' values (prada_jax/hardware.py)
    register_param(f"{_side}_peak_flops", float, _hw[f"{_side}_peak_flops"],
                   f"Roofline: dense 16-bit peak FLOP/s of the {_what}.", unit="FLOP/s", check=positive)
    register_param(f"{_side}_memory_bandwidth", float, _hw[f"{_side}_memory_bandwidth"],
                   f"Roofline: memory bandwidth of the {_what}.", unit="bytes/s", check=positive)
    register_param(f"{_side}_compute_efficiency", float, _hw[f"{_side}_compute_efficiency"],
                   f"Roofline: achieved / peak FLOP/s of the {_what}.", check=fraction)
    register_param(f"{_side}_bandwidth_efficiency", float, _hw[f"{_side}_bandwidth_efficiency"],
                   f"Roofline: achieved / peak memory bandwidth of the {_what}.", check=fraction)
    register_param(f"{_side}_overhead_s", float, _hw[f"{_side}_overhead_s"],
                   f"Roofline: fixed seconds per forward pass on the {_what}.", unit="s", check=non_negative)
    register_param(f"{_side}_bytes_per_param", float, _hw[f"{_side}_bytes_per_param"],
                   f"Roofline: weight bytes per parameter on the {_what} (2 = bf16).", unit="bytes",
                   check=positive)


def make_params(
    bandwidth_bps=C.DEFAULT_BANDWIDTH_BPS,
    server_capacity=C.DEFAULT_SERVER_CAPACITY,
    arrival_rate=C.DEFAULT_ARRIVAL_RATE,
    beta=C.DEFAULT_BETA,
    snr_db=C.DEFAULT_SNR_DB,
    snr_threshold_db=C.DEFAULT_SNR_THRESHOLD_DB,
    path_loss_exponent=C.DEFAULT_PATH_LOSS_EXPONENT,
    flops_slm=C.FLOPS_SLM,
    flops_llm=C.FLOPS_LLM,
    prefix_cache=C.DEFAULT_SERVER_PREFILL == "prefix",
    server_peak_flops=_DEFAULT_HW["server_peak_flops"],
    server_memory_bandwidth=_DEFAULT_HW["server_memory_bandwidth"],
    server_compute_efficiency=_DEFAULT_HW["server_compute_efficiency"],
    server_bandwidth_efficiency=_DEFAULT_HW["server_bandwidth_efficiency"],
    server_overhead_s=_DEFAULT_HW["server_overhead_s"],
    server_bytes_per_param=_DEFAULT_HW["server_bytes_per_param"],
    edge_peak_flops=_DEFAULT_HW["edge_peak_flops"],
    edge_memory_bandwidth=_DEFAULT_HW["edge_memory_bandwidth"],
    edge_compute_efficiency=_DEFAULT_HW["edge_compute_efficiency"],
    edge_bandwidth_efficiency=_DEFAULT_HW["edge_bandwidth_efficiency"],
    edge_overhead_s=_DEFAULT_HW["edge_overhead_s"],
    edge_bytes_per_param=_DEFAULT_HW["edge_bytes_per_param"],
) -> SimParams:
    """Build `SimParams` with the right dtypes (defaults from constants.py). Leaves may be scalars or [G].

    Concrete values are checked first (`check_leaf`: the registry's rule per parameter, the same the CLI applies):
    a value that is not a number, a non-integer server_capacity (never truncated), a non-finite or out-of-range
    value, or one float32 cannot hold raises SimParamsError naming the parameter. Traced values (inside jit) are
    taken as they are."""
    values = dict(locals())
    for name in PARAM_FIELDS:
        if not isinstance(values[name], jax.core.Tracer):
            values[name] = check_leaf(name, values[name])
    out = {name: jnp.asarray(values[name], jnp.float32) for name in _FLOAT_FIELDS}
    out["server_capacity"] = jnp.asarray(values["server_capacity"], jnp.int32)
    out["prefix_cache"] = jnp.asarray(values["prefix_cache"], bool)
    return SimParams(**out)


def flops_params(flops_slm=C.FLOPS_SLM, flops_llm=C.FLOPS_LLM) -> SimParams:
    """make_params() with the "flops" latency model's two rates replaced (they may be traced)."""
    return make_params().replace(flops_slm=jnp.asarray(flops_slm, jnp.float32),
                                 flops_llm=jnp.asarray(flops_llm, jnp.float32))


def _shown(value, limit: int = 60) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_leaf(name: str, value) -> np.ndarray:
    """The value(s) of SimParams leaf `name` (a scalar or a 1-D grid [G]) as a checked NumPy array, or
    SimParamsError naming the parameter and the value.

    One rule per parameter, its registration's (PARAMS: the check the CLI's flag of the same name runs): numbers only (no strings, no bools for numbers), integers that are integers (server_capacity=2.7 is
    refused, not truncated), finite, the registered range; and the value as the simulator holds it (float32,
    int32) must still pass (1e-50 is 0.0 in float32, 1e39 is inf)."""
    where = f"SimParams.{name}"
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - ragged lists, objects numpy cannot hold
        raise SimParamsError(f"{where} must be a number or a 1-D list of numbers, got {_shown(value)} ({err})") from None
    if arr.ndim > 1:
        raise SimParamsError(f"{where} must be a scalar or a 1-D grid [G], got shape {arr.shape}")
    if arr.size == 0:
        raise SimParamsError(f"{where} is empty: give at least one value")
    if name == "prefix_cache":
        if arr.dtype == bool:
            return arr
        if np.issubdtype(arr.dtype, np.number) and np.all((arr == 0) | (arr == 1)):
            return arr.astype(bool)
        raise SimParamsError(f"{where} must be True or False, got {_shown(value)}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SimParamsError(f"{where} must be a number (or a 1-D list of numbers), got {_shown(value)}")
    param = PARAMS.get(name)
    if param is None:
        return arr
    if param.kind is int:
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(arr) & (arr == np.round(arr)) if np.issubdtype(arr.dtype, np.floating) else True
        if not np.all(integral):
            bad = arr.reshape(-1)[np.argmin(np.reshape(integral, -1))]
            raise SimParamsError(f"{where} must be an integer, got {_shown(bad.item())} (never truncated)")
        if np.any((arr < -2**31) | (arr >= 2**31)):
            raise SimParamsError(f"{where} overflows int32, the simulator's dtype; got {_shown(value)}")
        held = arr.astype(np.int64)
    else:
        with np.errstate(over="ignore", under="ignore"):
            held = arr.astype(np.float32)
        for raw, small in zip(np.reshape(arr, -1), np.reshape(held, -1)):
            if np.isfinite(raw) and not np.isfinite(small):
                raise SimParamsError(f"{where}={raw.item()!r} overflows float32, the simulator's dtype")
    # The values as given and as the simulator holds them: -1e-52 is -0.0 in float32, which a ">= 0" rule accepts.
    for v in [*np.unique(arr.reshape(-1)), *np.unique(held.reshape(-1))]:
        try:
            param.validate(v.item())
        except (TypeError, ValueError) as err:
            problem = str(err)
            problem = problem[len(name) + 1:] if problem.startswith(name + " ") else problem
            raise SimParamsError(f"{where} {problem}" + ("" if np.isin(v, arr) else
                                 f" (in float32, the simulator's dtype; given {_shown(value)})")) from None
    return arr


def param_grid(base: SimParams | None = None, **axes: Sequence) -> SimParams:
    """Cartesian product of swept values: `param_grid(bandwidth_bps=[1e6, 4e7], server_capacity=[3, 9])`.

    Leaves of the result have a leading grid axis [G] (first axis varies slowest). Unswept fields come
    from `base` (defaults if None).
    """
    base = make_params() if base is None else base
    if not isinstance(base, SimParams):
        raise SimParamsError(f"param_grid: base must be SimParams (make_params(...)), got {type(base).__name__}")
    if np.ndim(base.bandwidth_bps) != 0:
        raise SimParamsError("param_grid: base must hold scalar leaves (one point), not a grid")
    unknown = set(axes) - set(PARAM_FIELDS)
    if unknown:
        raise SimParamsError(f"unknown SimParams fields {sorted(unknown)}; known: {PARAM_FIELDS}")
    names = list(axes)
    checked = {}
    for n in names:
        if isinstance(axes[n], (str, bytes)) or np.ndim(axes[n]) != 1:
            raise SimParamsError(f"param_grid: {n} must be a 1-D list of values, got {_shown(axes[n])}")
        checked[n] = check_leaf(n, axes[n])
    combos = list(itertools.product(*[list(checked[n].reshape(-1)) for n in names])) or [()]
    columns = {}
    for name in PARAM_FIELDS:
        if name in axes:
            columns[name] = [c[names.index(name)] for c in combos]
        else:
            columns[name] = [np.asarray(getattr(base, name))] * len(combos)
    return make_params(**{name: np.stack([np.asarray(v) for v in vals]) for name, vals in columns.items()})


def stack_params(points: Sequence[SimParams]) -> SimParams:
    """Stack scalar `SimParams` into a grid with leading axis [G]."""
    if not points:
        raise SimParamsError("stack_params needs at least one point")
    return make_params(**{n: np.stack([np.asarray(getattr(p, n)) for p in points]) for n in PARAM_FIELDS})


def grid_size(params: SimParams) -> int:
    """G for a grid (leaves [G]); 1 for scalar params."""
    shape = np.shape(params.bandwidth_bps)
    return int(shape[0]) if shape else 1


# The Stage-2 schedulers by name, what SimConfig.scheduler names (entries: prada_jax.sim.schedulers.Scheduler). Here
# so that SimConfig checks a name without importing the schedulers, which read SimConfig; filled by
# prada_jax.sim.schedulers.register, which the package prada_jax.sim imports, so the built-in schedulers are
# registered before any code outside the package builds a SimConfig.
SCHEDULERS: Registry = Registry("scheduler")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Static simulator configuration (shapes, horizon, algorithm). Hashable: a `jit` static argument."""

    num_slots: int = 2000  # arrivals happen in slots [0, num_slots) (the horizon)
    warmup_slots: int = 200
    drain_slots: int = 1000  # after the horizon: no arrivals, run until counted tasks finish or this many slots
    max_users: int = 128  # U: concurrent user slots
    max_servers: int = 16  # static upper bound on SimParams.server_capacity
    max_arrivals_per_slot: int | None = None  # A_max; None: the smallest with P(N > A_max) <= 1e-9 (resolved)
    # C: Stage 2 considers at most C candidates per slot (oldest first). None (default): exact, the smallest cap of
    # a ladder of compiled sizes (16, 32, ..., U) under which the episode never overflows (run.simulate_grid).
    # An int: that fixed cap; a slot with more candidates leaves the youngest out (counted, metrics.per_episode).
    max_candidates: int | None = None
    candidate_cap_start: int = C.CANDIDATE_LADDER_START  # first cap of the exact ladder (then doubled, then U)
    scheduler: str = "prada"
    stage1_sampling: bool = False  # False: nominate iff pi(1|x) > 0.5; True: nominate iff u < pi(1|x)
    queue_pays_price: bool = True  # w_bar = beta TQ (queued requests pay the bandwidth price later); False: eq. 32
    tq_iterations: int = C.TQ_ITERATIONS  # static re-rankings of the TQ priority order (docs/simulator.md)
    price_segment_halvings: int = 6  # log-halvings of the final breakpoint segment (competitive case)
    slot_seconds: float = C.SLOT_SECONDS  # Delta t (s); arrival_rate, drain_slots and all *_slots count these slots
    latency_model: str = C.DEFAULT_LATENCY_MODEL  # a registered name (prada_jax/sim/latency_models.py)

    def __post_init__(self):
        ints = ("num_slots", "max_users", "max_servers", "tq_iterations", "candidate_cap_start")
        ints += tuple(name for name in ("max_arrivals_per_slot", "max_candidates") if getattr(self, name) is not None)
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SimParamsError(f"SimConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_slots, (int, np.integer)) or not 0 <= self.warmup_slots < self.num_slots:
            raise SimParamsError(
                f"SimConfig.warmup_slots must be in [0, num_slots={self.num_slots}), got {self.warmup_slots!r}"
            )
        if not isinstance(self.drain_slots, (int, np.integer)) or self.drain_slots < 0:
            raise SimParamsError(f"SimConfig.drain_slots must be an integer >= 0, got {self.drain_slots!r}")
        if self.scheduler not in SCHEDULERS:
            raise SimParamsError(f"SimConfig.scheduler {self.scheduler!r} is not one of {sorted(SCHEDULERS)}")
        if not isinstance(self.price_segment_halvings, (int, np.integer)) or self.price_segment_halvings < 0:
            raise SimParamsError(f"SimConfig.price_segment_halvings must be an integer >= 0, got {self.price_segment_halvings!r}")
        if (isinstance(self.slot_seconds, bool) or not isinstance(self.slot_seconds, (int, float, np.integer, np.floating))
                or not (np.isfinite(self.slot_seconds) and self.slot_seconds > 0)):
            raise SimParamsError(f"SimConfig.slot_seconds must be a finite number > 0 (seconds), got {self.slot_seconds!r}")
        problem = name_problem(self.latency_model)
        if problem:
            raise SimParamsError(f"SimConfig.latency_model: {problem}")
        if self.max_candidates is not None and self.max_candidates > self.max_users:
            object.__setattr__(self, "max_candidates", int(self.max_users))


def validate_params(params: SimParams, config: SimConfig) -> SimParams:
    """Check concrete parameter values (scalar or grid) against the registry's rules (`check_leaf`, the CLI's
    checks) and `config`; raise SimParamsError naming the parameter and the value."""
    if not isinstance(params, SimParams):
        raise SimParamsError(f"params must be SimParams (make_params / param_grid), got {type(params).__name__}")
    if not isinstance(config, SimConfig):
        raise SimParamsError(f"config must be a SimConfig, got {type(config).__name__}")

    def arr(name):
        return np.asarray(getattr(params, name))

    for name in PARAM_FIELDS:
        if isinstance(getattr(params, name), jax.core.Tracer):
            raise SimParamsError(f"SimParams.{name} is traced: validate_params needs concrete values")
        check_leaf(name, arr(name))
    shapes = {np.shape(arr(n)) for n in PARAM_FIELDS}
    if len(shapes) != 1 or len(next(iter(shapes))) > 1:
        raise SimParamsError(f"SimParams leaves must all be scalars or all [G]; got shapes {shapes}")
    m = arr("server_capacity")
    if np.any(m > config.max_servers):
        raise SimParamsError(
            f"SimParams.server_capacity (M) = {m} exceeds SimConfig.max_servers = {config.max_servers}; "
            "raise max_servers"
        )
    check_arrival_rate(arr("arrival_rate"), config.max_users)
    if config.max_arrivals_per_slot is not None:
        tail = arrival_tail_mass(arr("arrival_rate"), config.max_arrivals_per_slot)
        if tail > ARRIVAL_TAIL_TOLERANCE:
            need = required_max_arrivals(arr("arrival_rate"))
            raise SimParamsError(
                f"SimConfig.max_arrivals_per_slot={config.max_arrivals_per_slot} is too small for arrival_rate "
                f"{np.max(arr('arrival_rate')):g}: P(more arrivals in a slot) = {tail:.2g}; use >= {need} "
                "(or None: chosen automatically)"
            )
    return params


def resolve_config(params: SimParams, config: SimConfig) -> SimConfig:
    """`config` with max_arrivals_per_slot chosen for the largest arrival rate in `params` when it is None."""
    if config.max_arrivals_per_slot is not None:
        return config
    return dataclasses.replace(config, max_arrivals_per_slot=required_max_arrivals(np.asarray(params.arrival_rate)))


def params_from_mapping(values: Mapping) -> SimParams:
    """`make_params(**values)` that names unknown keys instead of a TypeError."""
    unknown = set(values) - set(PARAM_FIELDS)
    if unknown:
        raise SimParamsError(f"unknown SimParams fields {sorted(unknown)}; known: {PARAM_FIELDS}")
    return make_params(**values)
