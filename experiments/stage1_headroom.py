"""Is pi_theta as good as its features allow? Held-out return over All-SLM of the PRM optimum (which sees the
PRM's noise), of a quadratic ridge rule fitted on the same features (a supervised yardstick) and of the shipped
pi_theta (greedy, from <ckpt_dir>/<dataset>/policy_table.npz, trained at --beta), per dataset and beta.

    python experiments/stage1_headroom.py                  # the four shipped datasets, beta 3 / 10 / 30 (~20 s)
    python experiments/stage1_headroom.py --datasets=math500 --betas=10

Returns are PRM units per problem (eq. 20 minus All-SLM's), mean ± Student-t 95 % over the held-out problems
(the split of experiments/train.py: --heldout_fraction, --seed); "pi - ridge" is the paired difference.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from prada_jax import cli_support  # noqa: E402
from prada_jax import constants as C  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["gsm8k", "math500", "gaokao2023en", "mmlu_stem"], "Traces under --traces_dir.")
flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz traces.")
flags.DEFINE_string("ckpt_dir", "checkpoints", "Folder of <dataset>/policy_table.npz (pi_theta; skipped if absent).")
flags.DEFINE_list("betas", ["3", "10", "30"], "Betas (PRM units per second) for the optimum and the ridge rule.")
flags.DEFINE_float("beta", C.DEFAULT_BETA, "The beta pi_theta's table was trained at.")
flags.DEFINE_float("heldout_fraction", 0.2, "Held-out share of problems (as experiments/train.py).")
flags.DEFINE_integer("seed", 0, "Split seed (as experiments/train.py).")
flags.DEFINE_string("out", os.path.join("results", "stage1_headroom.json"), "JSON output.")


def _row(name, s):
    extra = f"   pi - ridge {s['minus_baseline']:+.4f} ± {s['minus_baseline_ci95']:.4f}" if "minus_baseline" in s else ""
    return f"    {name:<9} offload {s['offload_fraction']:.3f}   return {s['return_over_all_slm']:+.4f} ± {s['ci95']:.4f}{extra}"


def main(argv):
    del argv
    import numpy as np

    from prada_jax import traces
    from prada_jax.learn import headroom
    from prada_jax.learn import mdp as M
    from prada_jax.learn.tables import TableError, load_table
    from prada_jax.sweep.report import value_label

    betas = [float(b) for b in FLAGS.betas]
    if any(not np.isfinite(b) or b < 0 for b in betas + [FLAGS.beta]):
        raise app.UsageError(f"--betas/--beta: every beta must be finite and >= 0, got {betas} and {FLAGS.beta}")
    if not 0.0 < FLAGS.heldout_fraction < 1.0:
        raise app.UsageError(f"--heldout_fraction must lie in (0, 1), got {FLAGS.heldout_fraction}")
    loaded = {}
    for dataset in FLAGS.datasets:  # every input is read and checked before any work
        table_path = os.path.join(FLAGS.ckpt_dir, dataset, "policy_table.npz")
        try:
            trace = traces.load_trace(os.path.join(FLAGS.traces_dir, f"{dataset}.npz"))
            table = (load_table(table_path, shape=(trace.num_problems, trace.max_steps))
                     if os.path.exists(table_path) else None)
        except (traces.TraceError, TableError) as err:
            raise app.UsageError(str(err)) from err
        loaded[dataset] = (trace, table)
    results = {}
    for dataset, (trace, table) in loaded.items():
        packed = traces.pack_traces(trace)
        train = M.split_problems(trace.num_problems, FLAGS.heldout_fraction, FLAGS.seed)
        mdp = M.make_mdp(packed, M.feature_stats(packed, train))
        mask = np.asarray(mdp.step_mask)
        print(f"{dataset}: {int((~train).sum())} held-out problems")
        results[dataset] = {}
        for beta in sorted(set(betas + ([FLAGS.beta] if table is not None else []))):
            adv = headroom.offload_advantage(mdp, beta)
            ridge = headroom.ridge_actions(mdp, adv, train)
            row = {"optimum": headroom.summarize_policy(adv, adv > 0.0, mask, ~train),
                   "ridge": headroom.summarize_policy(adv, ridge, mask, ~train)}
            if table is not None and beta == FLAGS.beta:
                greedy = np.asarray(table.nominate_prob) > 0.5
                row["pi_theta"] = headroom.summarize_policy(adv, greedy, mask, ~train, baseline_actions=ridge)
            results[dataset][value_label(beta)] = row  # distinct betas, distinct keys
            print(f"  beta {value_label(beta)}")
            for name, summary in row.items():
                print(_row(name, summary))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        json.dump({"flags": {f: getattr(FLAGS, f) for f in ("datasets", "betas", "beta", "heldout_fraction", "seed")},
                   "results": results}, handle, indent=1)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    cli_support.run_main(main, __doc__)
