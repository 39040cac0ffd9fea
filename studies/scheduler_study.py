"""Paired comparison of two Stage-2 schedulers on the same Stage-1 table and the same random draws.

    python -m studies scheduler_study                                   # prada vs prada_exact, all studies
    python -m studies scheduler_study --study=table2 --episodes=8       # quick look

Both schedulers see the same episode keys (common random numbers), so the per-episode difference
(candidate - baseline) has a much tighter interval than the two means; every number is the mean over episodes
with its Student-t 95 % interval. Studies: `table2` (Table-3 settings on three datasets, and the same at scarce
bandwidth), `capacity` (M sweep, gsm8k) and `bandwidth` (B sweep, gsm8k, M = 9). Writes
<out_dir>/<study>.json, <out_dir>/scheduler_study.md and <figures_dir>/scheduler_<study>.png.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

from prada_jax import cli_support

FLAGS = flags.FLAGS
flags.DEFINE_string("baseline", "prada", "Registered scheduler of the baseline (the paper's rule).")
flags.DEFINE_string("candidate", "prada_exact", "Registered scheduler compared against it.")
flags.DEFINE_list("study", ["table2", "capacity", "bandwidth"], "Studies to run.")
flags.DEFINE_integer("episodes", 16, "Episodes per point (the same keys for both schedulers).")
flags.DEFINE_integer("horizon_ms", 2000, "Arrival horizon (slots).")
flags.DEFINE_integer("warmup_ms", 200, "Warm-up (slots).")
flags.DEFINE_integer("max_users", 128, "User slots.")
flags.DEFINE_integer("seed", 0, "Episode seed.")
flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz.")
flags.DEFINE_string("ckpt_dir", "checkpoints", "Folder of <dataset>/policy_table.npz (learned Stage 1, A_omega, D_psi).")
flags.DEFINE_string("out_dir", os.path.join("results", "scheduler_study"), "Where JSON and markdown go.")
flags.DEFINE_string("figures_dir", "figures", "Where the PNG figures go.")

METRICS = ("accuracy", "processing_ms", "communication_ms", "queuing_ms", "sojourn_ms", "end_to_end_ms",
           "offload_fraction", "utility", "unfinished", "dropped")
TABLE2_DATASETS = ("gsm8k", "gaokao2023en", "mmlu_stem")
CAPACITIES = (1, 2, 3, 4, 6, 9, 12, 16, 20)
BANDWIDTHS = (1e5, 3e5, 1e6, 3e6, 1e7, 4e7, 1e8, 1e9)
SCARCE_BANDWIDTH = 1e6


def _setup(dataset):
    from prada_jax import traces
    from prada_jax.learn.tables import load_table

    trace = traces.load_trace(os.path.join(FLAGS.traces_dir, f"{dataset}.npz"))
    table = load_table(os.path.join(FLAGS.ckpt_dir, dataset, "policy_table.npz"),
                       shape=(trace.num_problems, trace.max_steps))
    return traces.pack_traces(trace), table


def paired(dataset, grid_points, label_of):
    """Run both schedulers on one grid; return one row per grid point with means, CIs and paired differences."""
    import numpy as np

    from prada_jax import sim
    from prada_jax.sim import metrics as MET

    packed, table = _setup(dataset)
    grid = sim.stack_params([sim.make_params(**g) for g in grid_points])
    max_m = max(int(g.get("server_capacity", 9)) for g in grid_points)
    per = {}
    for name in (FLAGS.baseline, FLAGS.candidate):
        config = sim.SimConfig(num_slots=FLAGS.horizon_ms, warmup_slots=FLAGS.warmup_ms, max_users=FLAGS.max_users,
                               max_servers=max(max_m, 1), scheduler=name)
        t0 = time.perf_counter()
        m = sim.simulate_grid(packed, table, grid, config, FLAGS.episodes, FLAGS.seed)
        per[name] = MET.per_episode(m)
        logging.info("%s %s: %d points x %d episodes in %.1f s", dataset, name, len(grid_points), FLAGS.episodes,
                     time.perf_counter() - t0)
    rows = []
    for g, point in enumerate(grid_points):
        row = {"dataset": dataset, "point": label_of(point), **{k: float(v) for k, v in point.items()}}
        for metric in METRICS:
            for name, tag in ((FLAGS.baseline, "base"), (FLAGS.candidate, "cand")):
                v = per[name][metric][g]
                row[f"{metric}_{tag}"] = float(np.nanmean(v))
                row[f"{metric}_{tag}_ci95"] = float(MET.t_half_width(np.nanstd(v, ddof=1), np.isfinite(v).sum()))
            d = per[FLAGS.candidate][metric][g] - per[FLAGS.baseline][metric][g]
            row[f"{metric}_diff"] = float(np.nanmean(d))
            row[f"{metric}_diff_ci95"] = float(MET.t_half_width(np.nanstd(d, ddof=1), np.isfinite(d).sum()))
        rows.append(row)
    return rows


def study_rows(study):
    base = dict(arrival_rate=3.0, server_capacity=9, bandwidth_bps=4e7)
    if study == "table2":
        rows = []
        for dataset in TABLE2_DATASETS:
            rows += paired(dataset, [base, dict(base, bandwidth_bps=SCARCE_BANDWIDTH)],
                           lambda p: f"B={p['bandwidth_bps']:.0e}")
        return rows
    if study == "capacity":
        return paired("gsm8k", [dict(base, server_capacity=m) for m in CAPACITIES],
                      lambda p: f"M={p['server_capacity']}")
    if study == "bandwidth":
        return paired("gsm8k", [dict(base, bandwidth_bps=b) for b in BANDWIDTHS], lambda p: f"B={p['bandwidth_bps']:.0e}")
    raise app.UsageError(f"--study: unknown {study!r}; choose from table2, capacity, bandwidth")


def markdown(study, rows):
    def cell(r, m, tag, scale=1.0, prec=2):
        return f"{r[f'{m}_{tag}'] * scale:.{prec}f} ± {r[f'{m}_{tag}_ci95'] * scale:.{prec}f}"

    lines = [f"### {study}", "",
             f"| dataset | point | accuracy % ({FLAGS.baseline}) | accuracy % ({FLAGS.candidate}) | Δ accuracy (pts) "
             "| Δ sojourn (ms) | Δ processing | Δ communication | Δ queuing | Δ utility | unfinished (base / cand) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['point']} | {cell(r, 'accuracy', 'base', 100, 1)} | {cell(r, 'accuracy', 'cand', 100, 1)} "
            f"| {cell(r, 'accuracy', 'diff', 100, 2)} | {cell(r, 'sojourn_ms', 'diff')} | {cell(r, 'processing_ms', 'diff')} "
            f"| {cell(r, 'communication_ms', 'diff', 1, 3)} | {cell(r, 'queuing_ms', 'diff')} "
            f"| {cell(r, 'utility', 'diff', 1, 4)} | {r['unfinished_base']:.1f} / {r['unfinished_cand']:.1f} |")
    return "\n".join(lines) + "\n"


def figure(study, rows, path):
    """Each scheduler's mean ± its own CI (top row) and the paired difference Δ = candidate − baseline ± its paired
    CI (bottom row): prada_jax.plots.plot_paired."""
    from prada_jax import plots

    key = {"capacity": "server_capacity", "bandwidth": "bandwidth_bps"}[study]
    first = rows[0]  # the settings this sweep holds fixed, from its own rows
    fixed = (f"B = {first['bandwidth_bps']:g} bit/s" if study == "capacity" else f"M = {first['server_capacity']:g}")
    fixed += f", λ = {first['arrival_rate']:g} arrivals/ms"
    title = (f"{plots.TEXT_LABELS.get(FLAGS.candidate, FLAGS.candidate)} vs "
             f"{plots.TEXT_LABELS.get(FLAGS.baseline, FLAGS.baseline)}: {study} sweep (gsm8k, {fixed}), "
             f"same Stage-1 table and episode keys\n{FLAGS.episodes} episodes of {FLAGS.horizon_ms} ms "
             f"(warm-up {FLAGS.warmup_ms} ms)")
    return plots.plot_paired(rows, key, path, FLAGS.baseline, FLAGS.candidate, FLAGS.episodes, title)


def main(argv):
    del argv
    from prada_jax import sim

    for name in (FLAGS.baseline, FLAGS.candidate):
        if name not in sim.SCHEDULERS:
            raise app.UsageError(f"--baseline/--candidate: {name!r} is not a registered scheduler {sorted(sim.SCHEDULERS)}")
    if FLAGS.episodes < 2:
        raise app.UsageError("--episodes: a 95 % interval needs at least 2 episodes")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    os.makedirs(FLAGS.figures_dir, exist_ok=True)
    md = [f"Paired comparison, {FLAGS.candidate} - {FLAGS.baseline}: mean ± 95 % CI (Student t) over {FLAGS.episodes} "
          f"episodes of {FLAGS.horizon_ms} ms (warm-up {FLAGS.warmup_ms} ms), same draws; Δ = candidate - baseline.", ""]
    for study in FLAGS.study:
        rows = study_rows(study)
        with open(os.path.join(FLAGS.out_dir, f"{study}.json"), "w", encoding="utf-8") as handle:
            json.dump({"flags": {f: getattr(FLAGS, f) for f in ("baseline", "candidate", "episodes", "horizon_ms",
                                                               "warmup_ms", "max_users", "seed")}, "rows": rows},
                      handle, indent=1)
        md.append(markdown(study, rows))
        if study in ("capacity", "bandwidth"):
            logging.info("wrote %s", figure(study, rows, os.path.join(FLAGS.figures_dir, f"scheduler_{study}.png")))
        print(md[-1], flush=True)
    with open(os.path.join(FLAGS.out_dir, "scheduler_study.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(md))


if __name__ == "__main__":
    cli_support.run_main(main, __doc__)  # every CPU core as a device (--cpu_devices), then main
