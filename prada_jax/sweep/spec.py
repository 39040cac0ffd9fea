"""Sweep vocabulary and validation: system parameters, policy names, `SweepSpec` and `make_spec`.

`make_spec` turns flag values into a validated, immutable `SweepSpec` (everything that determines a sweep's
numbers) or raises `SweepConfigError` naming the first bad flag. Nothing here runs the simulator.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from prada_jax import constants as C
from prada_jax.data_paths import resolve_data_dir
from prada_jax.sim import registry
from prada_jax.sim.draws import arrival_rate_problem
from prada_jax.sim.latency_models import name_problem, storage_name
from prada_jax.traces import file_sha256

# The vocabulary lives in ONE registry, prada_jax.sim.registry (policies, table kinds, sweepable parameters);
# these names are live read-only views of it, kept for the code that imports them from here.
# SYSTEM_PARAMS: name -> (python type, default); POLICY_SPECS: name -> registry.Policy.
SYSTEM_PARAMS = registry.MappingView(registry.PARAMS, lambda p: (p.kind, p.default))
NO_SWEEP = "none"
GRID = "grid"  # sweep_param of the rows of a multi-parameter --grid sweep (one column per grid parameter)

PolicySpec = registry.Policy
POLICY_SPECS = registry.MappingView(registry.POLICIES)
POLICIES = registry.NamesView(registry.POLICIES)
# Policies whose table (or Stage-2 inputs) come from prada_jax.learn.tables.
LEARNED_POLICIES = registry.NamesView(registry.POLICIES, lambda p: p.learned)
RANDOM_POLICY_PROB = 0.5  # paper section 5.3: Stage 1 replaced by uniform sampling over {SLM, LLM}
DEFAULT_ROUTER_LLM_FRACTION = 0.5
DEFAULT_RSD_THRESHOLD = 0.7
DEFAULT_SLOT_MS = 1.0e3 * C.SLOT_SECONDS  # 1 ms: the paper's slot (Delta t)


class SweepConfigError(ValueError):
    """An invalid flag value. `flag` names the flag; str() reads '--flag: what is wrong'."""

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"--{flag}: {message}")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """Everything that determines a sweep's numbers. `params[name]` is None for every swept parameter.

    One swept parameter: `sweep_param` names it and `sweep_values` holds its values. Several (`--grid`):
    `sweep_param == GRID` and `grid_axes` holds ((name, values), ...); the grid is their Cartesian product, the
    first axis varying slowest. Nothing swept: `sweep_param == NO_SWEEP` (one grid point).
    """

    datasets: tuple[str, ...]
    policies: tuple[str, ...]
    sweep_param: str
    sweep_values: tuple[float, ...]
    params: dict[str, Any]  # SYSTEM_PARAMS values + "server_prefill"
    episodes: int
    horizon_ms: int
    warmup_ms: int
    max_users: int
    seed: int
    traces_dir: str
    ckpt_dir: str
    table_beta: float  # beta at which learned Stage-1 tables are trained/loaded
    drain_ms: int = 1000  # after the horizon: no arrivals, run until counted tasks finish or this long
    router_llm_fraction: float = DEFAULT_ROUTER_LLM_FRACTION
    rsd_threshold: float = DEFAULT_RSD_THRESHOLD
    grid_axes: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def axes(self) -> list[tuple[str, tuple[float, ...]]]:
        """The swept parameters and their values, in grid order (first varies slowest); [] when none."""
        if self.sweep_param == GRID:
            return [(name, tuple(values)) for name, values in self.grid_axes]
        if self.sweep_param == NO_SWEEP:
            return []
        return [(self.sweep_param, tuple(self.sweep_values))]

    @property
    def swept_params(self) -> list[str]:
        return [name for name, _ in self.axes()]
    latency_model: str = C.DEFAULT_LATENCY_MODEL  # SimConfig.latency_model (prada_jax/sim/latency_models.py)
    slot_ms: float = DEFAULT_SLOT_MS  # SimConfig.slot_seconds in ms; horizon/warm-up/drain are multiples of it

    def slots(self, milliseconds: int) -> int:
        """A length in ms (a multiple of slot_ms, checked by make_spec) as a number of slots."""
        return int(round(milliseconds / self.slot_ms))

    def arrival_rate_per_slot(self, per_ms: float) -> float:
        """--arrival_rate (Poisson tasks per ms) as SimParams.arrival_rate (tasks per slot of slot_ms)."""
        return per_ms * self.slot_ms

    @property
    def grid_size(self) -> int:
        return math.prod(len(values) for _, values in self.axes())

    def grid_points(self) -> list[dict[str, float]]:
        """{swept parameter: value} of each grid point, in grid order ([{}] when nothing is swept)."""
        axes = self.axes()
        return [dict(zip([n for n, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]

    def point_columns(self) -> tuple[str, ...]:
        """Result columns that identify a grid point within a (dataset, policy): 'sweep_value', or one column
        per parameter of a --grid sweep (docs/experiments.md, "Results")."""
        return tuple(self.swept_params) if self.sweep_param == GRID else ("sweep_value",)

    def point_keys(self) -> list[tuple]:
        """The point_columns() values of each grid point, in grid order (as stored in the rows)."""
        if self.sweep_param == NO_SWEEP:
            return [(None,)]
        return [tuple(float(v) for v in p.values()) for p in self.grid_points()]

    def points(self) -> list[tuple[str, str]]:
        """(dataset, policy) pairs in run order: dataset-major, policies in the given order."""
        return [(d, p) for d in self.datasets for p in self.policies]

    def grid(self) -> list[dict[str, Any]]:
        """One full parameter dict per grid point (base params with the swept value filled in)."""
        return [dict(self.params, **{k: registry.PARAMS[k].kind(v) for k, v in p.items()})
                for p in self.grid_points()]

    def trace_path(self, dataset: str) -> str:
        return os.path.join(self.traces_dir, f"{dataset}.npz")

    def to_config(self) -> dict[str, Any]:
        """JSON-able fingerprint of the sweep (compared on resume), including the trace files' SHA-256."""
        config = dataclasses.asdict(self)
        config["datasets"] = list(self.datasets)
        config["policies"] = list(self.policies)
        config["sweep_values"] = list(self.sweep_values)
        if self.grid_axes:
            config["grid_axes"] = [[name, list(values)] for name, values in self.grid_axes]
        else:
            del config["grid_axes"]  # the fingerprint of a one-parameter sweep is what it was before --grid
        if config["latency_model"] == C.DEFAULT_LATENCY_MODEL:
            del config["latency_model"]  # fingerprints of sweeps from before the choice existed stay valid
        if config["slot_ms"] == DEFAULT_SLOT_MS:
            del config["slot_ms"]  # recorded whenever it is not the 1 ms default (old fingerprints stay valid)
        config["trace_sha256"] = {d: file_sha256(self.trace_path(d)) for d in self.datasets}
        # The learned tables the sweep reads (a different table between a kill and a restart must not mix results).
        if any(registry.get_policy(p).learned for p in self.policies):
            config["table_sha256"] = {d: self.table_sha256(d) for d in self.datasets}
        return json.loads(json.dumps(config))

    def table_sha256(self, dataset: str) -> str | None:
        """SHA-256 of a dataset's learned table file (learned_table_paths); None while it is not trained."""
        path = learned_table_paths(self.ckpt_dir, dataset, self.latency_model)[0]
        return file_sha256(path) if os.path.exists(path) else None


