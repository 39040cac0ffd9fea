"""Is pi_theta as good as its features allow? Held-out return over All-SLM of the PRM optimum (which sees the
PRM's noise), of a per-feature quadratic ridge rule fitted on the same features (a supervised yardstick) and of the
shipped pi_theta (greedy, from <ckpt_dir>/<dataset>/policy_table.npz, at the beta its table records), per dataset
and beta.

    python -m studies stage1_headroom                  # the four shipped datasets, beta 3 / 10 / 30 (~10 s)
    python -m studies stage1_headroom --datasets=math500 --betas=10

Returns are PRM units per problem (eq. 20 minus All-SLM's), mean ± Student-t 95 % over the held-out problems of
the training split (the seed and held-out fraction that <ckpt_dir>/<dataset>/models records; --seed and
--heldout_fraction when there is no table); "pi - ridge" is the paired difference. The step costs follow the
latency model the table records. A table made from another trace, or without the beta or split it was trained
with, is refused before any work.
"""

from __future__ import annotations

import json
import math
import os

from absl import app, flags

from prada_jax import cli_support
from prada_jax import constants as C

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["gsm8k", "math500", "gaokao2023en", "mmlu_stem"], "Traces under --traces_dir.")
flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz traces.")
flags.DEFINE_string("ckpt_dir", "checkpoints", "Folder of <dataset>/policy_table.npz and <dataset>/models "
                    "(pi_theta; skipped for a dataset without a table).")
flags.DEFINE_list("betas", ["3", "10", "30"], "Betas (PRM units per second) for the optimum and the ridge rule.")
flags.DEFINE_float("heldout_fraction", 0.2, "Held-out share of problems when a dataset has no table.")
flags.DEFINE_integer("seed", 0, "Split seed when a dataset has no table.")
flags.DEFINE_string("out", os.path.join("results", "stage1_headroom.json"), "JSON output.")


def _row(name, s):
    extra = f"   pi - ridge {s['minus_baseline']:+.4f} ± {s['minus_baseline_ci95']:.4f}" if "minus_baseline" in s else ""
    return f"    {name:<9} offload {s['offload_fraction']:.3f}   return {s['return_over_all_slm']:+.4f} ± {s['ci95']:.4f}{extra}"


def _parse_betas() -> list[float]:
    try:
        betas = [float(b) for b in FLAGS.betas]
    except ValueError as err:
        raise app.UsageError(f"--betas: {err}") from None
    if not betas or any(not math.isfinite(b) or b < 0 for b in betas):
        raise app.UsageError(f"--betas: give finite betas >= 0, got {FLAGS.betas}")
    return betas


def _learned_policy(dataset: str, trace_path: str, trace):
    """(table, beta, latency model, seed, held-out fraction) of pi_theta, or None without a table; every field
    checked against the trace and the models checkpoint, else app.UsageError naming the file."""
    from prada_jax.learn import checkpoints, tables

    folder = os.path.join(FLAGS.ckpt_dir, dataset)
    table_path = os.path.join(folder, "policy_table.npz")
    if not os.path.exists(table_path):
        return None
    try:
        table = tables.load_table(table_path, shape=(trace.num_problems, trace.max_steps), trace_path=trace_path)
        recorded = tables.table_metadata(table_path)
        found = checkpoints.latest_meta(os.path.join(folder, "models"))
    except (tables.TableError, checkpoints.CheckpointError) as err:
        raise app.UsageError(str(err)) from None
    if recorded.get("beta") is None:
        raise app.UsageError(f"{table_path}: records no beta; retrain it with prada-train")
    if found is None:
        raise app.UsageError(f"{folder}/models: no checkpoint, so the problems pi_theta was trained on are unknown")
    meta = found[1]
    if not isinstance(meta.get("seed"), int) or not isinstance(meta.get("heldout_fraction"), (int, float)):
        raise app.UsageError(f"{found[0]}: its meta records no seed / heldout_fraction of the training split")
    latency_model = recorded.get("latency_model", C.DEFAULT_LATENCY_MODEL)
    return table, float(recorded["beta"]), latency_model, meta["seed"], float(meta["heldout_fraction"])


def main(argv):
    del argv
    import numpy as np

    from prada_jax import data_paths, traces
    from prada_jax.learn import headroom
    from prada_jax.learn import mdp as M
    from prada_jax.sweep.report import value_label

    betas = _parse_betas()
    if not 0.0 < FLAGS.heldout_fraction < 1.0:
        raise app.UsageError(f"--heldout_fraction must lie in (0, 1), got {FLAGS.heldout_fraction}")
    if os.path.isdir(FLAGS.out):
        raise app.UsageError(f"--out={FLAGS.out}: is a folder; give a file name")
    problem = data_paths.output_folder_problem(os.path.dirname(os.path.abspath(FLAGS.out)))
    if problem:
        raise app.UsageError(f"--out={FLAGS.out}: {problem}")
    FLAGS.traces_dir = data_paths.resolve_data_dir(FLAGS.traces_dir, "traces")
    FLAGS.ckpt_dir = data_paths.resolve_data_dir(FLAGS.ckpt_dir, "checkpoints")
    loaded = {}
    for dataset in FLAGS.datasets:  # every input is read and checked before any work
        path = os.path.join(FLAGS.traces_dir, f"{dataset}.npz")
        try:
            trace = traces.load_trace(path)
        except traces.TraceError as err:
            raise app.UsageError(str(err)) from None
        loaded[dataset] = (trace, _learned_policy(dataset, path, trace))
    results = {}
    for dataset, (trace, learned) in loaded.items():
        table, table_beta, latency_model, seed, heldout = (
            learned or (None, None, C.DEFAULT_LATENCY_MODEL, FLAGS.seed, FLAGS.heldout_fraction))
        packed = traces.pack_traces(trace)
        train = M.split_problems(trace.num_problems, heldout, seed)
        mdp = M.make_mdp(packed, M.feature_stats(packed, train), latency_model=latency_model)
        mask = np.asarray(mdp.step_mask)
        print(f"{dataset}: {int((~train).sum())} held-out problems (seed {seed}, costs: {latency_model})")
        results[dataset] = {}
        for beta in sorted(set(betas + ([table_beta] if learned else []))):
            adv = headroom.offload_advantage(mdp, beta)
            ridge = headroom.ridge_actions(mdp, adv, train)
            row = {"optimum": headroom.summarize_policy(adv, adv > 0.0, mask, ~train),
                   "ridge": headroom.summarize_policy(adv, ridge, mask, ~train)}
            if learned and beta == table_beta:
                greedy = np.asarray(table.nominate_prob) > 0.5
                row["pi_theta"] = headroom.summarize_policy(adv, greedy, mask, ~train, baseline_actions=ridge)
            results[dataset][value_label(beta)] = row  # distinct betas, distinct keys
            print(f"  beta {value_label(beta)}")
            for name, summary in row.items():
                print(_row(name, summary))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    record = {"flags": {f: getattr(FLAGS, f) for f in ("datasets", "betas", "heldout_fraction", "seed")},
              "results": results}
    with open(FLAGS.out, "w", encoding="utf-8") as handle:  # an undefined interval (one problem) is null
        json.dump(_nan_to_none(record), handle, indent=1, allow_nan=False)
    print(f"wrote {FLAGS.out}")


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


if __name__ == "__main__":
    cli_support.run_main(main, __doc__)
