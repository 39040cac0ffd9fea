"""Measure prefill and batched-decode latency of a randomly initialised Qwen2 model.

    python experiments/measure_latency.py --preset=tiny     # writes results/latency/tiny_bfloat16_<device>.json
    python experiments/measure_latency.py --preset=qwen2.5-math-7b --dtype=bfloat16 \
        --profile=results/latency/profile.csv --role=server                  # on the server GPU
    python experiments/measure_latency.py --preset=qwen2.5-math-1.5b --dtype=float16 \
        --profile=results/latency/profile.csv --role=edge                    # on the edge device

`--profile` also writes (or updates, role by role) the measured-profile CSV that `--latency_model=profile:<csv>`
interpolates (prada_jax/calibration/profile.py): prefill rows at batch 1 over --prefill_contexts and decode rows
over the full --decode_batches x --decode_contexts grid.

Latency does not depend on weight values, so the model is built from its architecture config with
random weights (`Qwen2Config(...)` + `AutoModelForCausalLM.from_config`; nothing is downloaded).
Prefill: one forward of `context` tokens, logits of the last token only (`logits_to_keep=1`).
Decode: a KV cache of `context` tokens for each of `batch` requests, then one forward of one token per
request; the cache is cropped back to `context` before every repeat. Each point: warm-up runs, then the
median of `repeats` timed runs (`torch.cuda.synchronize` around each on GPU). The JSON table carries its
provenance (device, dtype, library versions, date, config); experiments/fit_latency.py fits it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

# Hugging Face config.json values of the released models (prada_jax.latency holds the same shapes).
ARCH_CONFIGS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1000, tie_word_embeddings=False),
    "qwen2.5-math-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                              intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-math-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                            intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (importing this module defines none)."""
    flags.DEFINE_enum("preset", "tiny", list(ARCH_CONFIGS), "Architecture to measure.")
    flags.DEFINE_integer("num_layers", 0, "Override the number of decoder layers (0: the preset's); a reduced model.")
    flags.DEFINE_enum("dtype", "bfloat16", list(DTYPE_BYTES), "Weight and KV-cache dtype.")
    flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "auto: cuda when available.")
    flags.DEFINE_list("prefill_contexts", ["16", "64", "256"], "Prefill lengths (tokens).")
    flags.DEFINE_list("decode_contexts", ["16", "256"], "Cached tokens per request before the timed decode step.")
    flags.DEFINE_list("decode_batches", ["1", "4"], "Requests decoded together.")
    flags.DEFINE_integer("warmup", 2, "Untimed runs per point.")
    flags.DEFINE_integer("repeats", 5, "Timed runs per point; the median is reported.")
    flags.DEFINE_integer("threads", 0, "torch CPU threads (0: torch's default); 1 avoids spin contention on a shared CPU.")
    flags.DEFINE_integer("seed", 0, "Seed of the random weights and token ids.")
    flags.DEFINE_string("output", "", "JSON table to write (default: results/latency/<preset>_<dtype>_<device>.json).")
    flags.DEFINE_string("profile", "", "Also write this role's rows into this measured-profile CSV (other roles' rows "
                        "in an existing file are kept).")
    flags.DEFINE_enum("role", None, ["server", "edge", "prm"], "Role of the measured model in --profile (default: "
                      "edge for qwen2.5-math-1.5b, server otherwise).")


def build_model(config_kwargs: dict, dtype: str, device: str, seed: int):
    """Randomly initialised Qwen2ForCausalLM of the given shape, in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(**config_kwargs, max_position_embeddings=32768, use_sliding_window=False)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return model.to(device).eval()


def _timed(fn, device: str, warmup: int, repeats: int, reset=lambda: None) -> list[float]:
    """Wall seconds of `repeats` calls of fn after `warmup` untimed ones; `reset` runs untimed before each."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        reset()
        fn()
    seconds = []
    for _ in range(repeats):
        reset()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_prefill(model, context: int, device: str, warmup: int, repeats: int, vocab: int) -> list[float]:
    import torch

    ids = torch.randint(0, vocab, (1, context), device=device)

    def run():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=True, logits_to_keep=1)

    return _timed(run, device, warmup, repeats)


