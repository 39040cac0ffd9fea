"""Experiment sweeps: flags -> validated `SweepSpec`, the resumable point-by-point runner, results I/O, metadata.

A *point* is one (dataset, policy) pair; all swept values of a point (one --sweep_param, or the Cartesian
product of several --grid parameters) are computed in ONE `simulate_grid` call (swept parameters are traced
leaves of `SimParams`, so one compile serves the whole grid). After each point its rows are appended to `results.csv` (one `write` + `fsync`) and `results.json` is rewritten atomically, so a
killed sweep restarted with the same flags skips the finished points and never duplicates a row. Restarting
with different flags into the same `--out_dir` is an error unless `--overwrite` (docs/experiments.md).

One job per module; this package re-exports their public names (`from prada_jax import sweep; sweep.run_sweep`):

    spec.py      SweepSpec, check_param, make_spec, parse_grid, SweepConfigError; SYSTEM_PARAMS / POLICY_SPECS are
                 views of the one registry, prada_jax.sim.registry
    store.py     inspect_out_dir (the one read-only resume check; its OutDirState opens a ResultStore),
                 ResultStore (results.csv / results.json / run.json), read_results, the lock, SweepStateError
    metadata.py  package_versions, git_revision, device_info, session_metadata (recorded in run.json)
    runner.py    sim_config, params_grid, simulate_point, learned tables (trained on first use), run_sweep
    report.py    summary_table: the compact table printed at the end of a sweep; value_label (distinct labels)
    flags.py     define_flags, spec_from_flags, resolve_flagfile_argv, CONFIG_DIR (the shipped *.cfg)
"""

from __future__ import annotations

from prada_jax.sweep.flags import (
    CONFIG_DIR,
    DEFAULT_EPISODES,
    DEFAULT_HORIZON_MS,
    DEFAULT_MAX_USERS,
    DEFAULT_WARMUP_MS,
    define_flags,
    resolve_flagfile_argv,
    spec_from_flags,
)
from prada_jax.sweep.metadata import device_info, git_revision, package_versions, session_metadata
from prada_jax.sweep.report import SUMMARY_COLUMNS, point_label, summary_table, value_label
from prada_jax.sweep.runner import (
    Eta,
    PointRows,
    PointRunner,
    PolicyTableError,
    candidate_info,
    learned_table,
    params_grid,
    policy_setup,
    rows_from_summary,
    run_sweep,
    sim_config,
    simulate_point,
    supported_policy_names,
    train_missing_tables,
    train_policy_table,
    validate_inputs,
)
from prada_jax.sweep.spec import (
    DEFAULT_ROUTER_LLM_FRACTION,
    DEFAULT_RSD_THRESHOLD,
    GRID,
    LEARNED_POLICIES,
    NO_SWEEP,
    POLICIES,
    POLICY_SPECS,
    RANDOM_POLICY_PROB,
    SYSTEM_PARAMS,
    PolicySpec,
    SweepConfigError,
    SweepSpec,
    available_datasets,
    check_dataset_name,
    check_param,
    check_simulator_values,
    learned_table_paths,
    make_spec,
    parse_float_list,
    parse_grid,
    simulator_value,
)
from prada_jax.sweep.store import (
    FIGURE_PREFIX,
    KEY_COLUMNS,
    LOCK_FILE,
    REQUIRED_METRICS,
    RESULTS_CSV,
    RESULTS_JSON,
    RESULTS_SUMS,
    RUN_JSON,
    TAIL_COLUMNS,
    OutDirState,
    ResultStore,
    SweepStateError,
    acquire_lock,
    check_out_dir_path,
    format_value,
    inspect_out_dir,
    parse_cell,
    read_results,
    settle_pending_tables,
)

__all__ = [
    "CONFIG_DIR", "DEFAULT_EPISODES", "GRID", "Eta", "parse_grid", "SUMMARY_COLUMNS",
    "point_label", "summary_table", "DEFAULT_HORIZON_MS", "DEFAULT_MAX_USERS", "DEFAULT_ROUTER_LLM_FRACTION",
    "DEFAULT_RSD_THRESHOLD", "DEFAULT_WARMUP_MS", "FIGURE_PREFIX", "KEY_COLUMNS", "LEARNED_POLICIES", "LOCK_FILE",
    "NO_SWEEP", "POLICIES", "POLICY_SPECS", "RANDOM_POLICY_PROB", "REQUIRED_METRICS", "RESULTS_CSV", "RESULTS_JSON", "RESULTS_SUMS",
    "RUN_JSON", "SYSTEM_PARAMS", "TAIL_COLUMNS", "PointRows", "PointRunner", "candidate_info", "PolicySpec", "PolicyTableError", "ResultStore",
    "SweepConfigError", "SweepSpec", "SweepStateError", "acquire_lock", "available_datasets", "check_param",
    "define_flags", "device_info", "format_value", "git_revision", "learned_table", "learned_table_paths",
    "make_spec", "package_versions", "params_grid", "parse_cell", "parse_float_list", "policy_setup",
    "read_results", "resolve_flagfile_argv", "rows_from_summary", "run_sweep", "session_metadata", "sim_config",
    "simulate_point", "spec_from_flags", "supported_policy_names", "train_missing_tables", "train_policy_table",
    "validate_inputs", "check_dataset_name", "check_simulator_values", "simulator_value",
    "check_out_dir_path", "inspect_out_dir", "OutDirState", "settle_pending_tables", "value_label",
]
