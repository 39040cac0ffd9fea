"""One registry of policies and sweepable system parameters (in the spirit of `gymnax.make`).

Everything that lists policies or swept parameters reads this module: the sweep (`prada_jax.sweep`: flags,
validation, runner), the benchmark (`prada-bench --policy`), the figures and the tests. Registering a policy or a
parameter here (or in your own module, imported before the CLI defines its flags) makes it available everywhere
(docs/extending.md). How figures draw them (labels, colours, markers, log axes) is the plotting layer's business:
`prada_jax.plots.register_policy_look` / `register_param_axis`, with defaults for names registered without one.

* A **policy** is a name for a (Stage-1 table kind, Stage-2 scheduler, Stage-1 sampling) triple plus how it is
  drawn: `register_policy("prada", table="learned", scheduler="prada", ...)`.
* A **table kind** builds the `PolicyTable` of a trace: `register_table("router", builder, learned=False)`, where
  `builder(trace, ctx: TableContext) -> PolicyTable`. `learned=True` kinds read the learned Stage-1 table
  (`ctx.learned()`), which the sweep trains on first use and the benchmark replaces by a PRM-gain stand-in.
* A **system parameter** is a traced leaf of `SimParams` a sweep may set or vary:
  `register_param("bandwidth_bps", float, C.DEFAULT_BANDWIDTH_BPS, "Total uplink bandwidth B.", unit="bit/s",
  check=positive)`; it becomes a flag of `prada-sweep` and a valid `--sweep_param` / `--grid` axis.

Registering a name twice is an error (`RegistryError`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from prada_jax import constants as C
from prada_jax.sim import policies as P
from prada_jax.sim import schedulers
from prada_jax.sim.named import Registry
from prada_jax.sim.params import _DEFAULT_HW, PARAM_FIELDS


class RegistryError(ValueError):
    """A name registered twice, or a registration that refers to something unknown."""


# ---------------------------------------------------------------------------------------------------------------
# Table kinds
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TableContext:
    """What a table builder may read besides the trace. `learned()` returns the learned Stage-1 table of the
    trace (the sweep loads / trains it; the benchmark passes a PRM-gain stand-in)."""

    flops_llm: float = C.FLOPS_LLM
    router_llm_fraction: float = 0.5
    rsd_threshold: float = 0.7
    random_prob: float = 0.5
    learned: Callable[[], Any] | None = None

    def learned_table(self):
        if self.learned is None:
            raise RegistryError("this table kind needs the learned Stage-1 table, and none was supplied")
        return self.learned()


@dataclasses.dataclass(frozen=True)
class TableKind:
    name: str
    build: Callable[[Any, TableContext], Any]  # (trace, ctx) -> PolicyTable
    learned: bool  # reads the learned Stage-1 table (trained on first use by the sweep)
    description: str = ""


TABLES: Registry[TableKind] = Registry("table kind", RegistryError)


def register_table(name: str, build: Callable, learned: bool = False, description: str = "") -> TableKind:
    """Register a Stage-1 table kind (once)."""
    return TABLES.add(name, TableKind(name, build, bool(learned), description))


register_table("learned", lambda trace, ctx: ctx.learned_table(), learned=True,
               description="the learned Stage-1 table pi_theta with A_omega / D_psi (prada_jax.learn)")
register_table("random", lambda trace, ctx: P.random_table(trace, ctx.random_prob, base=ctx.learned_table(),
                                                              flops_llm=ctx.flops_llm),
               learned=True, description="nominate with prob. 0.5; Stage-2 inputs from the learned table")
register_table("all_slm", lambda trace, ctx: P.all_slm_table(trace, flops_llm=ctx.flops_llm),
               description="nothing nominated")
register_table("all_llm", lambda trace, ctx: P.all_llm_table(trace, flops_llm=ctx.flops_llm),
               description="every step nominated")
register_table("router", lambda trace, ctx: P.router_table(trace, ctx.router_llm_fraction,
                                                              flops_llm=ctx.flops_llm),
               description="top router_llm_fraction tasks (by PRM gain) entirely on the LLM")
register_table("prm_threshold", lambda trace, ctx: P.prm_threshold_table(trace, ctx.rsd_threshold,
                                                                            flops_llm=ctx.flops_llm),
               description="nominate steps the PRM scores below rsd_threshold (RSD)")


def prm_gain_table(trace, flops_llm: float = C.FLOPS_LLM):
    """A checkpoint-free stand-in for the learned table (benchmark, tests): nominate (0.9) where the LLM's PRM
    gain is > 0, else 0.1; value gap = PRM gain. Same Stage-2 code path and inputs as a learned table."""
    gain = np.asarray(P.prm_gain(trace))
    nominate = np.where(trace.step_mask, np.where(gain > 0, 0.9, 0.1), 0.0)
    return P.table_from_value_gap(nominate, gain, P.flops_reference_server_seconds(trace, flops_llm))


# ---------------------------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a policy name maps onto the simulator."""

    name: str
    table: str  # a TABLES kind
    scheduler: str  # a prada_jax.sim.schedulers name (SimConfig.scheduler)
    stage1_sampling: bool = False  # SimConfig.stage1_sampling: nominate by sampling pi instead of pi >= 0.5
    description: str = ""

    @property
    def learned(self) -> bool:
        """Whether the policy reads the learned Stage-1 table (trained on first use by the sweep)."""
        return TABLES[self.table].learned

    def build_table(self, trace, ctx: TableContext):
        return TABLES[self.table].build(trace, ctx)


