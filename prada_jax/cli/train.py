"""Train pi_theta / V_phi (PPO), A_omega and D_psi per dataset; export policy tables and Figure-4 numbers.

  prada-train --datasets=gsm8k,math500 --beta=10 --seed=0 --epochs=100  # -> results/checkpoints/
  prada-train ... --resume        # continue an interrupted run from its last checkpoint
  prada-train ... --if_missing    # first use: train only datasets without a table (what prada-sweep runs)

(`python -m prada_jax.cli.train ...` is the same command.)

Writes, per dataset, under <ckpt_dir>/<dataset>/: ppo/ (orbax checkpoints of the vmapped beta runs),
models/ (final networks), policy_table.npz (for the simulator), eval.json; and <ckpt_dir>/summary.json.
One writer per <ckpt_dir>/<dataset>: the run holds <ckpt_dir>/<dataset>/.train.lock (filelock) throughout, so a
second run on the same dataset and --ckpt_dir stops at once with a one-line error (or, with --if_missing, waits
and then skips the dataset if the first run trained it). Every flag, trace and file the run reads or merges into
(summary.json, --resume checkpoints) is checked before any work.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from prada_jax import cli_support, data_paths, locks
from prada_jax import constants as C
from prada_jax.learn import aux, checkpoints, evaluate, ppo, tables
from prada_jax.learn import mdp as M
from prada_jax.sim.latency_models import name_problem
from prada_jax.traces import TraceData, TraceError, file_sha256, load_trace, pack_traces

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", list(C.DATASETS), "Datasets (traces/<name>.npz).")
flags.DEFINE_string("trace_dir", "traces", "Directory of the trace files (default: ./traces, else the traces "
                    "shipped with the package).")
flags.DEFINE_float("beta", C.DEFAULT_BETA, "Trade-off weight beta (PRM units per second) of the exported policy.")
flags.DEFINE_list("frontier_betas", ["3", "30"], "Extra betas trained alongside (vmapped) for the frontier "
                  "(Figure 4: e.g. 2,5,20,50; each beta adds the cost of one run).")
flags.DEFINE_integer("seed", 0, "Seed (network init, rollouts, held-out split, measurement noise).")
flags.DEFINE_integer("epochs", 100, "PPO training epochs N (trajectory batches), Table 1.")
flags.DEFINE_integer("update_epochs", 5, "PPO epochs per trajectory batch h, Table 1.")
flags.DEFINE_integer("batch_steps", 1024, "Start (problem, step) pairs per trajectory batch.")
flags.DEFINE_integer("num_minibatches", 4, "Minibatches per PPO epoch.")
flags.DEFINE_float("lr", 5e-5, "Adam learning rate of pi_theta and V_phi (Table 1: 5e-5).")
flags.DEFINE_float("ent_coef", 0.0, "Entropy bonus.")
flags.DEFINE_float("aux_lr", 5e-5, "Adam learning rate of A_omega and D_psi (paper: 5e-5).")
flags.DEFINE_integer("aux_steps", 3000, "Minibatch steps of each auxiliary regressor.")
flags.DEFINE_float("heldout_fraction", 0.2, "Fraction of problems held out of training (evaluation).")
flags.DEFINE_integer("chunk", 10, "PPO iterations per jitted chunk (a checkpoint after each).")
flags.DEFINE_string("ckpt_dir", os.path.join("results", "checkpoints"),
                    "Checkpoint / output directory (default: a new one; the shipped tables live in checkpoints/ and "
                    "are only replaced when you point --ckpt_dir there and pass --overwrite).")
flags.DEFINE_bool("resume", False, "Resume from the latest checkpoints in --ckpt_dir.")
flags.DEFINE_bool("overwrite", False, "Replace a trained policy table already in --ckpt_dir.")
flags.DEFINE_bool("if_missing", False,
                  "First-use training (what prada-sweep and prada-figures run): train only the datasets that have no "
                  "policy table in --ckpt_dir; the others are skipped, untouched. Without it, a dataset that another "
                  "run is training into --ckpt_dir (it holds <ckpt_dir>/<dataset>/.train.lock) is a one-line error "
                  "at once; with it, this run waits for that one and then skips the dataset if its table is there.")
flags.DEFINE_string("latency_model", C.DEFAULT_LATENCY_MODEL,
                    "Step costs D(x, a) of the reward (eq. 21) and D_psi's training truth: 'flops' (eqs. 14-18), "
                    "'roofline', 'calibrated' or 'profile:<csv>' (batch-1 times: Jetson AGX Orin edge for TS, H100 "
                    "server for TL; docs/latency.md). Their steps are ~100x longer, so rescale --beta "
                    "(docs/latency.md, section 7.2).")


def _progress(dataset: str, start: float):
    def log(done, total, metrics):
        elapsed = time.time() - start
        eta = elapsed / max(done, 1) * (total - done)
        main = {k: float(np.asarray(v)[0, -1]) for k, v in metrics.items()}
        logging.info(
            "%s PPO %d/%d  pi_loss %.4f  v_loss %.5f  entropy %.3f  kl %.4f  offload %.3f  %.0fs elapsed, ETA %.0fs",
            dataset, done, total, main["policy_loss"], main["value_loss"], main["entropy"], main["approx_kl"],
            main["greedy_offload_fraction"], elapsed, eta,
        )

    return log


def _fit_errors(models, mdp_all, packed, gap_targets, heldout):
    cfg = models.aux_config
    mask = np.asarray(mdp_all.step_mask) & heldout[:, None]
    pred = np.asarray(aux.predict_advantage(cfg, models.advantage, mdp_all.obs))[mask]
    true = np.asarray(gap_targets)[mask]
    secs = np.asarray(aux.predict_server_seconds(cfg, models.delay, M.reference_context(packed),
                                                 packed.slm_step_tokens))[mask]
    truth = np.asarray(aux.server_seconds_truth(packed, latency_model=FLAGS.latency_model))[mask]
    return {
        "value_gap_rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "value_gap_target_std": float(np.std(true)),
        "value_gap_r2": float(1.0 - np.mean((pred - true) ** 2) / max(np.var(true), 1e-12)),
        "delay_mean_relative_error": float(np.mean(np.abs(secs / truth - 1.0))),
        "delay_max_relative_error": float(np.max(np.abs(secs / truth - 1.0))),
    }


def plan(dataset: str, trace) -> dict:
    """What run_dataset trains for a dataset, from the flags and its trace alone (cheap; no JAX work): the
    training-problem mask, PPOConfig, betas, the run's meta, and what its PPO checkpoints must match to be resumed
    (ppo.resume_meta), so that --resume checkpoints are checked before any work."""
    train = M.split_problems(trace.num_problems, FLAGS.heldout_fraction, FLAGS.seed)
    real_steps = int(np.asarray(trace.step_mask)[train].sum())
    config = ppo.PPOConfig(
        num_iterations=FLAGS.epochs,
        update_epochs=FLAGS.update_epochs,
        batch_steps=min(FLAGS.batch_steps, real_steps),
        num_minibatches=FLAGS.num_minibatches,
        lr_policy=FLAGS.lr,
        lr_value=FLAGS.lr,
        ent_coef=FLAGS.ent_coef,
    )
    betas = [FLAGS.beta] + [float(b) for b in FLAGS.frontier_betas if float(b) != FLAGS.beta]
    meta = {"dataset": dataset, "seed": FLAGS.seed, "heldout_fraction": FLAGS.heldout_fraction}
    if FLAGS.latency_model != C.DEFAULT_LATENCY_MODEL:  # a resumed run must not mix latency models
        meta["latency_model"] = FLAGS.latency_model
    obs_shape = [int(train.sum()), trace.max_steps, trace.feature_dim]
    ppo_meta = ppo.resume_meta(ppo.checkpoint_meta(config, betas, obs_shape, meta))
    return {"train": train, "real_steps": real_steps, "config": config, "betas": betas, "meta": meta,
            "ppo_meta": ppo_meta}


def run_dataset(dataset: str, trace: TraceData, trace_sha256: str) -> dict:
    """Train and evaluate one dataset on its trace (loaded once by validate_flags); write its folder's outputs."""
    t0 = time.time()
    packed = pack_traces(trace)
    p = plan(dataset, trace)
    train, real_steps, config, betas, meta = p["train"], p["real_steps"], p["config"], p["betas"], p["meta"]
    heldout = ~train
    stats = M.feature_stats(packed, train)
    mdp_all = M.make_mdp(packed, stats, latency_model=FLAGS.latency_model)
    mdp_train = evaluate.subset(mdp_all, train)
    out_dir = os.path.join(FLAGS.ckpt_dir, dataset)
    key = jax.random.PRNGKey(FLAGS.seed)
    k_ppo, k_adv, k_delay, k_eval = jax.random.split(key, 4)
    logging.info("%s: %d problems (%d train), %d real training steps, betas %s", dataset, trace.num_problems,
                 int(train.sum()), real_steps, betas)
    state, history = ppo.train_resumable(
        config, k_ppo, betas, mdp_train, os.path.join(out_dir, "ppo"), FLAGS.chunk, FLAGS.resume, meta,
        on_chunk=_progress(dataset, time.time()),
    )
    t_ppo = time.time() - t0

    main = jax.tree.map(lambda x: x[0], state)
    beta = jnp.float32(FLAGS.beta)
    aux_cfg = aux.AuxConfig(steps=FLAGS.aux_steps, lr=FLAGS.aux_lr)
    gap_targets = aux.value_gap_targets(config, main.value, mdp_all, beta)
    adv_model = jax.jit(lambda k: aux.fit_advantage(mdp_all, gap_targets, train, k, aux_cfg))(k_adv)
    delay_model = jax.jit(lambda k: aux.fit_delay(packed, train, k, aux_cfg,
                                                  latency_model=FLAGS.latency_model))(k_delay)
    models = tables.LearnedModels(
        main.policy, main.value, adv_model, delay_model, stats[0], stats[1], beta, config, aux_cfg
    )
    models_dir = os.path.join(out_dir, "models")
    if checkpoints.latest_step(models_dir) is not None:
        import shutil

        shutil.rmtree(models_dir)  # re-derived deterministically from the PPO checkpoint
    checkpoints.save(models_dir, 0, models, {"config": config.to_dict(), "aux_config": aux_cfg.to_dict(), **meta})
    tables.save_table(os.path.join(out_dir, "policy_table.npz"), tables.policy_table(packed, models),
                      trace_sha256=trace_sha256, dataset=dataset, beta=FLAGS.beta,
                      latency_model=FLAGS.latency_model)
    t_aux = time.time() - t0 - t_ppo

    held = evaluate.subset(packed, heldout)
    mdp_held = evaluate.subset(mdp_all, heldout)
    greedy = jax.vmap(lambda p: ppo.greedy_actions(config, p, mdp_held))(state.policy)  # [G, N_held, K]
    result = {
        "dataset": dataset,
        "beta": FLAGS.beta,
        **({} if FLAGS.latency_model == C.DEFAULT_LATENCY_MODEL else {
            "latency_model": FLAGS.latency_model,
            "mean_step_cost_s": {a: float(np.asarray(mdp_all.cost[..., i])[np.asarray(mdp_all.step_mask)].mean())
                                 for i, a in enumerate(("slm", "llm"))},
            "note": "compute_ms_per_task and the checks use the FLOPs model (prada_jax.learn.evaluate)"}),
        "evaluated_on": "held-out problems",
        "single_user": evaluate.single_user(held, greedy[0], k_eval),
        "frontier": [dict(beta=b, **evaluate.summarize(held, greedy[g])) for g, b in enumerate(betas)],
        "fit_errors_heldout": _fit_errors(models, mdp_all, packed, gap_targets, heldout),
        "final_metrics": {k: float(v[0][-1]) for k, v in history.items()},
        "seconds": {"ppo": t_ppo, "aux": t_aux, "total": time.time() - t0},
        "config": config.to_dict(),
        "aux_config": aux_cfg.to_dict(),
    }
    result["frontier"].sort(key=lambda r: r["beta"])
    su, offloads = result["single_user"], [r["offload_fraction"] for r in result["frontier"]]
    result["checks"] = {
        "pi_more_accurate_than_random_at_same_rate": su["pi_theta"]["accuracy"] > su["random"]["accuracy"],
        "pi_cheaper_than_all_llm": su["pi_theta"]["compute_ms_per_task"] < su["all_llm"]["compute_ms_per_task"],
        "offloads_fall_as_beta_grows": all(a >= b for a, b in zip(offloads, offloads[1:])),
    }
    with open(os.path.join(out_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    logging.info("%s checks: %s", dataset, result["checks"])
    logging.info(
        "%s done in %.0fs: acc SLM %.3f | pi %.3f (offload %.3f, %.2f ms) | random %.3f | LLM %.3f (%.2f ms)",
        dataset, result["seconds"]["total"], su["all_slm"]["accuracy"], su["pi_theta"]["accuracy"],
        su["pi_theta"]["offload_fraction"], su["pi_theta"]["compute_ms_per_task"], su["random"]["accuracy"],
        su["all_llm"]["accuracy"], su["all_llm"]["compute_ms_per_task"],
    )
    return result


def validate_flags() -> dict[str, tuple[TraceData, str]]:
    """Every flag and input checked before any work; app.UsageError naming the flag or file otherwise. Returns
    {dataset: (trace, SHA-256 of its file)}: each trace is loaded and validated once per run, here."""
    import math

    if data_paths.is_installed_data(FLAGS.ckpt_dir):
        raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir} is the read-only data shipped with the package; "
                             "pass another --ckpt_dir")
    for name in ("epochs", "update_epochs", "batch_steps", "num_minibatches", "aux_steps", "chunk"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    for name in ("lr", "aux_lr"):
        value = getattr(FLAGS, name)
        if not (math.isfinite(value) and value > 0):
            raise app.UsageError(f"--{name} must be finite and > 0, got {value}")
    if not (math.isfinite(FLAGS.ent_coef) and FLAGS.ent_coef >= 0):
        raise app.UsageError(f"--ent_coef must be finite and >= 0, got {FLAGS.ent_coef}")
    try:
        aux.AuxConfig(steps=FLAGS.aux_steps, lr=FLAGS.aux_lr)
    except ValueError as exc:
        raise app.UsageError(f"--aux_steps/--aux_lr: {exc}") from exc
    if not 0.0 < FLAGS.heldout_fraction < 1.0:
        raise app.UsageError(f"--heldout_fraction must lie in (0, 1), got {FLAGS.heldout_fraction}")
    if not (math.isfinite(FLAGS.beta) and FLAGS.beta >= 0):
        raise app.UsageError(f"--beta must be finite and >= 0, got {FLAGS.beta}")
    try:
        betas = [float(b) for b in FLAGS.frontier_betas]
    except ValueError as exc:
        raise app.UsageError(f"--frontier_betas: {exc}") from exc
    if any(not (math.isfinite(b) and b >= 0) for b in betas):
        raise app.UsageError(f"--frontier_betas must be finite and >= 0, got {betas}")
    problem = name_problem(FLAGS.latency_model)
    if problem:
        raise app.UsageError(f"--latency_model: {problem}")
    if not FLAGS.datasets:
        raise app.UsageError("--datasets: no dataset given")
    repeated = sorted({d for d in FLAGS.datasets if FLAGS.datasets.count(d) > 1})
    if repeated:
        raise app.UsageError(f"--datasets: {repeated} given more than once")
    if C.seed_problem(FLAGS.seed):
        raise app.UsageError(f"--seed {C.seed_problem(FLAGS.seed)}")
    if FLAGS.if_missing and FLAGS.overwrite:
        raise app.UsageError("--if_missing trains only missing tables, --overwrite replaces existing ones: pass one")
    problem = data_paths.output_folder_problem(FLAGS.ckpt_dir)
    if problem:
        raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {problem}")
    try:  # merged into after training: a damaged one must stop the run now, not after it
        tables.read_training_summary(os.path.join(FLAGS.ckpt_dir, "summary.json"))
    except tables.RecordError as exc:
        raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {exc}; fix or remove it") from None
    loaded = {}
    for dataset in FLAGS.datasets:
        path = os.path.join(FLAGS.trace_dir, f"{dataset}.npz")
        try:
            trace = load_trace(path)
        except TraceError as exc:
            raise app.UsageError(f"--datasets: {exc}") from exc
        check_dataset_dir(dataset, trace)
        loaded[dataset] = (trace, file_sha256(path))  # the table records the file it was trained on
    return loaded


def check_dataset_dir(dataset: str, trace) -> None:
    """What this run will write or read in <ckpt_dir>/<dataset> is usable: folders are folders, a trained table is
    only replaced with --overwrite/--resume (skipped with --if_missing), earlier PPO checkpoints only continued
    with --resume, and then only when they were made by the same flags. app.UsageError naming the path otherwise.
    Run before any work and again once the dataset's lock is held (another run may have written in between)."""
    out_dir = os.path.join(FLAGS.ckpt_dir, dataset)
    table = os.path.join(out_dir, "policy_table.npz")
    ppo_dir = os.path.join(out_dir, "ppo")
    for folder in (out_dir, ppo_dir, os.path.join(out_dir, "models")):
        problem = data_paths.output_folder_problem(folder)
        if problem:
            raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {problem}")
    for name in ("policy_table.npz", "eval.json"):
        if os.path.isdir(os.path.join(out_dir, name)):
            raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {os.path.join(out_dir, name)} is a directory, "
                                 "not a file")
    if os.path.exists(table):
        if FLAGS.if_missing:
            return  # skipped, nothing of it is read or written
        if not (FLAGS.resume or FLAGS.overwrite):
            raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir} already holds a trained table {table}; pass "
                                 "--overwrite to replace it, --resume to continue its run, or another --ckpt_dir")
    has_steps = os.path.isdir(ppo_dir) and bool(os.listdir(ppo_dir))
    if has_steps and not FLAGS.resume:
        if not FLAGS.overwrite:
            raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {ppo_dir} holds checkpoints of an earlier run; "
                                 "pass --resume to continue it or --overwrite to start over")
        return  # removed before training
    if has_steps:
        expected = plan(dataset, trace)
        try:
            found = checkpoints.latest_meta(ppo_dir)
        except checkpoints.CheckpointError as exc:
            raise app.UsageError(f"--resume: {exc}") from None
        if found is None:
            return
        step_path, meta = found
        diffs = checkpoints.meta_diff(expected["ppo_meta"], meta)
        stored_iters = meta.get("config", {}).get("num_iterations") if isinstance(meta.get("config"), dict) else None
        if stored_iters is not None and stored_iters != FLAGS.epochs:
            diffs.append(f"config.num_iterations: checkpoint has {stored_iters}, expected {FLAGS.epochs} (--epochs)")
        if diffs:
            raise app.UsageError(f"--resume: {step_path} was made by a run with other flags ({'; '.join(diffs)}); "
                                 "resume with its flags, pass --overwrite to start over, or use another --ckpt_dir")


