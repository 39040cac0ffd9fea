"""Train pi_theta / V_phi (PPO), A_omega and D_psi per dataset; export policy tables and Figure-4 numbers.

  prada-train --datasets=gsm8k,math500 --beta=10 --seed=0 --epochs=100  # -> results/checkpoints/
  prada-train ... --resume        # continue an interrupted run from its last checkpoint

(`python experiments/train.py ...` in a source checkout is the same command.)

Writes, per dataset, under <ckpt_dir>/<dataset>/: ppo/ (orbax checkpoints of the vmapped beta runs),
models/ (final networks), policy_table.npz (for the simulator), eval.json; and <ckpt_dir>/summary.json.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from prada_jax import cli_support, data_paths
from prada_jax import constants as C
from prada_jax.learn import aux, checkpoints, evaluate, ppo, tables
from prada_jax.learn import mdp as M
from prada_jax.traces import TraceError, load_trace, pack_traces

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
flags.DEFINE_string("latency_model", C.DEFAULT_LATENCY_MODEL,
                    "Step costs D(x, a) of the reward (eq. 21) and D_psi's training truth: 'flops' (eqs. 14-18) or "
                    "'roofline' (batch-1 roofline times: Jetson AGX Orin edge for TS, H100 server for TL; "
                    "docs/latency.md). Roofline steps are ~100x longer, so rescale --beta (docs/latency.md, section 6).")


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
    secs = np.asarray(aux.predict_server_seconds(cfg, models.delay, M.reference_context(packed)))[mask]
    truth = np.asarray(aux.server_seconds_truth(packed, latency_model=FLAGS.latency_model))[mask]
    return {
        "value_gap_rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "value_gap_target_std": float(np.std(true)),
        "value_gap_r2": float(1.0 - np.mean((pred - true) ** 2) / max(np.var(true), 1e-12)),
        "delay_mean_relative_error": float(np.mean(np.abs(secs / truth - 1.0))),
        "delay_max_relative_error": float(np.max(np.abs(secs / truth - 1.0))),
    }


def run_dataset(dataset: str) -> dict:
    t0 = time.time()
    trace = load_trace(os.path.join(FLAGS.trace_dir, f"{dataset}.npz"))
    packed = pack_traces(trace)
    train = M.split_problems(trace.num_problems, FLAGS.heldout_fraction, FLAGS.seed)
    heldout = ~train
    stats = M.feature_stats(packed, train)
    mdp_all = M.make_mdp(packed, stats, latency_model=FLAGS.latency_model)
    mdp_train = evaluate.subset(mdp_all, train)
    real_steps = int(np.asarray(mdp_train.step_mask).sum())
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
    out_dir = os.path.join(FLAGS.ckpt_dir, dataset)
    key = jax.random.PRNGKey(FLAGS.seed)
    k_ppo, k_adv, k_delay, k_eval = jax.random.split(key, 4)
    meta = {"dataset": dataset, "seed": FLAGS.seed, "heldout_fraction": FLAGS.heldout_fraction}
    if FLAGS.latency_model != C.DEFAULT_LATENCY_MODEL:  # a resumed run must not mix latency models
        meta["latency_model"] = FLAGS.latency_model
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
    trace_path = os.path.join(FLAGS.trace_dir, f"{dataset}.npz")
    tables.save_table(os.path.join(out_dir, "policy_table.npz"), tables.policy_table(packed, models),
                      trace_sha256=tables.file_sha256(trace_path), dataset=dataset, beta=FLAGS.beta,
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


def validate_flags() -> None:
    """Every flag and input checked before any work; app.UsageError naming the flag or file otherwise."""
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
    from prada_jax.sim.latency_models import LATENCY_MODELS

    if FLAGS.latency_model not in LATENCY_MODELS:
        raise app.UsageError(f"--latency_model: {FLAGS.latency_model!r} is not one of {sorted(LATENCY_MODELS)}")
    if not FLAGS.datasets:
        raise app.UsageError("--datasets: no dataset given")
    for dataset in FLAGS.datasets:
        path = os.path.join(FLAGS.trace_dir, f"{dataset}.npz")
        try:
            load_trace(path)
        except TraceError as exc:
            raise app.UsageError(f"--datasets: {exc}") from exc
        table = os.path.join(FLAGS.ckpt_dir, dataset, "policy_table.npz")
        if os.path.exists(table) and not (FLAGS.resume or FLAGS.overwrite):
            raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir} already holds a trained table {table}; pass "
                                 "--overwrite to replace it, --resume to continue its run, or another --ckpt_dir")
        ppo_dir = os.path.join(FLAGS.ckpt_dir, dataset, "ppo")
        if os.path.isdir(ppo_dir) and os.listdir(ppo_dir) and not FLAGS.resume:
            if not FLAGS.overwrite:
                raise app.UsageError(f"--ckpt_dir={FLAGS.ckpt_dir}: {ppo_dir} holds checkpoints of an earlier run; "
                                     "pass --resume to continue it or --overwrite to start over")


def main(argv):
    del argv
    cli_support.quiet_third_party_logs(FLAGS.verbosity)
    FLAGS.trace_dir = data_paths.resolve_data_dir(FLAGS.trace_dir, "traces")
    validate_flags()
    if FLAGS.overwrite and not FLAGS.resume:
        import shutil

        for dataset in FLAGS.datasets:
            shutil.rmtree(os.path.join(FLAGS.ckpt_dir, dataset, "ppo"), ignore_errors=True)
    t0 = time.time()
    try:
        results = {ds: run_dataset(ds) for ds in FLAGS.datasets}
    except checkpoints.CheckpointError as exc:
        raise app.UsageError(str(exc)) from exc
    os.makedirs(FLAGS.ckpt_dir, exist_ok=True)
    path = os.path.join(FLAGS.ckpt_dir, "summary.json")
    # Merge into the existing summary: a run over some datasets must not drop the others' entries.
    previous = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f).get("results", {})
    merged = {**previous, **results}
    summary = {
        "wall_seconds_last_run": time.time() - t0,
        "datasets_last_run": list(results),
        "all_checks_pass": all(all(r["checks"].values()) for r in merged.values()),
        "results": merged,
    }
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    os.replace(path + ".tmp", path)
    logging.info("datasets %s done in %.0fs -> %s", list(results), summary["wall_seconds_last_run"], path)


def run():
    """Console script prada-train (and experiments/train.py)."""
    cli_support.run_main(main, __doc__, key_flag_modules=(sys.modules[__name__],))


if __name__ == "__main__":
    run()
