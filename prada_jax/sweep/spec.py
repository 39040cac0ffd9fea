"""Sweep vocabulary and validation: system parameters, policy names, `SweepSpec` and `make_spec`.

`make_spec` turns flag values into a validated, immutable `SweepSpec` (everything that determines a sweep's
numbers) or raises `SweepConfigError` naming the first bad flag. Nothing here runs the simulator.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable, Sequence

from prada_jax import constants as C
from prada_jax.data_paths import resolve_data_dir
from prada_jax.traces import file_sha256

# System parameters (SimParams leaves) that flags set and a sweep may vary: name -> (python type, default).
SYSTEM_PARAMS: dict[str, tuple[type, float]] = {
    "bandwidth_bps": (float, C.DEFAULT_BANDWIDTH_BPS),
    "server_capacity": (int, C.DEFAULT_SERVER_CAPACITY),
    "arrival_rate": (float, C.DEFAULT_ARRIVAL_RATE),
    "beta": (float, C.DEFAULT_BETA),
    "snr_db": (float, C.DEFAULT_SNR_DB),
    "snr_threshold_db": (float, C.DEFAULT_SNR_THRESHOLD_DB),
    "path_loss_exponent": (float, C.DEFAULT_PATH_LOSS_EXPONENT),
    "flops_slm": (float, C.FLOPS_SLM),
    "flops_llm": (float, C.FLOPS_LLM),
}
NO_SWEEP = "none"


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """How a policy name maps onto the simulator: Stage-1 table source, Stage-2 scheduler, nomination mode."""

    table: str  # "learned" | "all_slm" | "all_llm" | "random" | "router" | "prm_threshold"
    scheduler: str  # SimConfig.scheduler
    stage1_sampling: bool = False
    description: str = ""


POLICY_SPECS: dict[str, PolicySpec] = {
    "all_slm": PolicySpec("all_slm", "prada", description="every step on the SLM (nothing nominated)"),
    "all_llm": PolicySpec("all_llm", "fifo", description="every step nominated; FIFO admission, no local fallback"),
    "pi_only": PolicySpec("learned", "fifo", description="learned Stage 1 pi_theta, FIFO Stage 2 (no Theorem 2)"),
    "prada": PolicySpec("learned", "prada", description="learned Stage 1 + Theorem-2 scheduler"),
    "prada_exact": PolicySpec(
        "learned", "prada_exact",
        description="learned Stage 1 + exact per-slot solver of problem (28) (beyond the paper, issue 15)"),
    "random_policy": PolicySpec(
        "random", "prada", stage1_sampling=True,
        description="Stage 1 nominates with prob. 0.5; Theorem-2 scheduler with the learned A_omega / D_psi",
    ),
    "random_scheduler": PolicySpec("learned", "random", description="learned Stage 1, uniform random Stage 2"),
    "router": PolicySpec("router", "fifo", description="task-level router: top --router_llm_fraction tasks on the LLM"),
    "rsd": PolicySpec("prm_threshold", "rsd", description="reward-guided speculative decoding, online PRM check"),
}
POLICIES = tuple(POLICY_SPECS)
# Policies whose table (or Stage-2 inputs) come from prada_jax.learn.tables.
LEARNED_POLICIES = tuple(name for name, p in POLICY_SPECS.items() if p.table in ("learned", "random"))
RANDOM_POLICY_PROB = 0.5  # paper section 5.3: Stage 1 replaced by uniform sampling over {SLM, LLM}
DEFAULT_ROUTER_LLM_FRACTION = 0.5
DEFAULT_RSD_THRESHOLD = 0.7


class SweepConfigError(ValueError):
    """An invalid flag value. `flag` names the flag; str() reads '--flag: what is wrong'."""

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"--{flag}: {message}")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """Everything that determines a sweep's numbers. `params[sweep_param]` is None (the sweep supplies it)."""

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
    latency_model: str = C.DEFAULT_LATENCY_MODEL  # SimConfig.latency_model (prada_jax/sim/latency_models.py)

    @property
    def grid_size(self) -> int:
        return len(self.sweep_values) if self.sweep_param != NO_SWEEP else 1

    def points(self) -> list[tuple[str, str]]:
        """(dataset, policy) pairs in run order: dataset-major, policies in the given order."""
        return [(d, p) for d in self.datasets for p in self.policies]

    def grid(self) -> list[dict[str, Any]]:
        """One full parameter dict per grid point (base params with the swept value filled in)."""
        if self.sweep_param == NO_SWEEP:
            return [dict(self.params)]
        kind = SYSTEM_PARAMS[self.sweep_param][0]
        return [dict(self.params, **{self.sweep_param: kind(v)}) for v in self.sweep_values]

    def trace_path(self, dataset: str) -> str:
        return os.path.join(self.traces_dir, f"{dataset}.npz")

    def to_config(self) -> dict[str, Any]:
        """JSON-able fingerprint of the sweep (compared on resume), including the trace files' SHA-256."""
        config = dataclasses.asdict(self)
        config["datasets"] = list(self.datasets)
        config["policies"] = list(self.policies)
        config["sweep_values"] = list(self.sweep_values)
        if config["latency_model"] == C.DEFAULT_LATENCY_MODEL:
            del config["latency_model"]  # fingerprints of sweeps from before the choice existed stay valid
        config["trace_sha256"] = {d: file_sha256(self.trace_path(d)) for d in self.datasets}
        # The learned tables the sweep reads (a different table between a kill and a restart must not mix results).
        if any(POLICY_SPECS[p].table in ("learned", "random") for p in self.policies):
            config["table_sha256"] = {
                d: (file_sha256(path) if os.path.exists(path) else None)
                for d in self.datasets for path in [learned_table_paths(self.ckpt_dir, d)[0]]
            }
        return json.loads(json.dumps(config))