def lock_datasets(stack, traces: dict) -> list[str]:
    """Take the lock of every dataset (sorted order, so that two waiting runs cannot deadlock), kept until `stack`
    closes; re-check each dataset's folder under its lock. Returns the datasets to train (--if_missing: those
    without a table). A lock held by another run is a one-line app.UsageError, or with --if_missing a wait."""
    todo = []
    for dataset in sorted(FLAGS.datasets):
        out_dir = os.path.join(FLAGS.ckpt_dir, dataset)
        try:
            lock, _ = checkpoints.acquire_lock(out_dir, wait=FLAGS.if_missing)
        except checkpoints.LockHeldError as exc:
            raise app.UsageError(str(exc)) from None
        except locks.LockUnavailable as exc:
            raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {exc}") from None
        stack.callback(lock.release)
        table = os.path.join(out_dir, "policy_table.npz")
        if FLAGS.if_missing and os.path.exists(table):
            logging.info("%s: %s is present (--if_missing): not retrained", dataset, table)
            continue
        check_dataset_dir(dataset, traces[dataset][0])
        todo.append(dataset)
    return [d for d in FLAGS.datasets if d in todo]


SUMMARY_LOCK = ".summary.lock"


def write_summary(results: dict, wall_seconds: float) -> str:
    """Merge `results` into <ckpt_dir>/summary.json (a run over some datasets keeps the others' entries) under
    <ckpt_dir>/.summary.lock, so that runs on other datasets of the same --ckpt_dir never lose an update."""
    import filelock

    path = os.path.join(FLAGS.ckpt_dir, "summary.json")
    lock_path = os.path.join(FLAGS.ckpt_dir, SUMMARY_LOCK)
    try:
        with filelock.FileLock(lock_path, timeout=300):
            previous = tables.read_training_summary(path).get("results", {})
            merged = {**previous, **results}
            summary = {
                "wall_seconds_last_run": wall_seconds,
                "datasets_last_run": list(results),
                "all_checks_pass": all(all(r["checks"].values()) for r in merged.values()),
                "results": merged,
            }
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=1)
            os.replace(path + ".tmp", path)
    except (filelock.Timeout, tables.RecordError) as exc:
        raise app.UsageError(f"{exc} (the trained datasets {list(results)} are saved in their folders; "
                             f"only {path} was not updated)") from None
    return path


