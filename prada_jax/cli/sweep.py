"""Run a resumable parameter sweep of the PRADA simulator and draw its figures.

    prada-sweep --flagfile=bandwidth.cfg            # a bare name resolves to the shipped prada_jax/configs/
    prada-sweep --flagfile=capacity.cfg --episodes=8 --out_dir=results/capacity_quick
    prada-sweep --datasets=gsm8k --policies=all_slm,prada --sweep_param=beta --sweep_values=1,10,100
    prada-sweep --datasets=gsm8k --policies=all_slm,prada --grid=server_capacity=1,3,9 --grid=bandwidth_bps=1e6,4e7

(The last one sweeps the M x B Cartesian product; `python -m prada_jax.cli.sweep ...` is the
same command.)

Writes results.csv, results.json, run.json and fig_*.png into --out_dir and prints a summary table; a killed run
restarted with the same flags resumes; different flags into the same --out_dir need --overwrite.
See docs/experiments.md.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from prada_jax import cli_support, paper, plots, sweep
from prada_jax.learn.tables import TableError
from prada_jax.sim.params import SimParamsError
from prada_jax.traces import TraceError

FLAGS = flags.FLAGS
sweep.define_flags(FLAGS)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments {argv[1:]}: every flag, also on a --flagfile line, "
                             "starts with -- (--name=value)")
    cli_support.quiet_third_party_logs(FLAGS.verbosity)
    try:
        spec = sweep.spec_from_flags(FLAGS)
        store = sweep.run_sweep(spec, FLAGS.out_dir, overwrite=FLAGS.overwrite, argv=sys.argv)
    except sweep.SweepConfigError as err:
        sys.exit(f"FATAL Flags error: {err}")  # one line naming the flag (no usage dump, no traceback)
    except (sweep.SweepStateError, sweep.PolicyTableError, TableError, TraceError, SimParamsError) as err:
        sys.exit(f"FATAL {err}")
    logging.info("Results: %s (%d rows)", store.csv_path, len(store.rows))
    print(sweep.summary_table(store.rows), end="", flush=True)
    print(paper.comparison_text(spec, store.rows), end="", flush=True)  # Table-2 runs only: ours beside the paper's
    if FLAGS.plots:
        try:
            for path in plots.sweep_figures(store.rows, FLAGS.out_dir):
                logging.info("Figure: %s", path)
        except plots.FigureWriteError as err:
            sys.exit(f"FATAL {err}")


def run():
    try:
        argv = sweep.resolve_flagfile_argv(sys.argv)
    except sweep.SweepConfigError as err:
        sys.exit(f"FATAL Flags parsing error: {err}")
    # --helpshort lists the sweep's flags (defined in prada_jax.sweep.flags).
    cli_support.run_main(main, __doc__, key_flag_modules=(sweep.flags,), argv=argv)


if __name__ == "__main__":
    run()
