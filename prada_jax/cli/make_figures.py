"""Regenerate figures/: Table 2 (markdown, ours next to the paper's) and Figures 4-8, from real runs.

    prada-figures                      # run (or resume) every sweep, then draw
    prada-figures --plot_only          # redraw from results already on disk
    prada-figures --episodes=4 --horizon_ms=500 --results_dir=results/quick \
        --figures_dir=figures/quick    # a quick, low-precision pass

(`python -m prada_jax.cli.make_figures ...` is the same command.)

Sweeps come from the shipped prada_jax/configs/{table2,capacity,bandwidth}.cfg (plus arrival, beta, and the
roofline-latency study roofline_{table2,capacity,bandwidth} and its rerun on the calibrated latency model
calibrated_{table2,capacity} of docs/latency.md with --only) and write into
<results_dir>/<name>/ (resumable, see docs/experiments.md). Figure 4 is the single-user
evaluation that prada-train stores in <ckpt_dir>/<dataset>/eval.json (trained on first use).

Every input is checked before any work (sweep flags, traces, learned tables, eval.json; with --plot_only every
results.json / run.json), and all results are gathered before anything is drawn: an error is one line naming the
file or flag, and then --figures_dir is left as it was (no folder made, provenance.json untouched).
"""

from __future__ import annotations

import datetime
import json
import os
import sys

from absl import app, flags, logging

from prada_jax import cli_support, data_paths, plots, sweep
from prada_jax import constants as C
from prada_jax.learn import tables
from prada_jax.traces import TraceError

ALL = ("table2", "fig4", "capacity", "bandwidth", "arrival", "beta",
       "roofline_table2", "roofline_capacity", "roofline_bandwidth",  # roofline_*, calibrated_*: docs/latency.md
       "calibrated_table2", "calibrated_capacity")
DEFAULT = ("table2", "fig4", "capacity", "bandwidth")
FIG4_DATASETS = ("gsm8k", "math500", "gaokao2023en", "mmlu_stem")

FLAGS = flags.FLAGS
flags.DEFINE_list("only", list(DEFAULT), f"What to (re)generate, from {list(ALL)}.")
flags.DEFINE_string("results_dir", "results", "Sweep results go to <results_dir>/<config name>/.")
flags.DEFINE_string("figures_dir", "figures", "Where figures, table2.md and provenance.json are written.")
flags.DEFINE_bool("plot_only", False, "Draw from results on disk; run nothing.")
flags.DEFINE_bool("overwrite", False, "Passed to the sweeps: discard results of different flags.")
flags.DEFINE_integer("episodes", None, "Override --episodes of every sweep config.")
flags.DEFINE_integer("horizon_ms", None, "Override --horizon_ms of every sweep config.")
flags.DEFINE_integer("warmup_ms", None, "Override --warmup_ms of every sweep config.")
flags.DEFINE_string("ckpt_dir", "checkpoints", "Learned policies / single-user evaluation (prada-train); default: "
                    "./checkpoints, else the tables shipped with the package.")
flags.DEFINE_string("traces_dir", "traces", "Folder of <dataset>.npz traces (default: ./traces, else the shipped "
                    "traces).")


def sweep_spec(name: str) -> tuple[sweep.SweepSpec, str]:
    """Parse the shipped prada_jax/configs/<name>.cfg (with this command's overrides) into a spec and its out_dir."""
    fv = flags.FlagValues()
    sweep.define_flags(fv)
    out_dir = os.path.join(FLAGS.results_dir, name)
    argv = ["make_figures", f"--flagfile={os.path.join(sweep.CONFIG_DIR, name + '.cfg')}", f"--out_dir={out_dir}",
            f"--ckpt_dir={FLAGS.ckpt_dir}", f"--traces_dir={FLAGS.traces_dir}"]
    for flag in ("episodes", "horizon_ms", "warmup_ms"):
        if getattr(FLAGS, flag) is not None:
            argv.append(f"--{flag}={getattr(FLAGS, flag)}")
    fv(argv)
    return sweep.spec_from_flags(fv), out_dir


