"""Experiment sweeps: flags -> validated `SweepSpec`, the resumable point-by-point runner, results I/O, metadata.

A *point* is one (dataset, policy) pair; all swept values of a point are computed in ONE `simulate_grid` call
(the swept parameter is a traced leaf of `SimParams`, so one compile serves the whole grid). After each point
its rows are appended to `results.csv` (one `write` + `fsync`) and `results.json` is rewritten atomically, so a
killed sweep restarted with the same flags skips the finished points and never duplicates a row. Restarting
with different flags into the same `--out_dir` is an error unless `--overwrite` (docs/experiments.md).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from typing import Any, Callable, Iterable, Sequence

from absl import logging

from prada_jax import constants as C
from prada_jax.sim.params import SimConfig
from prada_jax.traces import file_sha256

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------------

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

# Metrics every row must carry (prada_jax.sim.metrics.summarize names); extra summary metrics are kept too.
REQUIRED_METRICS = (
    "accuracy",
    "processing_ms",
    "communication_ms",
    "queuing_ms",
    "end_to_end_ms",
    "sojourn_ms",
    "offload_fraction",
    "arrived",
    "completed",
    "unfinished",
    "dropped",
    "overloaded",
)
KEY_COLUMNS = ("dataset", "policy", "sweep_param", "sweep_value", "episodes")
TAIL_COLUMNS = ("point_seconds",)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RUN_JSON = "run.json"
FIGURE_PREFIX = "fig_"


class SweepConfigError(ValueError):
    """An invalid flag value. `flag` names the flag; str() reads '--flag: what is wrong'."""

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"--{flag}: {message}")


class SweepStateError(RuntimeError):
    """The out_dir holds results that do not belong to this sweep, or are corrupt."""


# ---------------------------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------------------------


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
        config["trace_sha256"] = {d: file_sha256(self.trace_path(d)) for d in self.datasets}
        # The learned tables the sweep reads (a different table between a kill and a restart must not mix results).
        if any(POLICY_SPECS[p].table in ("learned", "random") for p in self.policies):
            config["table_sha256"] = {
                d: (file_sha256(path) if os.path.exists(path) else None)
                for d in self.datasets for path in [learned_table_paths(self.ckpt_dir, d)[0]]
            }
        return json.loads(json.dumps(config))




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
    explicitly_set: Iterable[str] = (),
    supported_policies: Sequence[str] = POLICIES,
) -> SweepSpec:
    """Validate everything and build a SweepSpec; raise SweepConfigError naming the first bad flag.

    `params` overrides SYSTEM_PARAMS defaults (Table 3, prada_jax.constants). `explicitly_set` names flags the
    user gave on the command line: setting the swept parameter's own flag is an error (it would be ignored).
    """
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
    )


# ---------------------------------------------------------------------------------------------------------------
# absl flags (shared by experiments/sweep.py and experiments/make_figures.py)
# ---------------------------------------------------------------------------------------------------------------

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs")

DEFAULT_EPISODES = 32
# Horizon, warm-up and user slots default to the simulator's own SimConfig defaults (1 ms slots).
_SIM_DEFAULTS = SimConfig()
DEFAULT_HORIZON_MS = _SIM_DEFAULTS.num_slots
DEFAULT_WARMUP_MS = _SIM_DEFAULTS.warmup_slots
DEFAULT_MAX_USERS = _SIM_DEFAULTS.max_users


def define_flags(flag_values) -> None:
    """Define every sweep flag on `flag_values` (absl FlagValues). Defaults are Table 3 (constants.py)."""
    from absl import flags

    fv = flag_values
    flags.DEFINE_float("bandwidth_bps", C.DEFAULT_BANDWIDTH_BPS, "Total uplink bandwidth B (bit/s).", flag_values=fv)
    flags.DEFINE_integer("server_capacity", C.DEFAULT_SERVER_CAPACITY, "Server parallel capacity M.", flag_values=fv)
    flags.DEFINE_float("arrival_rate", C.DEFAULT_ARRIVAL_RATE, "Poisson arrivals per 1 ms slot (lambda).", flag_values=fv)
    flags.DEFINE_float("beta", C.DEFAULT_BETA, "Trade-off weight beta (PRM units per second).", flag_values=fv)
    flags.DEFINE_float("snr_db", C.DEFAULT_SNR_DB, "Mean SNR (dB) at the median user distance.", flag_values=fv)
    flags.DEFINE_float("snr_threshold_db", C.DEFAULT_SNR_THRESHOLD_DB, "gamma_th (dB): no upload below it.", flag_values=fv)
    flags.DEFINE_float("path_loss_exponent", C.DEFAULT_PATH_LOSS_EXPONENT, "Path-loss exponent.", flag_values=fv)
    flags.DEFINE_float("flops_slm", C.FLOPS_SLM, "FLOP/s of each user's SLM.", flag_values=fv)
    flags.DEFINE_float("flops_llm", C.FLOPS_LLM, "FLOP/s of the server LLM.", flag_values=fv)
    flags.DEFINE_string(
        "server_prefill", C.DEFAULT_SERVER_PREFILL, f"Server prefill mode, one of {list(C.SERVER_PREFILL_MODES)}.", flag_values=fv
    )
    flags.DEFINE_list("datasets", ["gsm8k"], "Datasets (trace names in --traces_dir).", flag_values=fv)
    flags.DEFINE_list("policies", ["all_slm", "prada"], f"Policies, from {list(POLICIES)}.", flag_values=fv)
    flags.DEFINE_string("sweep_param", NO_SWEEP, f"Swept parameter: {NO_SWEEP} or one of {list(SYSTEM_PARAMS)}.", flag_values=fv)
    flags.DEFINE_list("sweep_values", [], "Values of --sweep_param (comma separated).", flag_values=fv)
    flags.DEFINE_integer("episodes", DEFAULT_EPISODES, "Monte-Carlo episodes per grid point.", flag_values=fv)
    flags.DEFINE_integer("horizon_ms", DEFAULT_HORIZON_MS, "Episode length (ms = slots).", flag_values=fv)
    flags.DEFINE_integer("warmup_ms", DEFAULT_WARMUP_MS, "Warm-up excluded from averages (ms).", flag_values=fv)
    flags.DEFINE_integer("drain_ms", 1000, "After the horizon: no arrivals; run until every counted task has finished "
                         "or this long; tasks still in the system then are reported as unfinished.", flag_values=fv)
    flags.DEFINE_integer("max_users", DEFAULT_MAX_USERS, "User slots (static); arrivals finding none are dropped.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Base seed of the episodes.", flag_values=fv)
    flags.DEFINE_string("out_dir", "results/sweep", "Output folder (results, metadata, figures).", flag_values=fv)
    flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz traces.", flag_values=fv)
    flags.DEFINE_string("ckpt_dir", "checkpoints", "Folder of learned-policy checkpoints.", flag_values=fv)
    flags.DEFINE_float(
        "table_beta", None,
        "beta of the learned Stage-1 tables (pi_only, prada, random_scheduler); default: --beta, or the Table-3 "
        "default when --sweep_param=beta (one table serves the whole grid).", flag_values=fv,
    )
    flags.DEFINE_float(
        "router_llm_fraction", DEFAULT_ROUTER_LLM_FRACTION, "router policy: fraction of tasks sent to the LLM.", flag_values=fv
    )
    flags.DEFINE_float(
        "rsd_threshold", DEFAULT_RSD_THRESHOLD, "rsd policy: PRM score below which the LLM regenerates a step.", flag_values=fv
    )
    flags.DEFINE_bool("overwrite", False, "Discard results in --out_dir from a sweep with different flags.", flag_values=fv)
    flags.DEFINE_bool("plots", True, "Draw PNG figures into --out_dir after the sweep.", flag_values=fv)


def spec_from_flags(fv, supported_policies: Sequence[str] | None = None) -> SweepSpec:
    """Build the validated SweepSpec from parsed flags (SweepConfigError names the bad flag)."""
    explicitly = [name for name in SYSTEM_PARAMS if fv[name].present]
    if supported_policies is None:
        supported_policies = supported_policy_names()
    return make_spec(
        datasets=fv.datasets,
        policies=fv.policies,
        sweep_param=fv.sweep_param,
        sweep_values=parse_float_list("sweep_values", fv.sweep_values),
        params={name: getattr(fv, name) for name in SYSTEM_PARAMS},
        server_prefill=fv.server_prefill,
        episodes=fv.episodes,
        horizon_ms=fv.horizon_ms,
        warmup_ms=fv.warmup_ms,
        max_users=fv.max_users,
        seed=fv.seed,
        traces_dir=fv.traces_dir,
        ckpt_dir=fv.ckpt_dir,
        table_beta=fv.table_beta,
        router_llm_fraction=fv.router_llm_fraction,
        rsd_threshold=fv.rsd_threshold,
        drain_ms=fv.drain_ms,
        explicitly_set=explicitly,
        supported_policies=supported_policies,
    )


def resolve_flagfile_argv(argv: Sequence[str], config_dir: str = CONFIG_DIR) -> list[str]:
    """Rewrite `--flagfile=name` (and `--flagfile name`) to experiments/configs/name when `name` is no path.

    A value that exists as given is kept. A missing bare name that is not in config_dir either raises
    SweepConfigError('flagfile', ...) listing the shipped configs.
    """
    out = list(argv)
    i = 0
    while i < len(out):
        arg = out[i]
        if arg.startswith("--flagfile=") or arg == "--flagfile":
            if arg == "--flagfile":
                if i + 1 >= len(out):
                    raise SweepConfigError("flagfile", "missing value")
                value, two = out[i + 1], True
            else:
                value, two = arg.split("=", 1)[1], False
            if not os.path.exists(value):
                candidate = os.path.join(config_dir, value)
                if not os.path.exists(candidate) and not value.endswith(".cfg"):
                    candidate += ".cfg"
                if not os.path.exists(candidate):
                    shipped = sorted(os.listdir(config_dir)) if os.path.isdir(config_dir) else []
                    raise SweepConfigError("flagfile", f"{value!r} is neither a file nor one of {shipped} in {config_dir}")
                if two:
                    out[i + 1] = candidate
                else:
                    out[i] = "--flagfile=" + candidate
        i += 1
    return out


# ---------------------------------------------------------------------------------------------------------------
# Run metadata
# ---------------------------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("prada-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "matplotlib", "absl-py"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def git_revision() -> dict[str, Any]:
    """HEAD commit of the repository holding this package and whether its tree is dirty (read-only git calls)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return {"commit": head, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    import jax

    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def session_metadata(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What this process is: when, which code, which packages, which device, which command line."""
    return {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv if argv is not None else sys.argv),
        "git": git_revision(),
        "versions": package_versions(),
        "device": device_info(),
    }


# ---------------------------------------------------------------------------------------------------------------
# Results store
# ---------------------------------------------------------------------------------------------------------------


def _fsync_write(path: str, data: str, mode: str) -> None:
    with open(path, mode, encoding="utf-8", newline="") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write(path: str, data: str) -> None:
    tmp = path + ".tmp"
    _fsync_write(tmp, data, "w")
    os.replace(tmp, path)


def format_value(value: Any) -> str:
    """CSV cell: ints as ints, floats round-trip exact (repr), strings as they are."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_cell(column: str, text: str) -> Any:
    """One CSV cell; ValueError naming the column for a cell that is not what the column holds."""
    if column in ("dataset", "policy", "sweep_param"):
        return text
    try:
        if column == "episodes":
            return int(text)
        if text == "":
            return None
        return float(text)
    except ValueError:
        raise ValueError(f"column {column!r}: {text[:40]!r} is not a number") from None


LOCK_FILE = ".sweep.lock"


def acquire_lock(out_dir: str):
    """One writer per result directory: an exclusive `filelock` on <out_dir>/.sweep.lock, or SweepStateError at
    once if another sweep holds it (its results stay intact)."""
    import filelock

    os.makedirs(out_dir, exist_ok=True)
    lock = filelock.FileLock(os.path.join(out_dir, LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise SweepStateError(
            f"{out_dir} is being written by another sweep (lock {os.path.join(out_dir, LOCK_FILE)} is held); "
            "wait for it to finish or use another --out_dir"
        ) from None
    return lock


class ResultStore:
    """results.csv (append + fsync, the source of truth), results.json (atomic rewrite) and run.json in out_dir."""

    def __init__(self, out_dir: str, spec: SweepSpec, overwrite: bool = False, argv: Sequence[str] | None = None,
                 lock: "filelock.FileLock | None" = None):
        self.out_dir = out_dir
        self.spec = spec
        self.csv_path = os.path.join(out_dir, RESULTS_CSV)
        self.json_path = os.path.join(out_dir, RESULTS_JSON)
        self.run_path = os.path.join(out_dir, RUN_JSON)
        self.lock = lock if lock is not None else acquire_lock(out_dir)
        config = spec.to_config()
        try:
            existing = self._read_run()
        except SweepStateError:
            if not overwrite:
                raise
            self._discard("run.json is corrupt and --overwrite is set")
            existing = None
        if existing is not None and not os.path.exists(self.csv_path):
            existing = None  # only a failed run's metadata (no result rows): nothing to protect
        if existing is not None and existing.get("config") != config:
            if not overwrite:
                diff = _config_diff(existing.get("config", {}), config)
                raise SweepStateError(
                    f"{out_dir} holds results of a sweep with different flags ({diff}); "
                    "use another --out_dir, or --overwrite to discard them"
                )
            self._discard("flags changed and --overwrite is set")
            existing = None
        elif existing is None and os.path.exists(self.csv_path):
            if not overwrite:
                raise SweepStateError(
                    f"{self.csv_path} exists without {RUN_JSON}: cannot tell which sweep wrote it; "
                    "use another --out_dir, or --overwrite to discard it"
                )
            self._discard(f"no {RUN_JSON} and --overwrite is set")
        self.run = existing or {"config": config, "sessions": []}
        self.run["sessions"].append(session_metadata(argv))
        _atomic_write(self.run_path, json.dumps(self.run, indent=2, sort_keys=True) + "\n")
        self.columns: list[str] | None = None
        self.rows: list[dict[str, Any]] = []
        self._load_rows()

    # -- reading ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the out_dir lock."""
        self.lock.release()

    def _read_run(self) -> dict | None:
        if not os.path.exists(self.run_path):
            return None
        try:
            with open(self.run_path, encoding="utf-8") as handle:
                return json.load(handle)
        except json.JSONDecodeError as err:
            raise SweepStateError(f"{self.run_path} is not valid JSON ({err}); remove it or use --overwrite") from err

    def _discard(self, why: str) -> None:
        removed = []
        for name in sorted(os.listdir(self.out_dir)):
            if name in (RESULTS_CSV, RESULTS_JSON, RUN_JSON) or (name.startswith(FIGURE_PREFIX) and name.endswith(".png")):
                os.remove(os.path.join(self.out_dir, name))
                removed.append(name)
        logging.warning("Discarded %s from %s (%s)", removed, self.out_dir, why)

    def _load_rows(self) -> None:
        if not os.path.exists(self.csv_path):
            return
        with open(self.csv_path, "rb") as handle:
            raw = handle.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SweepStateError(f"{self.csv_path}: not a text CSV ({err}); remove it or use --overwrite") from err
        keep_bytes = len(raw)
        if text and not text.endswith("\n"):
            # A kill mid-write leaves a partial last line: drop it (reported, then truncated below).
            cut = text.rfind("\n") + 1
            logging.warning("%s: dropping a partial last line left by an interrupted run", self.csv_path)
            text = text[:cut]
            keep_bytes = len(text.encode("utf-8"))
        lines = text.splitlines(keepends=True)
        if not lines:
            self._truncate(0)
            return
        self.columns = next(csv.reader([lines[0]]))
        missing = [c for c in KEY_COLUMNS + TAIL_COLUMNS if c not in self.columns]
        if missing:
            raise SweepStateError(f"{self.csv_path}: header lacks columns {missing}")
        offsets = [len(lines[0].encode("utf-8"))]
        rows = []
        for line in lines[1:]:
            cells = next(csv.reader([line]))
            if len(cells) != len(self.columns):
                raise SweepStateError(f"{self.csv_path}: row {len(rows) + 1} has {len(cells)} cells, header {len(self.columns)}")
            try:
                rows.append({c: parse_cell(c, v) for c, v in zip(self.columns, cells)})
            except ValueError as err:
                raise SweepStateError(f"{self.csv_path}: row {len(rows) + 1}: {err}; remove the file or use --overwrite") from err
            offsets.append(offsets[-1] + len(line.encode("utf-8")))
        # Group rows into points (contiguous blocks); only the last block may be incomplete.
        expected = self._expected_values()
        done: list[dict] = []
        seen: set[tuple[str, str]] = set()
        i = 0
        while i < len(rows):
            key = (rows[i]["dataset"], rows[i]["policy"])
            j = i
            while j < len(rows) and (rows[j]["dataset"], rows[j]["policy"]) == key:
                j += 1
            block = rows[i:j]
            if key in seen:
                raise SweepStateError(f"{self.csv_path}: point {key} appears twice")
            if key not in self.spec.points():
                raise SweepStateError(f"{self.csv_path}: point {key} is not part of this sweep")
            values = [r["sweep_value"] for r in block]
            if len(block) < len(expected) and j == len(rows) and _is_prefix(values, expected):
                logging.warning(
                    "%s: discarding %d rows of the incomplete point %s left by an interrupted run",
                    self.csv_path, len(block), key,
                )
                keep_bytes = offsets[i]
                break
            if values != expected:
                raise SweepStateError(f"{self.csv_path}: point {key} has sweep values {values}, expected {expected}")
            seen.add(key)
            done.extend(block)
            i = j
        if keep_bytes != len(raw):
            self._truncate(keep_bytes)
        self.rows = done

    def _truncate(self, size: int) -> None:
        with open(self.csv_path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def _expected_values(self) -> list[float | None]:
        if self.spec.sweep_param == NO_SWEEP:
            return [None]
        return [float(v) for v in self.spec.sweep_values]

    def completed_points(self) -> set[tuple[str, str]]:
        return {(r["dataset"], r["policy"]) for r in self.rows}

    # -- writing ------------------------------------------------------------------------------------------------

    def append_point(self, rows: list[dict[str, Any]]) -> None:
        """Append one point's rows in a single write + fsync, then rewrite results.json atomically."""
        if not rows:
            raise ValueError("append_point: no rows")
        keys = {(r["dataset"], r["policy"]) for r in rows}
        if len(keys) != 1:
            raise ValueError(f"append_point: rows of several points {sorted(keys)}")
        key = keys.pop()
        if key in self.completed_points():
            raise SweepStateError(f"point {key} is already in {self.csv_path}")
        values = [r["sweep_value"] for r in rows]
        if values != self._expected_values():
            raise ValueError(f"append_point: point {key} has sweep values {values}, expected {self._expected_values()}")
        header = ""
        if self.columns is None:
            metrics = [c for c in rows[0] if c not in KEY_COLUMNS + TAIL_COLUMNS]
            self.columns = list(KEY_COLUMNS) + metrics + list(TAIL_COLUMNS)
            header = _csv_line(self.columns)
        for r in rows:
            if set(r) != set(self.columns):
                raise ValueError(
                    f"append_point: row columns differ from {self.csv_path}'s header: "
                    f"missing {sorted(set(self.columns) - set(r))}, extra {sorted(set(r) - set(self.columns))}"
                )
        block = header + "".join(_csv_line([format_value(r[c]) if r[c] is not None else "" for c in self.columns]) for r in rows)
        _fsync_write(self.csv_path, block, "a")
        self.rows.extend(rows)
        self.write_json()

    def write_json(self) -> None:
        """Rewrite results.json atomically (strict JSON: NaN, e.g. a latency with no completed task, -> null)."""
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in self.rows]
        payload = {"config": self.run["config"], "sessions": self.run["sessions"], "columns": self.columns, "rows": rows}
        _atomic_write(self.json_path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _is_prefix(values: list, expected: list) -> bool:
    return values == expected[: len(values)]


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    parts = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(parts) if parts else "metadata differs"


def read_results(out_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, rows) of a finished or partial sweep, from results.json."""
    path = os.path.join(out_dir, RESULTS_JSON)
    if not os.path.exists(path):
        raise SweepStateError(f"{path} not found: run the sweep first")
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    metric_columns = [c for c in payload["columns"] or [] if c not in KEY_COLUMNS]
    rows = [{k: (math.nan if k in metric_columns and v is None else v) for k, v in r.items()} for r in payload["rows"]]
    return payload["config"], rows


# ---------------------------------------------------------------------------------------------------------------
# The real point runner (simulator + policy tables)
# ---------------------------------------------------------------------------------------------------------------

PointRunner = Callable[[SweepSpec, str, str], list[dict[str, Any]]]


def supported_policy_names() -> tuple[str, ...]:
    """Policies this build can run: all need prada_jax.sim.run, learned ones prada_jax.learn.tables too."""
    try:
        import prada_jax.sim.run  # noqa: F401
    except ImportError as err:
        logging.warning("prada_jax.sim.run is not importable (%s): no policy can run", err)
        return ()
    try:
        import prada_jax.learn.tables  # noqa: F401
    except ImportError as err:
        logging.warning("prada_jax.learn.tables is not importable (%s): learned policies unavailable", err)
        return tuple(p for p in POLICIES if p not in LEARNED_POLICIES)
    return POLICIES


def rows_from_summary(spec: SweepSpec, dataset: str, policy: str, summary: dict, seconds: float) -> list[dict]:
    """One row per grid point from summarize()'s {name: (mean [G], ci95 [G])}."""
    import numpy as np

    missing = [m for m in REQUIRED_METRICS if m not in summary]
    if missing:
        raise KeyError(f"summarize() lacks metrics {missing}")
    names = list(REQUIRED_METRICS) + sorted(m for m in summary if m not in REQUIRED_METRICS)
    rows = []
    for g in range(spec.grid_size):
        row: dict[str, Any] = {
            "dataset": dataset,
            "policy": policy,
            "sweep_param": spec.sweep_param,
            "sweep_value": float(spec.sweep_values[g]) if spec.sweep_param != NO_SWEEP else None,
            "episodes": spec.episodes,
        }
        for name in names:
            mean, ci = summary[name]
            mean, ci = np.asarray(mean).reshape(-1), np.asarray(ci).reshape(-1)
            if mean.shape[0] != spec.grid_size or ci.shape[0] != spec.grid_size:
                raise ValueError(f"summarize()[{name!r}] has {mean.shape[0]} grid points, expected {spec.grid_size}")
            row[f"{name}_mean"] = float(mean[g])
            row[f"{name}_ci95"] = float(ci[g])
        row["point_seconds"] = float(seconds)
        rows.append(row)
    return rows


def sim_config(spec: SweepSpec, scheduler: str, stage1_sampling: bool = False):
    """Static SimConfig of a sweep: horizon/warm-up in 1 ms slots, U user slots, max_servers = largest M."""
    if not math.isclose(C.SLOT_SECONDS, 1e-3):
        raise ValueError(f"--horizon_ms assumes 1 ms slots; constants.SLOT_SECONDS is {C.SLOT_SECONDS}")
    capacities = [g["server_capacity"] for g in spec.grid()]
    return SimConfig(
        num_slots=spec.horizon_ms,
        warmup_slots=spec.warmup_ms,
        drain_slots=spec.drain_ms,
        max_users=spec.max_users,
        max_servers=max(capacities),
        max_arrivals_per_slot=None,  # chosen by the simulator for the largest rate (P(N > A_max) <= 1e-9)
        scheduler=scheduler,
        stage1_sampling=stage1_sampling,
    )


def params_grid(spec: SweepSpec):
    """SimParams with a leading grid axis [G], one entry per swept value."""
    from prada_jax.sim.params import params_from_mapping, stack_params

    points = []
    for g in spec.grid():
        values = {k: v for k, v in g.items() if k != "server_prefill"}
        values["prefix_cache"] = g["server_prefill"] == "prefix"
        points.append(params_from_mapping(values))
    return stack_params(points)


def simulate_point(spec: SweepSpec, dataset: str, policy: str) -> list[dict[str, Any]]:
    """Run all swept values of one (dataset, policy) in one simulate_grid call; return its rows."""
    from prada_jax import traces
    from prada_jax.sim import metrics as sim_metrics
    from prada_jax.sim import run as sim_run

    start = time.perf_counter()
    trace = traces.load_trace(spec.trace_path(dataset))
    packed = traces.pack_traces(trace)
    flops_llm = spec.params["flops_llm"]
    if flops_llm is None:
        # D_psi's reference server time uses one FLOP/s value; a flops_llm sweep keeps the Table-3 one for it.
        flops_llm = C.FLOPS_LLM
    table, ps = policy_setup(spec, policy, dataset, trace, flops_llm)
    config = sim_config(spec, ps.scheduler, ps.stage1_sampling)
    metrics = sim_run.simulate_grid(packed, table, params_grid(spec), config, spec.episodes, spec.seed)
    summary = sim_metrics.summarize(metrics)
    return rows_from_summary(spec, dataset, policy, summary, time.perf_counter() - start)


class PolicyTableError(RuntimeError):
    """A learned policy table is missing, was trained for another beta, or could not be trained."""


def learned_table_paths(ckpt_dir: str, dataset: str) -> tuple[str, str]:
    """(policy_table.npz, eval.json) that experiments/train.py writes under <ckpt_dir>/<dataset>/."""
    base = os.path.join(ckpt_dir, dataset)
    return os.path.join(base, "policy_table.npz"), os.path.join(base, "eval.json")


def train_policy_table(dataset: str, beta: float, traces_dir: str, ckpt_dir: str, seed: int = 0) -> None:
    """Train on first use: run experiments/train.py for one dataset at `beta` (its progress log streams).

    Runs the documented training entry point rather than re-implementing it, so a table trained here is the
    same as one from `python experiments/train.py --datasets=<d> --beta=<b> --seed=<s>`."""
    script = os.path.join(os.path.dirname(CONFIG_DIR), "train.py")
    cmd = [
        sys.executable, script, f"--datasets={dataset}", f"--beta={beta!r}",
        f"--trace_dir={traces_dir}", f"--ckpt_dir={ckpt_dir}", f"--seed={seed}",
        "--resume",  # continue an interrupted first-use training (a no-op when nothing was saved yet)
    ]
    logging.info("No learned policy table for %s in %s: training it at beta=%g now (%s)",
                 dataset, ckpt_dir, beta, " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    if proc.returncode != 0:
        raise PolicyTableError(
            f"training the policy table of {dataset} failed (exit {proc.returncode}): {' '.join(cmd)}"
        )
    logging.info("Trained the policy table of %s in %.0f s", dataset, time.perf_counter() - t0)


def _die_with_parent() -> None:
    """In the training child (Linux): receive SIGKILL when the sweep dies, so a killed sweep leaves no trainer
    behind to race a restarted one (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def learned_table(spec: SweepSpec, dataset: str, trace):
    """The learned PolicyTable (pi_theta, A_omega, D_psi) of a dataset at spec.table_beta.

    Loaded from <ckpt_dir>/<dataset>/policy_table.npz (written by experiments/train.py, whose eval.json records
    the beta it was trained for); trained on first use when absent. A table for another beta is an error
    (never overwritten): point --ckpt_dir elsewhere or set --table_beta.
    """
    from prada_jax.learn import tables as learn_tables

    table_path, eval_path = learned_table_paths(spec.ckpt_dir, dataset)
    if not os.path.exists(table_path):
        train_policy_table(dataset, spec.table_beta, spec.traces_dir, spec.ckpt_dir, spec.seed)
    if not os.path.exists(eval_path):
        raise PolicyTableError(f"{eval_path} not found: cannot tell which beta {table_path} was trained for")
    try:
        with open(eval_path, encoding="utf-8") as handle:
            trained_beta = float(json.load(handle)["beta"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PolicyTableError(f"{eval_path}: unreadable training record ({type(err).__name__}: {err})") from err
    if not math.isclose(trained_beta, spec.table_beta, rel_tol=1e-6):
        raise PolicyTableError(
            f"{table_path} was trained for beta={trained_beta:g}, this sweep needs --table_beta={spec.table_beta:g}; "
            "use another --ckpt_dir (trained on first use) or set --table_beta"
        )
    try:
        return learn_tables.load_table(table_path, shape=(trace.num_problems, trace.max_steps), trace=trace,
                                       trace_path=spec.trace_path(dataset))
    except learn_tables.TableError as err:
        raise PolicyTableError(str(err)) from err


def policy_setup(spec: SweepSpec, policy: str, dataset: str, trace, flops_llm: float):
    """(PolicyTable, PolicySpec) of a policy name (POLICY_SPECS)."""
    from prada_jax.sim import policies as P

    ps = POLICY_SPECS[policy]
    if ps.table == "learned":
        table = learned_table(spec, dataset, trace)
    elif ps.table == "random":
        table = P.random_table(trace, RANDOM_POLICY_PROB, base=learned_table(spec, dataset, trace), flops_llm=flops_llm)
    elif ps.table == "all_slm":
        table = P.all_slm_table(trace, flops_llm=flops_llm)
    elif ps.table == "all_llm":
        table = P.all_llm_table(trace, flops_llm=flops_llm)
    elif ps.table == "router":
        table = P.router_table(trace, spec.router_llm_fraction, flops_llm=flops_llm)
    elif ps.table == "prm_threshold":
        table = P.prm_threshold_table(trace, spec.rsd_threshold, flops_llm=flops_llm)
    else:
        raise ValueError(f"policy {policy!r}: unknown table source {ps.table!r}")
    return table, ps


# ---------------------------------------------------------------------------------------------------------------
# The resumable runner
# ---------------------------------------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec,
    out_dir: str,
    *,
    overwrite: bool = False,
    run_point: PointRunner | None = None,
    argv: Sequence[str] | None = None,
) -> ResultStore:
    """Run every (dataset, policy) point not already in out_dir; log each point's time and an ETA."""
    run_point = run_point or simulate_point
    if run_point is simulate_point:
        validate_inputs(spec)  # every trace and existing table, before anything is written
    lock = acquire_lock(out_dir)
    try:
        if run_point is simulate_point:
            train_missing_tables(spec)
        store = ResultStore(out_dir, spec, overwrite=overwrite, argv=argv, lock=lock)
    except BaseException:
        lock.release()
        raise
    try:
        return _run_points(spec, store, run_point, out_dir)
    finally:
        store.close()


def validate_inputs(spec: SweepSpec) -> None:
    """Load and check every input the sweep will read: each dataset's trace and each learned table that exists
    (a missing one is trained on first use). Raises TraceError / PolicyTableError naming the file."""
    from prada_jax import traces

    learned = any(POLICY_SPECS[p].table in ("learned", "random") for p in spec.policies)
    for dataset in spec.datasets:
        trace = traces.load_trace(spec.trace_path(dataset))
        if learned and os.path.exists(learned_table_paths(spec.ckpt_dir, dataset)[0]):
            learned_table(spec, dataset, trace)


def train_missing_tables(spec: SweepSpec) -> None:
    """Train (in this process) the learned tables the sweep needs and does not have yet."""
    if not any(POLICY_SPECS[p].table in ("learned", "random") for p in spec.policies):
        return
    for dataset in spec.datasets:
        if not os.path.exists(learned_table_paths(spec.ckpt_dir, dataset)[0]):
            train_policy_table(dataset, spec.table_beta, spec.traces_dir, spec.ckpt_dir, spec.seed)


def _run_points(spec: SweepSpec, store: "ResultStore", run_point, out_dir: str) -> "ResultStore":
    points = spec.points()
    done = store.completed_points()
    todo = [p for p in points if p not in done]
    if done:
        logging.info("Resuming %s: %d of %d points already done", out_dir, len(points) - len(todo), len(points))
    logging.info(
        "Sweep %s over %s (%d values) x %d datasets x %d policies, %d episodes each",
        out_dir, spec.sweep_param, spec.grid_size, len(spec.datasets), len(spec.policies), spec.episodes,
    )
    start = time.perf_counter()
    for index, (dataset, policy) in enumerate(todo):
        t0 = time.perf_counter()
        rows = run_point(spec, dataset, policy)
        store.append_point(rows)
        took = time.perf_counter() - t0
        elapsed = time.perf_counter() - start
        remaining = len(todo) - index - 1
        eta = elapsed / (index + 1) * remaining
        logging.info(
            "point %d/%d %s/%s: %.1f s (%d grid values); elapsed %.1f s, ETA %.1f s for %d more",
            len(points) - len(todo) + index + 1, len(points), dataset, policy, took, spec.grid_size,
            elapsed, eta, remaining,
        )
    if not todo:
        logging.info("Nothing to do: all %d points are in %s", len(points), store.csv_path)
    store.write_json()  # (re)built from results.csv, also when nothing was left to do
    return store