def learned_table_paths(ckpt_dir: str, dataset: str) -> tuple[str, str]:
    """(policy_table.npz, eval.json) that experiments/train.py writes under <ckpt_dir>/<dataset>/."""
    base = os.path.join(ckpt_dir, dataset)
    return os.path.join(base, "policy_table.npz"), os.path.join(base, "eval.json")


def _finite(flag: str, value: float) -> float:
    if not math.isfinite(value):
        raise SweepConfigError(flag, f"must be finite, got {value!r}")
    return value


def check_param(name: str, value: Any, flag: str | None = None) -> Any:
    """Validate one system-parameter value; the error names `flag` (default: the parameter's own flag)."""
    flag = flag or name
    kind = SYSTEM_PARAMS[name][0]
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise SweepConfigError(flag, f"{name} must be an integer, got {value!r}")
            value = int(value)
        if value < 1:
            raise SweepConfigError(flag, f"{name} must be >= 1, got {value}")
        return int(value)
    value = _finite(flag, float(value))
    if name in ("bandwidth_bps", "arrival_rate", "beta", "flops_slm", "flops_llm") and value <= 0:
        raise SweepConfigError(flag, f"{name} must be > 0, got {value!r}")
    if name == "path_loss_exponent" and value < 0:
        raise SweepConfigError(flag, f"{name} must be >= 0, got {value!r}")
    return value


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


def available_datasets(traces_dir: str) -> list[str]:
    if not os.path.isdir(traces_dir):
        return []
    return sorted(f[:-4] for f in os.listdir(traces_dir) if f.endswith(".npz"))


def make_spec(
    *,
    datasets: Sequence[str],
    policies: Sequence[str],
    sweep_param: str = NO_SWEEP,
    sweep_values: Sequence[float] = (),
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
    explicitly_set: Iterable[str] = (),
    supported_policies: Sequence[str] = POLICIES,
) -> SweepSpec:
    """Validate everything and build a SweepSpec; raise SweepConfigError naming the first bad flag.

    `params` overrides SYSTEM_PARAMS defaults (Table 3, prada_jax.constants). `explicitly_set` names flags the
    user gave on the command line: setting the swept parameter's own flag is an error (it would be ignored).
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
    known = available_datasets(traces_dir)
    for d in datasets:
        if not os.path.exists(os.path.join(traces_dir, f"{d}.npz")):
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
        if p not in POLICIES:
            raise SweepConfigError("policies", f"unknown policy {p!r}; choose from {list(POLICIES)}")

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
    if sweep_param != NO_SWEEP:
        if sweep_param not in SYSTEM_PARAMS:
            raise SweepConfigError(
                "sweep_param", f"unknown parameter {sweep_param!r}; choose from {[NO_SWEEP, *SYSTEM_PARAMS]}"
            )
        if not sweep_values:
            raise SweepConfigError("sweep_values", f"empty, but --sweep_param={sweep_param} needs values")
        values = tuple(check_param(sweep_param, v, flag="sweep_values") for v in sweep_values)
        if len(set(values)) != len(values):
            raise SweepConfigError("sweep_values", f"duplicate values in {list(values)}")
        if sweep_param in explicitly_set:
            raise SweepConfigError(
                sweep_param, f"is set but --sweep_param={sweep_param} sweeps it; drop one of the two flags"
            )
        full[sweep_param] = None
    else:
        if sweep_values:
            raise SweepConfigError("sweep_values", f"given but --sweep_param={NO_SWEEP}")
        values = ()
    full["server_prefill"] = server_prefill

    if episodes < 2:
        raise SweepConfigError("episodes", f"must be >= 2 (a 95% CI needs two episodes), got {episodes}")
    if horizon_ms < 1:
        raise SweepConfigError("horizon_ms", f"must be >= 1, got {horizon_ms}")
    if warmup_ms < 0:
        raise SweepConfigError("warmup_ms", f"must be >= 0, got {warmup_ms}")
    if warmup_ms >= horizon_ms:
        raise SweepConfigError("warmup_ms", f"must be < --horizon_ms ({horizon_ms}), got {warmup_ms}")
    if max_users < 1:
        raise SweepConfigError("max_users", f"must be >= 1, got {max_users}")
    if drain_ms < 0:
        raise SweepConfigError("drain_ms", f"must be >= 0, got {drain_ms}")
    if seed < 0:
        raise SweepConfigError("seed", f"must be >= 0, got {seed}")
    if table_beta is None:
        # Learned tables follow --beta; a beta sweep keeps one Stage-1 table (trained at the Table-3 default).
        table_beta = full["beta"] if sweep_param != "beta" else C.DEFAULT_BETA
    else:
        table_beta = check_param("beta", table_beta, flag="table_beta")
    for flag, value in (("router_llm_fraction", router_llm_fraction), ("rsd_threshold", rsd_threshold)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise SweepConfigError(flag, f"must lie in [0, 1], got {value!r}")
    from prada_jax.sim.latency_models import LATENCY_MODELS

    if latency_model not in LATENCY_MODELS:
        raise SweepConfigError("latency_model", f"{latency_model!r} is not one of {sorted(LATENCY_MODELS)}")
    for p in policies:
        if p not in supported_policies:
            raise SweepConfigError(
                "policies", f"policy {p!r} cannot run in this build (see the warning above); runnable: {list(supported_policies)}"
            )
    capacities = [v for v in values] if sweep_param == "server_capacity" else [full["server_capacity"]]
    if max(capacities) > max_users:
        flag = "sweep_values" if sweep_param == "server_capacity" else "server_capacity"
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
        latency_model=str(latency_model),
    )