def table_ckpt_dir(ckpt_dir: str, latency_model: str = C.DEFAULT_LATENCY_MODEL) -> str:
    """The folder of the learned tables trained under `latency_model`: <ckpt_dir> for the default "flops",
    <ckpt_dir>/<latency_model> otherwise (tables of different latency models never share a file)."""
    if latency_model == C.DEFAULT_LATENCY_MODEL:
        return ckpt_dir
    return os.path.join(ckpt_dir, storage_name(latency_model))  # "profile:<csv>" -> profile-<stem>-<content hash>


def learned_table_paths(ckpt_dir: str, dataset: str,
                        latency_model: str = C.DEFAULT_LATENCY_MODEL) -> tuple[str, str]:
    """(policy_table.npz, eval.json) that prada-train --latency_model=<latency_model> writes under
    table_ckpt_dir(ckpt_dir, latency_model)/<dataset>/."""
    base = os.path.join(table_ckpt_dir(ckpt_dir, latency_model), dataset)
    return os.path.join(base, "policy_table.npz"), os.path.join(base, "eval.json")


def _finite(flag: str, value: float) -> float:
    if not math.isfinite(value):
        raise SweepConfigError(flag, f"must be finite, got {value!r}")
    return value


def check_param(name: str, value: Any, flag: str | None = None) -> Any:
    """Validate one system-parameter value (the registry's type and check); the error names `flag` (default:
    the parameter's own flag)."""
    flag = flag or name
    try:
        return registry.get_param(name).validate(value)
    except (TypeError, ValueError) as err:
        raise SweepConfigError(flag, str(err)) from None


