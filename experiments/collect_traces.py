"""Collect a trace v1 from real models on a benchmark jsonl (resumable), then assemble one .npz.

    python -m experiments.collect_traces --benchmark=../shared/data/gsm8k_openai/test.jsonl --dataset=gsm8k \
        --slm=Qwen/Qwen2.5-Math-1.5B-Instruct --llm=Qwen/Qwen2.5-Math-7B-Instruct \
        --prm=/models/Skywork-o1-Open-PRM-Qwen-2.5-7B --device=cuda --dtype=bfloat16 \
        --out_dir=out/collect/gsm8k --output=traces/collected/gsm8k.npz

Stopping and re-running the same command continues where it stopped (per-problem shards in --out_dir).
--prm=mc uses the Monte-Carlo values as the PRM proxy (no PRM model). Needs the 'collect' extra
(torch, transformers). Method and output: docs/collect.md, prada_jax/collect/collector.py.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from prada_jax.collect import benchmarks as bm
from prada_jax.collect import collector as col

FLAGS = flags.FLAGS
flags.DEFINE_string("benchmark", None, "Benchmark jsonl file (gsm8k, MATH/math500, gaokao2023en or mmlu_stem format).")
flags.DEFINE_string("dataset", None, "Dataset name written to the trace metadata (e.g. gsm8k); also picks the answer "
                    "format when it is one of " + ", ".join(bm.DATASET_FORMATS) + " (else auto-detected).")
flags.DEFINE_string("slm", None, "SLM: local directory or hub name (AutoModelForCausalLM).")
flags.DEFINE_string("llm", None, "LLM: local directory or hub name (AutoModelForCausalLM).")
flags.DEFINE_string("prm", "mc", "PRM: local Skywork-style value-head checkpoint directory, or 'mc' for the MC-value proxy.")
flags.DEFINE_string("out_dir", None, "Folder for per-problem shards (resumable).")
flags.DEFINE_string("output", None, "Output trace .npz (default <out_dir>/<dataset>.npz).")
flags.DEFINE_integer("max_problems", None, "Collect only the first N problems of the benchmark.")
flags.DEFINE_integer("batch_size", 8, "Sequences per generate() call (rollouts are batched).")
flags.DEFINE_string("device", "cpu", "torch device: cpu, cuda, cuda:1, mps.")
flags.DEFINE_string("dtype", "float32", "torch dtype of the models (bfloat16 on GPU).")
flags.DEFINE_integer("max_steps", 16, "Maximum reference steps per problem (longer paths are truncated).")
flags.DEFINE_integer("max_step_tokens", 256, "max_new_tokens of one step.")
flags.DEFINE_integer("max_completion_tokens", 1024, "max_new_tokens of one Monte-Carlo completion.")
flags.DEFINE_integer("num_rollouts", 8, "Monte-Carlo completions per candidate step.")
flags.DEFINE_float("temperature", 0.7, "Sampling temperature of the rollouts.")
flags.DEFINE_float("top_p", 0.8, "Nucleus sampling of the rollouts.")
flags.DEFINE_integer("feature_dim", 16, "Feature width F (random projection of the SLM hidden state).")
flags.DEFINE_integer("feature_seed", 0, "Seed of the fixed random feature projection.")
flags.DEFINE_integer("seed", 0, "Seed of the rollouts (per problem: derived from seed and problem index).")
flags.DEFINE_enum("success_mapping", "conditional", list(col.SUCCESS_MAPPINGS), "MC values -> step success.")
flags.DEFINE_string("system_prompt", col.DEFAULT_SYSTEM_PROMPT, "System prompt of both models.")
flags.DEFINE_bool("assemble_only", False, "Only assemble the shards already in --out_dir.")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    required = ("out_dir",) if FLAGS.assemble_only else ("benchmark", "dataset", "slm", "llm", "out_dir")
    for name in required:
        if not getattr(FLAGS, name):
            sys.exit(f"collect_traces: --{name} is required")
    output = FLAGS.output or os.path.join(FLAGS.out_dir, f"{FLAGS.dataset or 'trace'}.npz")
    try:
        cfg = col.CollectConfig(
            dataset=FLAGS.dataset or "", max_steps=FLAGS.max_steps, max_step_tokens=FLAGS.max_step_tokens,
            max_completion_tokens=FLAGS.max_completion_tokens, num_rollouts=FLAGS.num_rollouts,
            temperature=FLAGS.temperature, top_p=FLAGS.top_p, feature_dim=FLAGS.feature_dim,
            feature_seed=FLAGS.feature_seed, seed=FLAGS.seed)
        if not FLAGS.assemble_only:
            problems = bm.load_benchmark(FLAGS.benchmark, bm.DATASET_FORMATS.get(FLAGS.dataset), FLAGS.max_problems)
            slm = col.load_hf_generator(FLAGS.slm, device=FLAGS.device, dtype=FLAGS.dtype,
                                        batch_size=FLAGS.batch_size, system_prompt=FLAGS.system_prompt)
            llm = col.load_hf_generator(FLAGS.llm, device=FLAGS.device, dtype=FLAGS.dtype,
                                        batch_size=FLAGS.batch_size, system_prompt=FLAGS.system_prompt)
            prm, prm_arch = None, None
            if FLAGS.prm != "mc":
                prm = col.ValueHeadPRM.from_pretrained(FLAGS.prm, device=FLAGS.device, dtype=FLAGS.dtype)
                prm_arch = col.arch_dict(prm.name, prm.hidden, prm.layers)
            col.collect(problems, slm, llm, prm, cfg, FLAGS.out_dir, prm_arch=prm_arch, seed_fn=col.seed_torch)
        trace = col.assemble(FLAGS.out_dir, output, success_mapping=FLAGS.success_mapping)
    except (bm.BenchmarkError, col.CollectError, OSError) as exc:
        sys.exit(f"collect_traces: {exc}")
    print(f"wrote {output}: {trace.num_problems} problems, K={trace.max_steps}, "
          f"expected accuracy SLM {trace.expected_accuracy('slm'):.3f} LLM {trace.expected_accuracy('llm'):.3f}, "
          f"greedy path accuracy {trace.metadata['collection']['reference_accuracy']:.3f}")


if __name__ == "__main__":
    app.run(main)