def main(argv):
    del argv
    cli_support.quiet_third_party_logs(FLAGS.verbosity)
    FLAGS.trace_dir = data_paths.resolve_data_dir(FLAGS.trace_dir, "traces")
    traces = validate_flags()
    with contextlib.ExitStack() as stack:
        datasets = lock_datasets(stack, traces)
        if not datasets:
            logging.info("every dataset of --datasets=%s has a policy table in %s: nothing to train",
                         ",".join(FLAGS.datasets), FLAGS.ckpt_dir)
            return
        if FLAGS.overwrite and not FLAGS.resume:
            import shutil

            for dataset in datasets:
                shutil.rmtree(os.path.join(FLAGS.ckpt_dir, dataset, "ppo"), ignore_errors=True)
        t0 = time.time()
        try:
            results = {ds: run_dataset(ds, *traces[ds]) for ds in datasets}
        except checkpoints.CheckpointError as exc:
            raise app.UsageError(str(exc)) from exc
        path = write_summary(results, time.time() - t0)
    logging.info("datasets %s done in %.0fs -> %s", list(results), time.time() - t0, path)


def run():
    """Console script prada-train (also python -m prada_jax.cli.train)."""
    cli_support.run_main(main, __doc__, key_flag_modules=(sys.modules[__name__],))


if __name__ == "__main__":
    run()