def parse_float_list(flag: str, items: Sequence[str]) -> tuple[float, ...]:
    values = []
    for item in items:
        item = item.strip()
        if not item:
            raise SweepConfigError(flag, "empty entry in the list")
        try:
            values.append(float(item))
        except ValueError as err:
            raise SweepConfigError(flag, f"{item!r} is not a number") from err
    return tuple(values)


def parse_grid(items: Sequence[str], flag: str = "grid") -> tuple[tuple[str, tuple[float, ...]], ...]:
    """Parse repeated `--grid=name=v1,v2,...` flags into ((name, values), ...) (syntax only; make_spec checks
    the names and values)."""
    axes = []
    for item in items:
        name, sep, values = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise SweepConfigError(flag, f"{item!r} is not name=v1,v2,... (e.g. --grid=server_capacity=1,3,9)")
        if not values.strip():
            raise SweepConfigError(flag, f"{name}: no values (e.g. --grid={name}=1,2)")
        axes.append((name, parse_float_list(flag, values.split(","))))
    return tuple(axes)


def available_datasets(traces_dir: str) -> list[str]:
    if not os.path.isdir(traces_dir):
        return []
    return sorted(f[:-4] for f in os.listdir(traces_dir) if f.endswith(".npz"))


def check_dataset_name(name: str) -> None:
    """A dataset is a plain name (the file <traces_dir>/<name>.npz, the folder <ckpt_dir>/<name>/): a path such as
    '../traces/gsm8k' is refused (a first-use training would write outside --ckpt_dir)."""
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in separators) or name in (".", "..") or name.startswith("."):
        raise SweepConfigError(
            "datasets", f"{name!r} is a path, not a dataset name: put <name>.npz into --traces_dir and pass <name>")


def simulator_value(name: str, value: Any, slot_ms: float = DEFAULT_SLOT_MS) -> Any:
    """A system parameter's value as the simulator holds it: SimParams leaves are float32 (server_capacity int32),
    and arrival_rate is passed per slot (x slot_ms; SweepSpec.arrival_rate_per_slot)."""
    import numpy as np

    if registry.get_param(name).kind is int:
        return int(value)
    value = float(value) * (slot_ms if name == "arrival_rate" else 1.0)
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float32(value))