POLICIES: Registry[Policy] = Registry("policy", RegistryError)


def register_policy(name: str, *, table: str, scheduler: str, stage1_sampling: bool = False,
                    description: str = "") -> Policy:
    """Register a policy (once). Its table kind and scheduler must be registered already."""
    if name in POLICIES:
        raise RegistryError(f"policy {name!r} is already registered")  # before the checks of its parts
    if table not in TABLES:
        raise RegistryError(f"policy {name!r}: unknown table kind {table!r}; registered: {sorted(TABLES)}")
    if scheduler not in schedulers.SCHEDULERS:
        raise RegistryError(f"policy {name!r}: unknown scheduler {scheduler!r}; registered: {sorted(schedulers.SCHEDULERS)}")
    return POLICIES.add(name, Policy(name, table, scheduler, bool(stage1_sampling), description))


def get_policy(name: str) -> Policy:
    return POLICIES.lookup(name)


register_policy("all_slm", table="all_slm", scheduler="prada",
                description="every step on the SLM (nothing nominated)")
register_policy("all_llm", table="all_llm", scheduler="fifo",
                description="every step nominated; FIFO admission, no local fallback")
register_policy("pi_only", table="learned", scheduler="fifo",
                description="learned Stage 1 pi_theta, FIFO Stage 2 (no Theorem 2)")
register_policy("prada", table="learned", scheduler="prada",
                description="learned Stage 1 + Theorem-2 scheduler")
register_policy("prada_exact", table="learned", scheduler="prada_exact",
                description="learned Stage 1 + exact per-slot solver of problem (28) (beyond the paper)")
register_policy("learned", table="learned", scheduler="learned",
                description="learned Stage 1 + PPO-trained Stage-2 scheduler (docs/learned_scheduler.md)")
register_policy("random_policy", table="random", scheduler="prada", stage1_sampling=True,
                description="Stage 1 nominates with prob. 0.5; Theorem-2 scheduler with the learned A_omega / D_psi")
register_policy("random_scheduler", table="learned", scheduler="random",
                description="learned Stage 1, uniform random Stage 2")
register_policy("router", table="router", scheduler="fifo",
                description="task-level router: top --router_llm_fraction tasks on the LLM")
register_policy("rsd", table="prm_threshold", scheduler="rsd",
                description="reward-guided speculative decoding, online PRM check")


# ---------------------------------------------------------------------------------------------------------------
# Sweepable system parameters
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


# ---------------------------------------------------------------------------------------------------------------
# Live read-only views (old names that other code imports, always in step with the registry)
# ---------------------------------------------------------------------------------------------------------------


class MappingView(Mapping):
    """A read-only mapping over a registry dict, transformed per entry; `extra` entries are appended."""

    def __init__(self, source: Mapping, get: Callable[[Any], Any] = lambda e: e, extra: Mapping | None = None):
        self._source, self._get, self._extra = source, get, dict(extra or {})

    def __getitem__(self, key):
        if key in self._source:
            return self._get(self._source[key])
        return self._extra[key]

    def __iter__(self) -> Iterator:
        yield from self._source
        yield from (k for k in self._extra if k not in self._source)

    def __len__(self) -> int:
        return len(self._source) + len([k for k in self._extra if k not in self._source])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


class NamesView(Sequence):
    """A read-only, live sequence of the registered names that pass `keep`."""

    def __init__(self, source: Mapping, keep: Callable[[Any], bool] = lambda e: True):
        self._source, self._keep = source, keep

    def _names(self) -> tuple:
        return tuple(k for k, v in self._source.items() if self._keep(v))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, item) -> bool:
        return item in self._names()

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, Sequence)) else NotImplemented

    def __hash__(self):
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())
