"""Shared test fixtures: a tiny, valid trace built in memory, and the path of the shared data (or a skip)."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# One XLA compilation cache for the test session, shared by the pytest-xdist workers and by the CLI subprocesses the
# tests start: the same small programs compile in many processes. Set before jax is imported (it reads the variable
# then). The first process to load this file (the xdist controller, or the only process) makes it and removes it at
# exit; a JAX_COMPILATION_CACHE_DIR of your own is used as it is and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _xla_cache = tempfile.mkdtemp(prefix="prada-jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)

# XLA's backend optimisation level 0 for the tests: they compile many small programs and run each briefly, so the
# compiler's optimisation passes are most of their CPU time (level 0 halves the suite). Counts and decisions are the
# same; float32 sums can differ from an optimised build in the last bits (1.8e-7 relative on a gsm8k grid), and every
# comparison in the suite is between programs of the same build or against the float64 oracle with a tolerance.
# XLA:CPU's older (non-MLIR) fusion emitters as well, where this jaxlib's XLA has the flag: they compile the
# simulator's scatter-heavy slot programs in about half the time (the suite's compile time halves again), with the
# same counts and float32 sums within the same last bits. XLA aborts a process whose XLA_FLAGS names a flag it does
# not know, so a short Python process asks it first (about 1 s, once per session: the xdist workers and the
# processes tests start inherit XLA_FLAGS).
# PRADA_TESTS_XLA_OPT=default runs the tests on the optimised build (experiments/device_check.py does). Tests that
# start Python processes pass TEST_XLA_FLAGS on in place of XLA_FLAGS (which may set a device count).
if os.environ.get("PRADA_TESTS_XLA_OPT") != "default" and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
    _probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices('cpu')"], capture_output=True,
                            env=dict(os.environ, XLA_FLAGS=FAST_COMPILE_FLAGS[1], JAX_PLATFORMS="cpu"), timeout=300)
    _flags = FAST_COMPILE_FLAGS if _probe.returncode == 0 else FAST_COMPILE_FLAGS[:1]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_flags]).strip()

import numpy as np
import pytest

from prada_jax import constants as C
from prada_jax.traces import TraceData

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# XLA_FLAGS without a device count, for the Python processes tests start (they set their own device counts).
TEST_XLA_FLAGS = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                          if not f.startswith("--xla_force_host_platform_device_count"))
# The older fusion emitters may round a float32 sum of one episode differently in programs of different batch
# shapes (seen: one ulp, 1.3e-7 relative, between 7 episodes on one device and 2 on each of 4): the checks that a
# sharded run equals the one-device run bit for bit run on XLA:CPU's default emitters, as users' runs do. Their
# processes take DEFAULT_EMITTER_XLA_FLAGS; a program compiled in this process takes DEFAULT_EMITTER_OPTIONS
# (`jitted.lower(...).compile(DEFAULT_EMITTER_OPTIONS)`).
DEFAULT_EMITTER_XLA_FLAGS = " ".join(f for f in TEST_XLA_FLAGS.split()
                                     if not f.startswith("--xla_cpu_use_fusion_emitters"))
DEFAULT_EMITTER_OPTIONS = ({"xla_cpu_use_fusion_emitters": True} if DEFAULT_EMITTER_XLA_FLAGS != TEST_XLA_FLAGS
                           else None)
# The real benchmark data (not part of the repository); PRADA_SHARED_DATA overrides the default location.
SHARED_DATA = pathlib.Path(os.environ.get("PRADA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def unit_test_metadata(dataset: str, seed: int, notes: str) -> dict:
    """Valid trace metadata for traces that tests build in memory."""
    return {
        "dataset": dataset,
        "slm": C.SLM_ARCH.to_dict(),
        "llm": C.LLM_ARCH.to_dict(),
        "prm": C.PRM_TEACHER_ARCH.to_dict(),
        "provenance": "synthetic",
        "generator_seed": seed,
        "calibration_targets": None,
        "notes": notes,
    }


def make_tiny_trace(num_problems: int = 6, max_steps: int = 4, feature_dim: int = 3, seed: int = 0) -> TraceData:
    """A small valid trace with varied step counts; values are random but within the format's ranges."""
    rng = np.random.default_rng(seed)
    num_steps = rng.integers(1, max_steps + 1, size=num_problems).astype(np.int32)
    num_steps[0] = max_steps
    mask = np.arange(max_steps)[None, :] < num_steps[:, None]

    def tokens():
        return np.where(mask, rng.integers(5, 60, size=mask.shape), 0).astype(np.int32)

    def probs(low=0.5):
        return np.where(mask, rng.uniform(low, 1.0, size=mask.shape), 0.0).astype(np.float32)

    slm = probs(0.6)
    llm = np.where(mask, np.maximum(slm, probs(0.8)), 0.0).astype(np.float32)
    features = np.where(mask[..., None], rng.normal(size=mask.shape + (feature_dim,)), 0.0).astype(np.float32)
    meta = unit_test_metadata("tiny", seed, "unit-test trace")
    return TraceData(
        query_tokens=rng.integers(20, 200, size=num_problems).astype(np.int32),
        num_steps=num_steps,
        slm_step_tokens=tokens(),
        llm_step_tokens=tokens(),
        slm_step_success=slm,
        llm_step_success=llm,
        prm_context=probs(),
        prm_after_slm=probs(),
        prm_after_llm=probs(),
        features=features,
        metadata=meta,
    )