def read_sweep_results(out_dir: str) -> tuple[dict, list[dict]]:
    """sweep.read_results, with a damaged results.json a one-line app.UsageError naming it."""
    path = os.path.join(out_dir, sweep.RESULTS_JSON)
    try:
        config, rows = sweep.read_results(out_dir)
        if not isinstance(config, dict):
            raise TypeError(f"'config' is {type(config).__name__}, not an object")
        if not all(isinstance(r, dict) and isinstance(r.get("dataset"), str) and isinstance(r.get("policy"), str)
                   for r in rows):
            raise ValueError("every row must be an object naming its 'dataset' and 'policy'")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise app.UsageError(f"{path}: unreadable sweep results ({type(err).__name__}: {err}); rerun the sweep "
                             "(without --plot_only) or remove the folder") from None
    return config, rows


def sweep_rows(name: str, spec: sweep.SweepSpec, out_dir: str) -> tuple[dict, list[dict], str, dict]:
    """(config, rows, out_dir, provenance) of sweep `name`: run (or resumed) first unless --plot_only."""
    if not FLAGS.plot_only:
        sweep.run_sweep(spec, out_dir, overwrite=FLAGS.overwrite, argv=sys.argv)
    config, rows = read_sweep_results(out_dir)
    if config != spec.to_config():
        raise app.UsageError(f"{out_dir} holds results of other flags than {name}.cfg with these overrides")
    missing = [p for p in spec.points() if p not in {(r["dataset"], r["policy"]) for r in rows}]
    if missing:
        raise app.UsageError(f"{out_dir} is incomplete (missing {missing}); run without --plot_only")
    return config, rows, out_dir, provenance_of(config, out_dir)


# Sweep -> the (plot, file, title, options) it draws, all on gsm8k (title None: the plot's default). Titles are
# formatted with title_fields(config), so that what they state comes from the results' own config.
_ROOFLINE = {"delay_scale": "log", "note_overlaps": True}  # pi_theta-only's overloaded points: ~65,000 ms
SWEEP_FIGURES = {
    "capacity": (
        (plots.plot_performance, "fig5_capacity_performance.png",
         "Fig. 5: performance vs server parallel capacity M (gsm8k)", {}),
        (plots.plot_delay_decomposition, "fig6_capacity_delays.png", "Fig. 6: delay decomposition vs M (gsm8k)", {}),
    ),
    "bandwidth": (
        (plots.plot_delay_decomposition, "fig7_bandwidth_delays.png",
         "Fig. 7: delay decomposition vs total bandwidth B (gsm8k, M=9)", {}),
        (plots.plot_performance, "fig8_bandwidth_performance.png",
         "Fig. 8: performance vs total bandwidth B (gsm8k, M=9)", {}),
    ),
    "roofline_capacity": (
        (plots.plot_performance, "latency_capacity_performance.png",
         "Roofline latency: performance vs server capacity M (gsm8k, {slot_ms:g} ms slots, {tasks_per_s:g} tasks/s)",
         _ROOFLINE),
        (plots.plot_delay_decomposition, "latency_capacity_delays.png",
         "Roofline latency: delay decomposition vs M (gsm8k, {slot_ms:g} ms slots, {tasks_per_s:g} tasks/s)",
         _ROOFLINE),
    ),
    "roofline_bandwidth": (
        (plots.plot_delay_decomposition, "latency_bandwidth_delays.png",
         "Roofline latency: delay decomposition vs total bandwidth B (gsm8k, M=9, {slot_ms:g} ms slots, "
         "{tasks_per_s:g} tasks/s)", _ROOFLINE),
        (plots.plot_performance, "latency_bandwidth_performance.png",
         "Roofline latency: performance vs total bandwidth B (gsm8k, M=9, {slot_ms:g} ms slots, "
         "{tasks_per_s:g} tasks/s)", _ROOFLINE),
    ),
    "calibrated_capacity": (
        (plots.plot_performance, "calibrated_capacity_performance.png",
         "Calibrated latency: performance vs server capacity M (gsm8k, {slot_ms:g} ms slots, {tasks_per_s:g} tasks/s)",
         _ROOFLINE),
        (plots.plot_delay_decomposition, "calibrated_capacity_delays.png",
         "Calibrated latency: delay decomposition vs M (gsm8k, {slot_ms:g} ms slots, {tasks_per_s:g} tasks/s)",
         _ROOFLINE),
    ),
    "arrival": (
        (plots.plot_performance, "arrival_performance.png", None, {}),
        (plots.plot_delay_decomposition, "arrival_delays.png", None, {}),
    ),
    "beta": (
        (plots.plot_frontier, "beta_frontier.png",
         "gsm8k: accuracy-delay frontier over the Stage-2 weight β (1/s); Stage-1 table at β = {table_beta:g}", {}),
        (plots.plot_performance, "beta_performance.png",
         "gsm8k: performance vs the Stage-2 weight β; Stage-1 table at β = {table_beta:g}", {}),
    ),
}


