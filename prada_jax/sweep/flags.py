"""absl flags of a sweep (shared by the prada-sweep and prada-figures commands) and `--flagfile` resolution."""

from __future__ import annotations

import os
from collections.abc import Sequence

from prada_jax import constants as C
from prada_jax import data_paths
from prada_jax.sim import registry
from prada_jax.sim.params import SimConfig
from prada_jax.sweep.runner import supported_policy_names
from prada_jax.sweep.spec import (
    DEFAULT_ROUTER_LLM_FRACTION,
    DEFAULT_RSD_THRESHOLD,
    DEFAULT_SLOT_MS,
    NO_SWEEP,
    POLICIES,
    SYSTEM_PARAMS,
    SweepConfigError,
    SweepSpec,
    make_spec,
    parse_float_list,
    parse_grid,
)

# The shipped flagfiles: package data prada_jax/configs/*.cfg (a bare --flagfile=name resolves there).
CONFIG_DIR = data_paths.CONFIG_DIR

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
    for param in registry.PARAMS.values():  # one flag per registered system parameter (prada_jax.sim.registry)
        define = flags.DEFINE_integer if param.kind is int else flags.DEFINE_float
        define(param.name, param.default, param.help, flag_values=fv)
    flags.DEFINE_string(
        "server_prefill", C.DEFAULT_SERVER_PREFILL, f"Server prefill mode, one of {list(C.SERVER_PREFILL_MODES)}.", flag_values=fv
    )
    flags.DEFINE_list("datasets", ["gsm8k"], "Datasets: plain trace names <name> of <name>.npz in --traces_dir.",
                      flag_values=fv)
    flags.DEFINE_list("policies", ["all_slm", "prada"], f"Policies, from {list(POLICIES)} (prada_jax.sim.registry).", flag_values=fv)
    flags.DEFINE_string("sweep_param", NO_SWEEP, f"Swept parameter: {NO_SWEEP} or one of {list(SYSTEM_PARAMS)} (prada_jax.sim.registry).", flag_values=fv)
    flags.DEFINE_list("sweep_values", [], "Values of --sweep_param (comma separated).", flag_values=fv)
    flags.DEFINE_multi_string(
        "grid", [], "Repeatable: --grid=name=v1,v2,... sweeps the Cartesian product of every --grid parameter "
        "(e.g. --grid=server_capacity=1,3,9 --grid=bandwidth_bps=1e6,4e7); not with --sweep_param.", flag_values=fv)
    flags.DEFINE_integer("episodes", DEFAULT_EPISODES, "Monte-Carlo episodes per grid point.", flag_values=fv)
    flags.DEFINE_float("slot_ms", DEFAULT_SLOT_MS, "Slot length Delta t (ms; SimConfig.slot_seconds). --horizon_ms, "
                       "--warmup_ms and --drain_ms must be multiples of it; --arrival_rate stays tasks per ms.",
                       flag_values=fv)
    flags.DEFINE_integer("horizon_ms", DEFAULT_HORIZON_MS, "Episode length (ms; --horizon_ms / --slot_ms slots).",
                         flag_values=fv)
    flags.DEFINE_integer("warmup_ms", DEFAULT_WARMUP_MS, "Warm-up excluded from averages (ms).", flag_values=fv)
    flags.DEFINE_integer("drain_ms", 1000, "After the horizon: no arrivals; run until every counted task has finished "
                         "or this long; tasks still in the system then are reported as unfinished.", flag_values=fv)
    flags.DEFINE_integer("max_users", DEFAULT_MAX_USERS, "User slots (static); arrivals finding none are dropped.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Base seed of the episodes, 0 <= seed < 2**32 (jax.random.PRNGKey keeps 32 "
                         "bits).", flag_values=fv)
    flags.DEFINE_string("out_dir", "results/sweep", "Output folder (results, metadata, figures).", flag_values=fv)
    flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz traces (default: ./traces, else the traces "
                         "shipped with the package).", flag_values=fv)
    flags.DEFINE_string("ckpt_dir", "checkpoints", "Folder of learned-policy checkpoints (default: ./checkpoints, else "
                         "the read-only tables shipped with the package).", flag_values=fv)
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
    flags.DEFINE_string(
        "latency_model", C.DEFAULT_LATENCY_MODEL, "Simulator latency model: 'flops' (the paper's eqs. 14-18), "
        "'roofline' (H100 server, Jetson AGX Orin edge), 'calibrated' (the roofline fitted to published measurements) "
        "or 'profile:<csv>' (a measured profile); docs/latency.md. Their steps take 0.1-5 s: use e.g. "
        "--slot_ms=20 and horizons of tens of seconds.", flag_values=fv)
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
        grid=parse_grid(fv.grid),
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
        latency_model=fv.latency_model,
        slot_ms=fv.slot_ms,
        explicitly_set=explicitly,
        supported_policies=supported_policies,
    )


def resolve_flagfile_argv(argv: Sequence[str], config_dir: str = CONFIG_DIR) -> list[str]:
    """Rewrite `--flagfile=name` (and `--flagfile name`) to <config_dir>/name (the shipped prada_jax/configs/)
    when `name` is no existing path.

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
