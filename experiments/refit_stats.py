"""Refit the synthetic-trace statistics from the real data and write prada_jax/calibration/fitted_stats.json.

    python -m experiments.refit_stats --data_dir=../shared/data [--check]

--check compares with the committed file instead of writing it (exit status 1 when they differ).
"""

from __future__ import annotations

import sys

from absl import app, flags

from prada_jax.calibration import refit

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", refit.DEFAULT_DATA_DIR, "Folder with the real benchmark data (shared/data).")
flags.DEFINE_string("out", refit.STATS_PATH, "Where to write the fitted statistics JSON.")
flags.DEFINE_bool("check", False, "Only compare with --out; exit 1 if the refit differs.")


def main(argv):
    del argv
    try:
        text = refit.dumps(refit.refit(FLAGS.data_dir))
    except refit.DataError as exc:
        sys.exit(f"refit_stats: --data_dir: {exc}")
    if FLAGS.check:
        with open(FLAGS.out, encoding="utf-8") as handle:
            same = handle.read() == text
        print(f"{FLAGS.out}: {'identical to the refit' if same else 'DIFFERS from the refit'}")
        sys.exit(0 if same else 1)
    with open(FLAGS.out, "w", encoding="utf-8") as handle:
        handle.write(text)
    stats = refit.load_stats(FLAGS.out)
    print(f"wrote {FLAGS.out}")
    for name, src in stats["step_sources"].items():
        s = src["summary"]
        print(f"  {name}: {src['rows_used']} rows ({src['generators_used']}), mean steps {s['mean_steps']:.2f}, "
              f"mean step {s['mean_step_chars']:.0f} chars = {s['mean_step_tokens']:.1f} tokens")
    for name, ds in stats["datasets"].items():
        s = ds["summary"]
        print(f"  {name}: {ds['num_problems']} problems, mean query {s['mean_query_chars']:.0f} chars = "
              f"{s['mean_query_tokens']:.1f} tokens (with template); steps from {ds['step_source']}")


if __name__ == "__main__":
    app.run(main)
