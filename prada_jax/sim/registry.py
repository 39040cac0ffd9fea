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
  check=positive)`; it becomes a flag of `prada-sweep` and a valid `--sweep_param` / `--grid` axis. Its check is
  the one `make_params` applies, so `PARAMS`, `register_param` and the built-in parameters live in
  prada_jax/sim/params.py; this module re-exports them.

Registering a name twice is an error (`RegistryError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from prada_jax import constants as C
from prada_jax.sim import policies as P
from prada_jax.sim import schedulers
from prada_jax.sim.named import Registry, RegistryError
from prada_jax.sim.params import (  # noqa: F401  (the system parameters' registry, kept in params.py for check_leaf)
    PARAMS,
    Param,
    at_least_one,
    fraction,
    get_param,
    non_negative,
    positive,
    register_param,
)

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