def measure_decode(model, context: int, batch: int, device: str, warmup: int, repeats: int, vocab: int) -> list[float]:
    import torch
    from transformers import DynamicCache

    prompt = torch.randint(0, vocab, (batch, context), device=device)
    step = torch.randint(0, vocab, (batch, 1), device=device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    position = torch.full((batch, 1), context, device=device, dtype=torch.long)

    def reset():
        # crop(-k) drops the last k tokens (the same meaning in transformers 4.x and 5.x)
        excess = cache.get_seq_length() - context
        if excess > 0:
            cache.crop(-excess)

    def run():
        with torch.inference_mode():
            model(input_ids=step, past_key_values=cache, position_ids=position, use_cache=True, logits_to_keep=1)

    return _timed(run, device, warmup, repeats, reset)


def cpu_model_name() -> str:
    """'model name' from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _point(seconds: list[float], **keys) -> dict:
    return {**keys, "seconds_median": statistics.median(seconds), "seconds_all": seconds}


def run_measurement(preset: str, dtype: str, device: str, prefill_contexts, decode_contexts, decode_batches,
                    warmup: int, repeats: int, seed: int = 0, num_layers: int = 0, threads: int = 0) -> dict:
    """Measure every point and return the table (a JSON-ready dict with provenance)."""
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config_kwargs = dict(ARCH_CONFIGS[preset])
    if num_layers:
        config_kwargs["num_hidden_layers"] = num_layers
    model = build_model(config_kwargs, dtype, device, seed)
    vocab = config_kwargs["vocab_size"]
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    prefill = [_point(measure_prefill(model, m, device, warmup, repeats, vocab), context=m) for m in prefill_contexts]
    decode = [
        _point(measure_decode(model, m, b, device, warmup, repeats, vocab), context=m, batch=b)
        for m in decode_contexts for b in decode_batches
    ]
    device_name = torch.cuda.get_device_name() if device == "cuda" else cpu_model_name()
    return {
        "provenance": {
            "script": "experiments/measure_latency.py",
            "argv": sys.argv,
            "date_utc": started,
            "device": device,
            "device_name": device_name,
            "cpu_threads": torch.get_num_threads(),
            "host": platform.platform(),
            "dtype": dtype,
            "bytes_per_element": DTYPE_BYTES[dtype],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "warmup": warmup,
            "repeats": repeats,
            "seed": seed,
            "weights": "random (Qwen2Config + AutoModelForCausalLM.from_config); latency does not depend on values",
        },
        "preset": preset,
        "config": config_kwargs,
        "prefill": prefill,
        "decode": decode,
    }


def profile_rows(table: dict, role: str) -> list[tuple]:
    """(role, kind, batch, context, seconds) rows of a measured table, in the profile CSV's columns."""
    rows = [(role, "prefill", 1, p["context"], p["seconds_median"]) for p in table["prefill"]]
    rows += [(role, "decode", p["batch"], p["context"], p["seconds_median"]) for p in table["decode"]]
    return rows


def write_profile(path: str, table: dict, role: str) -> int:
    """Write `role`'s rows of `table` into the profile CSV at `path`, keeping other roles' rows (and their comment
    lines) of an existing file; returns the number of rows written for `role`."""
    import csv

    from prada_jax.calibration.profile import PROFILE_COLUMNS

    kept, comments = [], []
    if os.path.exists(path):
        with open(path, newline="") as f:
            for line in f:
                if line.startswith("#"):
                    if not line.startswith(f"# {role}:"):
                        comments.append(line.rstrip("\n"))
                elif line.strip() and not line.startswith("role,"):
                    cells = next(csv.reader([line]))
                    if cells[0] != role:
                        kept.append(cells)
    prov = table["provenance"]
    comments.append(f"# {role}: {table['preset']} {prov['dtype']} on {prov['device_name']} ({prov['device']}), "
                    f"torch {prov['torch']}, transformers {prov['transformers']}, {prov['date_utc']}, median of "
                    f"{prov['repeats']} runs")
    new = profile_rows(table, role)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        for c in comments:
            f.write(c + "\n")
        w = csv.writer(f)
        w.writerow(PROFILE_COLUMNS)
        w.writerows(kept)
        w.writerows([(r, k, b, m, f"{s:.6g}") for r, k, b, m, s in new])
    return len(new)


def default_output(preset: str, dtype: str, device: str) -> str:
    return os.path.join("results", "latency", f"{preset}_{dtype}_{device}.json")


def main(argv):
    del argv
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        sys.exit(f"measure_latency: needs torch and transformers ({exc}); pip install torch transformers")
    try:
        ints = {name: [int(v) for v in getattr(FLAGS, name)] for name in ("prefill_contexts", "decode_contexts", "decode_batches")}
    except ValueError as exc:
        sys.exit(f"measure_latency: --prefill_contexts/--decode_contexts/--decode_batches must be integers: {exc}")
    table = run_measurement(FLAGS.preset, FLAGS.dtype, FLAGS.device, ints["prefill_contexts"], ints["decode_contexts"],
                            ints["decode_batches"], FLAGS.warmup, FLAGS.repeats, FLAGS.seed, FLAGS.num_layers, FLAGS.threads)
    output = FLAGS.output or default_output(FLAGS.preset, FLAGS.dtype, table["provenance"]["device"])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(table, f, indent=1)
    print(f"wrote {output}: {len(table['prefill'])} prefill and {len(table['decode'])} decode points "
          f"on {table['provenance']['device_name']} ({table['provenance']['dtype']})")
    if FLAGS.profile:
        role = FLAGS.role or ("edge" if FLAGS.preset == "qwen2.5-math-1.5b" else "server")
        n = write_profile(FLAGS.profile, table, role)
        print(f"wrote {n} {role} rows into {FLAGS.profile} (--latency_model=profile:{FLAGS.profile})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