def title_fields(config: dict) -> dict:
    """What the SWEEP_FIGURES titles may state, from a sweep's config (slot length, load, Stage-1 table beta)."""
    rate = config.get("params", {}).get("arrival_rate")
    return {"slot_ms": float(config.get("slot_ms", 1.0)), "table_beta": config.get("table_beta", float("nan")),
            "tasks_per_s": float("nan") if rate is None else 1e3 * rate}


def read_eval(eval_path: str) -> dict:
    """A Figure-4 training record (eval.json) checked for every key fig4_rows reads; app.UsageError naming it."""
    try:
        return tables.read_eval_record(eval_path, single_user=True)
    except tables.RecordError as err:
        raise app.UsageError(f"{err}; retrain it (prada-train) or remove it to train it on first use") from None


def check_fig4_inputs() -> None:
    """Before any work: every eval.json Figure 4 will read is present (with --plot_only) and well formed."""
    for dataset in FIG4_DATASETS:
        _, eval_path = sweep.learned_table_paths(FLAGS.ckpt_dir, dataset)
        if os.path.lexists(eval_path):
            read_eval(eval_path)
        elif FLAGS.plot_only:
            raise app.UsageError(f"{eval_path} not found; run without --plot_only to train it")


def fig4_rows() -> tuple[list[dict], list[str]]:
    """Fig. 4 rows from <ckpt_dir>/<dataset>/eval.json (trained on first use at the Table-3 beta)."""
    rows, sources = [], []
    for dataset in FIG4_DATASETS:
        _, eval_path = sweep.learned_table_paths(FLAGS.ckpt_dir, dataset)
        if not os.path.exists(eval_path):
            if FLAGS.plot_only:
                raise app.UsageError(f"{eval_path} not found; run without --plot_only to train it")
            sweep.train_policy_table(dataset, C.DEFAULT_BETA, FLAGS.traces_dir, FLAGS.ckpt_dir)
        evaluation = read_eval(eval_path)
        su = evaluation["single_user"]
        # The problems every accuracy is averaged over (for the binomial intervals); None if not recorded.
        n = su.get("num_problems")
        common = dict(dataset=dataset, cost_unit="TFLOP per task", evaluated_on=evaluation.get("evaluated_on"),
                      num_problems=n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None)
        for method, key in (("all_slm", "all_slm"), ("all_llm", "all_llm"), ("pi_only", "pi_theta"), ("random_policy", "random")):
            rows.append(dict(common, method=method, accuracy=su[key]["accuracy"], cost=su[key]["tflop_per_task"]))
        for r in su["rsd"]:
            rows.append(dict(common, method="rsd", accuracy=r["accuracy"], cost=r["tflop_per_task"]))
        for r in evaluation.get("frontier", []):  # pi_theta trained at other betas: its accuracy-cost frontier
            rows.append(dict(common, method="pi_frontier", accuracy=r["accuracy"], cost=r["tflop_per_task"]))
        sources.append({"eval": eval_path, "beta": evaluation["beta"], "evaluated_on": evaluation.get("evaluated_on")})
    return rows, sources