# ---------------------------------------------------------------------------------------------------------------
# Test tiers. `python -m pytest -m "not slow"` is the edit-test loop (under 90 s on 2 cores); the full suite, with no
# -m, is what CI runs. A test is slow when it compiles a full simulation, trains, or starts Python processes (a
# CLI end to end, a wheel, several JAX processes; a command that tests/cli_inprocess.py runs in the test process and
# that stops at its flags or files is fast); the list is the one place that says which, by file and function
# (all parametrisations), so that no test file needs editing to move a test between tiers. A test file may also mark
# its own tests with @pytest.mark.slow. Regenerate from `python -m pytest -q -n 2 --durations=0` (about 1 s or more
# on an idle machine is slow).
# ---------------------------------------------------------------------------------------------------------------

SLOW_TESTS: dict[str, set[str]] = {
    "test_accounting.py": {
        "test_every_counted_task_is_completed_unfinished_or_dropped", "test_littles_law_for_the_sojourn_time",
        "test_more_server_slots_than_user_slots_runs", "test_no_feasible_upload_makes_prada_exactly_all_slm",
        "test_poisson_draw_is_exact_to_its_support_and_never_drops_silently",
        "test_stable_run_drains_completely_and_counts_nothing_after_the_horizon", "test_student_t_half_width_by_hand",
        "test_utilisations_measure_use_not_reservation"
    },
    "test_bench_oracle.py": {"test_oracle_rows_with_the_repository_entry_point_and_one_line_without"},
    "test_calibration.py": {"test_refit_reproduces_committed_stats"},
    "test_collect.py": {"test_tiny_models_end_to_end_on_real_problems"},
    "test_device_check.py": {
        "test_bad_flags_name_the_flag", "test_sizes_tests_and_files",
        "test_what_runs_out_of_time_is_listed_not_dropped"
    },
    "test_env.py": {
        "test_learned_scheduler_matches_its_oracle_twin", "test_learned_scheduler_with_a_zero_residual_is_theorem2",
        "test_policy_is_permutation_equivariant_and_masks_padding", "test_reset_and_step_jit_and_vmap_with_spaces_and_auto_reset",
        "test_reward_sum_equals_the_reported_utility_and_invariants_hold",
        "test_theorem2_driven_environment_reproduces_simulate_grid_metric_by_metric"
    },
    "test_exact_cap.py": {
        "test_a_cap_that_never_overflows_gives_the_exact_result", "test_a_rerun_of_some_episodes_equals_their_run_in_the_whole_grid",
        "test_fixed_caps_count_overflow_and_the_exact_cap_never_overflows", "test_single_episode_and_oracle_without_a_cap",
        "test_stopping_a_rung_early_does_not_change_the_episodes_that_did_not_overflow",
        "test_the_learned_scheduler_does_not_depend_on_the_cap"
    },
    "test_extending.py": {"test_scheduler_example_of_the_docs_runs_and_matches_its_oracle_twin"},
    "test_fault_injection.py": {"test_two_real_processes_into_one_out_dir"},
    "test_latency_calibrated.py": {"test_calibrated_simulation_matches_the_oracle"},
    "test_latency.py": {"test_more_requests_never_make_a_request_faster", "test_traced_hardware_and_broadcasting"},
    "test_learn_aux.py": {
        "test_delay_sees_the_step_length_under_latency_models_other_than_flops",
        "test_advantage_fit_heldout_r2_above_0_8", "test_delay_fit_heldout_error_below_5_percent",
        "test_eq33_identity_brute_force", "test_server_seconds_truth_and_mean_one_noise"
    },
    "test_learn_checkpoints.py": {"test_resume_matches_uninterrupted_run"},
    "test_learn_evaluate.py": {
        "test_accuracy_bounds_and_random_expectation", "test_oracle_beats_random_at_same_rate",
        "test_path_flops_match_numpy", "test_policy_table_and_npz_round_trip"
    },
    "test_learn_headroom.py": {"test_cli_without_tables_and_bad_flags"},
    "test_learn_mdp.py": {"test_reward_eq21_and_returns_telescope", "test_rollout_batch_targets_match_numpy"},
    "test_learn_nets.py": {
        "test_aux_regressor_film_matches_numpy", "test_delay_net_has_no_film_and_batchnorm_trains",
        "test_policy_and_value_are_four_dense_layers_512_256_512"
    },
    "test_learn_ppo.py": {
        "test_more_beta_fewer_offloads", "test_ppo_recovers_optimal_offload_set",
        "test_same_seed_same_params_other_seed_differs"
    },
    "test_learn_ppo_loss.py": {
        "test_clipped_samples_get_no_policy_gradient", "test_iteration_steps_on_ppo_losses",
        "test_ppo_losses_by_hand", "test_rollout_stores_log_softmax_of_the_action_taken"
    },
    "test_multiprocess.py": {"test_two_processes_match_single_process"},
    "test_packaging.py": {
        "test_installed_copy_has_scripts_configs_and_data", "test_installed_prada_sweep_runs_outside_the_repo",
        "test_installed_scripts_show_their_flags",
    },
    "test_registry_grid.py": {
        "test_cli_grid_end_to_end_prints_the_table_quietly", "test_grid_sweep_rows_and_resume_after_a_kill",
        "test_one_registration_makes_a_policy_available_everywhere", "test_summarize_grid_labels_each_point"
    },
    "test_roofline_study.py": {
        "test_default_slot_is_the_old_one_ms_sweep",
        "test_roofline_mdp_costs_are_the_latency_models_batch1_times",
        "test_small_sweep_at_20ms_slots_accounts_for_every_task", "test_train_cli_roofline_records_its_latency_model"
    },
    "test_sharding.py": {
        "test_four_host_devices_match_single_device", "test_prepare_grid_on_one_device_is_simulate_grid",
        "test_stage2_cost_probes_run_and_offload_nothing",
        "test_use_cpu_cores_sets_the_device_count_before_jax_starts"
    },
    "test_sim_invariants.py": {
        "test_invariant_checks_catch_a_faulty_scheduler", "test_invariants_prada", "test_invariants_random_scheduler",
        "test_invariants_under_overload_drop_and_bandwidth_binding"
    },
    "test_sim_latency_models.py": {
        "test_hardware_leaves_are_validated_and_sweepable",
        "test_more_requests_in_service_never_make_a_request_faster", "test_roofline_invariants_every_slot",
        "test_roofline_matches_oracle", "test_sweep_latency_model_flag"
    },
    "test_sim_oracle.py": {
        "test_exact_scheduler_matches_its_float64_twin",
        "test_exact_scheduler_under_congestion_accounts_for_every_task", "test_prada_matches_oracle"
    },
    "test_sim_oracle_baselines.py": {"test_baseline_matches_oracle"},
    "test_sim_queueing.py": {"test_light_and_heavy_load"},
    "test_sim_run.py": {
        "test_all_slm_never_offloads_and_processing_matches_cost_model",
        "test_batched_drain_freezes_each_episode_at_its_own_end", "test_deterministic_by_key_and_sensitive_to_it",
        "test_skipping_stage2_in_slots_without_candidates_changes_nothing",
        "test_grid_matches_single_runs_and_summary_shapes", "test_policy_builders", "test_table_shape_is_checked"
    },
    "test_stage2.py": {
        "test_case3_abundant_admits_iff_gain_positive", "test_queue_pays_price_avoids_low_bandwidth_deadlock",
        "test_server_free_times_orders_free_then_inflight_then_unavailable"
    },
    "test_stage2_exact.py": {
        "test_c32_padding_with_up_to_twelve_scattered_candidates_matches_brute_force",
        "test_exact_never_worse_than_paper_rule_on_abundant_slots", "test_jax_agrees_with_float64_twin",
        "test_lone_candidate_admitted_at_one_and_a_half_upload_costs", "test_optimal_on_all_random_instances",
        "test_optimum_off_the_lagrangian_hull", "test_subset_sum_instance_found_by_search"
    },
    "test_stage2_price.py": {"test_price_is_feasible_and_not_above_the_old_bisection"},
    "test_sweep.py": {
        "test_cli_smoke_end_to_end_and_resume",
        "test_make_figures_plot_only_from_results", "test_sweep_figures_from_rows"
    },
    "test_sweep_bad_input.py": {"test_run_main_errors_are_one_fatal_line"},
    "test_synth.py": {"test_shipped_traces_match_regeneration"},
    "test_train_cli.py": {
        "test_each_trace_is_loaded_once_per_run_and_resume_is_checked_first",
        "test_second_writer_on_a_dataset_fails_or_waits_with_if_missing",
    },
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path, _, name = item.nodeid.partition("::")
        if name.split("[", 1)[0] in SLOW_TESTS.get(pathlib.PurePath(path).name, ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_trace() -> TraceData:
    return make_tiny_trace()


@pytest.fixture
def shared_data() -> pathlib.Path:
    """Path of ../shared/data; skips the test when it is absent (a user's clone has no ../shared)."""
    if not SHARED_DATA.is_dir() or os.environ.get("PRADA_NO_SHARED_DATA"):
        pytest.skip(f"{SHARED_DATA} is not present (set PRADA_SHARED_DATA to point at the shared data)")
    return SHARED_DATA