def check_simulator_values(name: str, values: Sequence[Any], flag: str, slot_ms: float) -> None:
    """Refuse values the simulator's dtype cannot tell apart or hold: a value that overflows float32 or loses what
    its check needs (1e-50 -> 0.0 fails "> 0"), and distinct values that become one float32 number (two identical
    grid points: identical results under different labels)."""
    param = registry.get_param(name)
    seen: dict[Any, Any] = {}
    for value in values:
        held = simulator_value(name, value, slot_ms)
        if isinstance(held, int) and not -2**31 <= held < 2**31:
            raise SweepConfigError(flag, f"{name}={value!r} overflows int32, the simulator's dtype")
        if not math.isfinite(held):
            raise SweepConfigError(flag, f"{name}={value!r} overflows float32, the simulator's dtype")
        problem = param.check(held) if param.check is not None else None
        if problem:
            raise SweepConfigError(flag, f"{name}={value!r} is {held!r} in float32 (the simulator's dtype), "
                                         f"which {problem}")
        if held in seen and seen[held] != value:
            raise SweepConfigError(flag, f"{name}: {seen[held]!r} and {value!r} are the same number in float32 "
                                         "(the simulator's dtype): two identical grid points; drop one")
        seen[held] = value


def make_spec(
    *,
    datasets: Sequence[str],
    policies: Sequence[str],
    sweep_param: str = NO_SWEEP,
    sweep_values: Sequence[float] = (),
    grid: Sequence[tuple[str, Sequence[float]]] = (),
    params: dict[str, Any] | None = None,
    server_prefill: str = C.DEFAULT_SERVER_PREFILL,
    episodes: int,
    horizon_ms: int,
    warmup_ms: int,
    max_users: int,
    seed: int = 0,
    traces_dir: str = "traces",
    ckpt_dir: str = "checkpoints",
    table_beta: float | None = None,
    router_llm_fraction: float = DEFAULT_ROUTER_LLM_FRACTION,
    rsd_threshold: float = DEFAULT_RSD_THRESHOLD,
    drain_ms: int = 1000,
    latency_model: str = C.DEFAULT_LATENCY_MODEL,
    slot_ms: float = DEFAULT_SLOT_MS,
    explicitly_set: Iterable[str] = (),
    supported_policies: Sequence[str] = POLICIES,
) -> SweepSpec:
    """Validate everything and build a SweepSpec; raise SweepConfigError naming the first bad flag.

    `params` overrides the registered defaults (Table 3, prada_jax.constants). `grid` = ((name, values), ...)
    sweeps the Cartesian product of several parameters (--grid), instead of sweep_param/sweep_values; a single
    axis is the same sweep as --sweep_param. `explicitly_set` names flags the user gave on the command line:
    setting a swept parameter's own flag is an error (it would be ignored).
    """
    # The bare defaults "traces" / "checkpoints" fall back to the shipped copies when absent here (data_paths).
    traces_dir = resolve_data_dir(str(traces_dir), "traces")
    ckpt_dir = resolve_data_dir(str(ckpt_dir), "checkpoints")
    datasets = tuple(d.strip() for d in datasets)
    if not datasets:
        raise SweepConfigError("datasets", "no dataset given")
    if any(not d for d in datasets):
        raise SweepConfigError("datasets", "empty dataset name in the list")
    if len(set(datasets)) != len(datasets):
        raise SweepConfigError("datasets", f"duplicate dataset in {list(datasets)}")
    for d in datasets:
        check_dataset_name(d)
    if not os.path.isdir(traces_dir):
        what = "is not a folder" if os.path.exists(traces_dir) else "does not exist"
        raise SweepConfigError("traces_dir", f"{traces_dir} {what} (it holds the <dataset>.npz traces)")
    known = available_datasets(traces_dir)
    for d in datasets:
        if d not in known:
            raise SweepConfigError(
                "datasets",
                f"unknown dataset {d!r}: no trace {os.path.join(traces_dir, d + '.npz')} "
                f"(--traces_dir={traces_dir} holds {known or 'no .npz traces'})",
            )

    policies = tuple(p.strip() for p in policies)
    if not policies:
        raise SweepConfigError("policies", "no policy given")
    if len(set(policies)) != len(policies):
        raise SweepConfigError("policies", f"duplicate policy in {list(policies)}")
    for p in policies:
        if p not in registry.POLICIES:
            raise SweepConfigError("policies", f"unknown policy {p!r}; choose from {list(registry.POLICIES)}")

    if server_prefill not in C.SERVER_PREFILL_MODES:
        raise SweepConfigError("server_prefill", f"{server_prefill!r} is not one of {list(C.SERVER_PREFILL_MODES)}")
    full = {name: default for name, (_, default) in SYSTEM_PARAMS.items()}
    for name, value in (params or {}).items():
        if name not in SYSTEM_PARAMS:
            raise SweepConfigError(name, "is not a system parameter")
        full[name] = value
    for name in SYSTEM_PARAMS:
        full[name] = check_param(name, full[name])

    explicitly_set = set(explicitly_set)
    grid = tuple((str(name).strip(), tuple(values)) for name, values in grid)
    if grid and (sweep_param != NO_SWEEP or sweep_values):
        raise SweepConfigError("grid", "cannot be combined with --sweep_param/--sweep_values; use one or the other")
    seen = set()
    for name, _values in grid:
        if name not in SYSTEM_PARAMS:
            raise SweepConfigError("grid", f"unknown parameter {name!r}; choose from {list(SYSTEM_PARAMS)}")
        if name in seen:
            raise SweepConfigError("grid", f"parameter {name!r} given twice")
        seen.add(name)
    if len(grid) == 1:  # one axis: the same sweep as --sweep_param (same rows, figures and fingerprint)
        (sweep_param, sweep_values), grid, value_flag = grid[0], (), "grid"
    else:
        value_flag = "sweep_values"
    grid_axes: tuple = ()
    if grid:
        for name, values in grid:
            if not values:
                raise SweepConfigError("grid", f"{name}: no values")
            checked = tuple(check_param(name, v, flag="grid") for v in values)
            if len(set(checked)) != len(checked):
                raise SweepConfigError("grid", f"{name}: duplicate values in {list(checked)}")
            if name in explicitly_set:
                raise SweepConfigError(name, f"is set but --grid sweeps {name}; drop one of the two flags")
            full[name] = None
            grid_axes += ((name, tuple(float(v) for v in checked)),)
        sweep_param, values = GRID, ()
    elif sweep_param != NO_SWEEP:
        if sweep_param not in SYSTEM_PARAMS:
            raise SweepConfigError(
                "sweep_param", f"unknown parameter {sweep_param!r}; choose from {[NO_SWEEP, *SYSTEM_PARAMS]}"
            )
        if not sweep_values:
            raise SweepConfigError(value_flag, f"empty, but --sweep_param={sweep_param} needs values")
        values = tuple(check_param(sweep_param, v, flag=value_flag) for v in sweep_values)
        if len(set(values)) != len(values):
            raise SweepConfigError(value_flag, f"duplicate values in {list(values)}")
        if sweep_param in explicitly_set:
            how = "--grid" if value_flag == "grid" else f"--sweep_param={sweep_param}"
            raise SweepConfigError(sweep_param, f"is set but {how} sweeps it; drop one of the two flags")
        full[sweep_param] = None
    else:
        if sweep_values:
            raise SweepConfigError("sweep_values", f"given but --sweep_param={NO_SWEEP}")
        values = ()
    full["server_prefill"] = server_prefill

    if isinstance(slot_ms, bool) or not (math.isfinite(float(slot_ms)) and float(slot_ms) > 0):
        raise SweepConfigError("slot_ms", f"must be finite and > 0, got {slot_ms!r}")
    slot_ms = float(slot_ms)
    if episodes < 2:
        raise SweepConfigError("episodes", f"must be >= 2 (a 95% CI needs two episodes), got {episodes}")
    if horizon_ms < slot_ms:
        raise SweepConfigError("horizon_ms", f"must be >= one slot (--slot_ms={slot_ms:g}), got {horizon_ms}")
    if warmup_ms < 0:
        raise SweepConfigError("warmup_ms", f"must be >= 0, got {warmup_ms}")
    if warmup_ms >= horizon_ms:
        raise SweepConfigError("warmup_ms", f"must be < --horizon_ms ({horizon_ms}), got {warmup_ms}")
    if max_users < 1:
        raise SweepConfigError("max_users", f"must be >= 1, got {max_users}")
    if drain_ms < 0:
        raise SweepConfigError("drain_ms", f"must be >= 0, got {drain_ms}")
    for flag, value in (("horizon_ms", horizon_ms), ("warmup_ms", warmup_ms), ("drain_ms", drain_ms)):
        slots = value / slot_ms
        if not math.isclose(slots, round(slots), rel_tol=0.0, abs_tol=1e-9):
            raise SweepConfigError(flag, f"{value} ms is not a whole number of --slot_ms={slot_ms:g} slots")
    if C.seed_problem(seed):
        raise SweepConfigError("seed", C.seed_problem(seed))
    # What the simulator holds (float32, arrival_rate per slot) must still be valid and tell swept values apart.
    for name in SYSTEM_PARAMS:
        if full[name] is not None:
            check_simulator_values(name, [full[name]], name, slot_ms)
    if grid_axes:
        for name, axis_values in grid_axes:
            check_simulator_values(name, axis_values, "grid", slot_ms)
    elif sweep_param != NO_SWEEP:
        check_simulator_values(sweep_param, values, value_flag, slot_ms)
    rate_flag, rates = "arrival_rate", [full["arrival_rate"]]
    if full["arrival_rate"] is None:
        rate_flag = "grid" if grid_axes else value_flag
        rates = list(dict(grid_axes)["arrival_rate"]) if grid_axes else list(values)
    problem = arrival_rate_problem(max(rates) * slot_ms, max_users if max_users >= 1 else None)
    if problem:
        raise SweepConfigError(rate_flag, f"arrival_rate={max(rates):g} per ms = {problem}")
    if table_beta is None:
        # Learned tables follow --beta; a beta sweep keeps one Stage-1 table (trained at the Table-3 default).
        table_beta = full["beta"] if full["beta"] is not None else C.DEFAULT_BETA
    else:
        table_beta = check_param("beta", table_beta, flag="table_beta")
    for flag, value in (("router_llm_fraction", router_llm_fraction), ("rsd_threshold", rsd_threshold)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise SweepConfigError(flag, f"must lie in [0, 1], got {value!r}")
    problem = name_problem(latency_model)
    if problem:
        raise SweepConfigError("latency_model", problem)
    for p in policies:
        if p not in supported_policies:
            raise SweepConfigError(
                "policies", f"policy {p!r} cannot run in this build (see the warning above); runnable: {list(supported_policies)}"
            )
    swept = dict(grid_axes) if grid_axes else ({sweep_param: values} if sweep_param != NO_SWEEP else {})
    capacities = [int(c) for c in swept.get("server_capacity", [full["server_capacity"]])]
    if max(capacities) > max_users:
        flag = ("grid" if grid_axes else value_flag) if "server_capacity" in swept else "server_capacity"
        raise SweepConfigError(flag, f"server capacity M = {max(capacities)} exceeds --max_users={max_users} "
                                     "(at most max_users requests can ever be in flight)")
    return SweepSpec(
        datasets=datasets,
        policies=policies,
        sweep_param=sweep_param,
        sweep_values=tuple(float(v) for v in values),
        params=full,
        episodes=int(episodes),
        horizon_ms=int(horizon_ms),
        warmup_ms=int(warmup_ms),
        max_users=int(max_users),
        seed=int(seed),
        traces_dir=str(traces_dir),
        ckpt_dir=str(ckpt_dir),
        table_beta=float(table_beta),
        router_llm_fraction=float(router_llm_fraction),
        rsd_threshold=float(rsd_threshold),
        drain_ms=int(drain_ms),
        grid_axes=grid_axes,
        latency_model=str(latency_model),
        slot_ms=slot_ms,
    )