def provenance_of(config: dict, out_dir: str) -> dict:
    path = os.path.join(out_dir, sweep.RUN_JSON)
    try:
        with open(path, encoding="utf-8") as handle:
            run = json.load(handle)
        git = [s["git"] for s in run["sessions"]]
        for g in git:
            str(g["commit"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise app.UsageError(f"{path}: unreadable sweep metadata ({type(err).__name__}: {err}); rerun the sweep "
                             "(without --plot_only) or remove the folder") from None
    return {"results": out_dir, "config": config, "git": git}


def read_provenance(path: str) -> dict:
    """provenance.json of --figures_dir ({} when absent); a damaged one is an app.UsageError (never replaced)."""
    if not os.path.lexists(path):
        return {}
    try:
        return tables.read_json_object(path)
    except tables.RecordError as err:
        raise app.UsageError(f"--figures_dir={FLAGS.figures_dir}: {err}; fix or remove it") from None


def gather(names: list[str]) -> dict:
    """Check every input of `names` (before any work), then run or read what each figure needs; nothing is
    written to --figures_dir here. Sweep / trace / table errors become one-line app.UsageErrors."""
    try:
        specs = {}
        for name in names:
            if name == "fig4":
                check_fig4_inputs()
                continue
            specs[name] = sweep_spec(name)
            if not FLAGS.plot_only:
                sweep.validate_inputs(specs[name][0])  # traces and existing tables, before any sweep runs
        return {name: fig4_rows() if name == "fig4" else sweep_rows(name, *specs[name]) for name in names}
    except (sweep.SweepConfigError, sweep.SweepStateError, sweep.PolicyTableError, TraceError) as err:
        raise app.UsageError(str(err)) from err


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments {argv[1:]}")
    cli_support.quiet_third_party_logs(FLAGS.verbosity)  # no TPU probe / orbax INFO unless asked
    FLAGS.traces_dir = data_paths.resolve_data_dir(FLAGS.traces_dir, "traces")
    FLAGS.ckpt_dir = data_paths.resolve_data_dir(FLAGS.ckpt_dir, "checkpoints")
    unknown = [o for o in FLAGS.only if o not in ALL]
    if unknown:
        raise app.UsageError(f"--only: unknown {unknown}; choose from {list(ALL)}")
    names = [o for o in ALL if o in FLAGS.only]
    if not names:
        raise app.UsageError(f"--only: nothing selected; choose from {list(ALL)}")
    fig = FLAGS.figures_dir
    problem = data_paths.output_folder_problem(fig)
    if problem:
        raise app.UsageError(f"--figures_dir={fig}: {problem}")
    problem = data_paths.output_folder_problem(FLAGS.results_dir, writable=False)
    if problem:  # named here: each sweep's out_dir <results_dir>/<name> is no flag of this command
        raise app.UsageError(f"--results_dir={FLAGS.results_dir}: {problem}")
    prov_path = os.path.join(fig, "provenance.json")
    provenance = read_provenance(prov_path)
    gathered = gather(names)  # every input read (and every sweep run) before anything is drawn
    os.makedirs(fig, exist_ok=True)
    made = []
    try:
        for name in names:
            if name == "fig4":
                rows, sources = gathered[name]
                made.append(plots.plot_single_user(rows, os.path.join(fig, "fig4_single_user.png")))
                provenance["fig4_single_user.png"] = {"results": sources}
                continue
            config, rows, out_dir, prov = gathered[name]
            if name == "table2":
                path = os.path.join(fig, "table2.md")
                commits = sorted({str(g["commit"])[:10] for g in prov["git"]})
                header = (
                    "# Table 2: PRADA across three benchmarks (ours vs the paper)\n\n"
                    f"Generated {datetime.date.today().isoformat()} by `prada-figures` from "
                    f"`{out_dir}` ({config['episodes']} episodes of {config['horizon_ms']} ms, warm-up "
                    f"{config['warmup_ms']} ms, Table-3 system parameters; commit {', '.join(commits)}). "
                    f"Ours: mean ± 95 % CI (Student t) over {config['episodes']} episodes; delays in ms per task "
                    "(completed + unfinished; every counted task is completed, unfinished or dropped, and the rows "
                    "below show the last two). Processing and communication are exact work durations, queuing is "
                    "whole 1 ms slots; the sojourn time adds each task's own slot rounding (docs/simulator.md). "
                    "'–': the paper reports no value.\n\n"
                )
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(header + plots.table2_markdown(rows))
                made.append(path)
                made.append(plots.plot_bars(rows, os.path.join(fig, "table2_bars.png"), title="Table 2 policies"))
                provenance["table2.md"] = provenance["table2_bars.png"] = prov
            elif name in ("roofline_table2", "calibrated_table2"):
                model = config.get("latency_model", "roofline")
                path = os.path.join(fig, "latency_table2.md" if name == "roofline_table2" else f"{model}_table2.md")
                commits = sorted({str(g["commit"])[:10] for g in prov["git"]})
                slot = config.get("slot_ms", 1.0)
                header = (
                    f"# Table 2 under the {model} latency model (docs/latency.md)\n\n"
                    f"Generated {datetime.date.today().isoformat()} by `prada-figures "
                    f"--only={name}` from `{out_dir}` (commit {', '.join(commits)}): H100 server, Jetson AGX "
                    f"Orin edge, {slot:g} ms slots, {1e3 * config['params']['arrival_rate']:g} tasks/s, "
                    f"M = {config['params']['server_capacity']}, B = {config['params']['bandwidth_bps']:g} bit/s, "
                    f"beta = {config['params']['beta']:g}/s, {config['episodes']} episodes of "
                    f"{config['horizon_ms'] / 1e3:g} s (warm-up {config['warmup_ms'] / 1e3:g} s). Mean ± 95 % CI "
                    "(Student t) over episodes; delays in ms per task. "
                    + ("Roofline times, not GPU measurements. " if model == "roofline" else
                       "Roofline times with per-device efficiencies and overheads fitted to published measurements "
                       "(prada_jax/calibration/published_latency.csv). ")
                    + "The paper's columns are left out: its numbers come from the FLOPs latency model.\n\n"
                )
                policies = [p for p in ("all_slm", "pi_only", "prada", "random_scheduler") if p in config["policies"]]
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(header + plots.table2_markdown(rows, policies, with_paper=False))
                made.append(path)
                provenance[os.path.basename(path)] = prov
            elif name in SWEEP_FIGURES:
                for plot, filename, title, options in SWEEP_FIGURES[name]:
                    title = title.format(**title_fields(config)) if title else None
                    made.append(plot(rows, "gsm8k", os.path.join(fig, filename), title=title, **options))
                    provenance[filename] = prov
    except plots.FigureWriteError as err:  # a full disk: one line; provenance records what was drawn
        raise app.UsageError(str(err)) from None
    finally:
        if made:  # only what was drawn is recorded; nothing drawn, nothing written
            with open(prov_path + ".tmp", "w", encoding="utf-8") as handle:
                json.dump(provenance, handle, indent=1, sort_keys=True)
            os.replace(prov_path + ".tmp", prov_path)
    for path in made:
        logging.info("wrote %s", path)


def run():
    """Console script prada-figures (also python -m prada_jax.cli.make_figures)."""
    cli_support.run_main(main, __doc__, key_flag_modules=(sys.modules[__name__],))


if __name__ == "__main__":
    run()
