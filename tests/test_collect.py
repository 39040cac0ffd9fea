"""Benchmark loaders / checkers, the collector on a scripted generator (exact numbers, resume), and end to end on
tiny randomly initialised transformers models built locally (skipped without torch / transformers)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from prada_jax.collect import benchmarks as bm
from prada_jax.collect import collector as col
from prada_jax.traces import load_trace

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- benchmarks


@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{x^{2}+1}", "x^{2}+1"),
    ("no box here", None),
    ("\\boxed{unclosed", None),
])
def test_extract_boxed(text, expected):
    assert bm.extract_boxed(text) == expected


@pytest.mark.parametrize("response, truth, fmt, ok", [
    ("The total is \\boxed{18}.", "18", "gsm8k", True),
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", "gsm8k", True),
    ("so she pays 1,200 dollars", "1200", "gsm8k", True),
    ("so she pays 1,201 dollars", "1200", "gsm8k", False),
    ("\\boxed{\\dfrac{1}{2}}", "0.5", "math", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", "math", True),
    ("\\boxed{25\\%}", "25", "math", True),
    ("\\boxed{\\text{(B)}}", "B", "choice", True),
    ("The answer is (C).", "C", "choice", True),
    ("The answer is (C).", "D", "choice", False),
    ("\\boxed{Both}", "B", "choice", False),
    ("no answer stated", "5", "math", False),
])
def test_checkers(response, truth, fmt, ok):
    assert bm.is_correct(response, bm.Problem("p", "q", truth, fmt)) is ok


def test_load_benchmark_formats(tmp_path):
    lines = {
        "gsm8k": {"question": "Q?", "answer": "work\n#### 1,234"},
        "math": {"problem": "P?", "solution": "so \\boxed{\\frac{3}{4}}.", "idx": 7},
        "gaokao": {"question": "G?", "answer": "$-1-\\sqrt{3}$", "lang": "en"},
        "choice": {"question": "C?", "choices": ["a", "b", "c", "d"], "answer": 2},
    }
    for fmt, record in lines.items():
        path = tmp_path / f"{fmt}.jsonl"
        path.write_text(json.dumps(record) + "\n\n" + json.dumps(record) + "\n")
        problems = bm.load_benchmark(path, max_problems=1)
        assert len(problems) == 1 and problems[0].fmt == fmt
    assert bm.load_benchmark(tmp_path / "gsm8k.jsonl")[0].answer == "1234"
    assert bm.load_benchmark(tmp_path / "math.jsonl")[0].answer == "\\frac{3}{4}"
    assert bm.load_benchmark(tmp_path / "math.jsonl")[0].pid == "7"
    assert bm.load_benchmark(tmp_path / "gaokao.jsonl")[0].answer == "-1-\\sqrt{3}"
    choice = bm.load_benchmark(tmp_path / "choice.jsonl")[0]
    assert choice.answer == "C" and "(D) d" in choice.question


@pytest.mark.parametrize("content, fmt, message", [
    ('{"question": "Q", "answer": "no hashes"}', "gsm8k", r"bad.jsonl:1: field 'answer' has no '####"),
    ('{"question": "Q", "choices": ["a", "b"], "answer": 4}', None, r"bad.jsonl:1: field 'answer' must be an option"),
    ('{"foo": 1}', None, r"bad.jsonl:1: unknown record format"),
    ("not json", None, r"bad.jsonl:1: not valid JSON"),
])
def test_load_benchmark_errors(tmp_path, content, fmt, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content + "\n")
    with pytest.raises(bm.BenchmarkError, match=message):
        bm.load_benchmark(path, fmt)


def test_real_benchmarks_load_and_check_their_own_answers(shared_data):
    files = {"gsm8k_openai/test.jsonl": ("gsm8k", 1319), "qwen25math_eval/gaokao2023en/test.jsonl": ("gaokao", 385),
             "qwen25math_eval/mmlu_stem/test.jsonl": ("choice", 3018), "rsd_math500/math500/test.jsonl": ("math", 500)}
    for rel, (fmt, count) in files.items():
        problems = bm.load_benchmark(shared_data / rel)
        assert len(problems) == count and {p.fmt for p in problems} == {fmt}
        assert all(bm.is_correct(f"so \\boxed{{{p.answer}}}", p) for p in problems)
        wrong = [bm.is_correct("\\boxed{A}" if fmt != "choice" else "\\boxed{Z}", p) for p in problems]
        assert sum(wrong) < 0.05 * count


# ---------------------------------------------------------------- collector on a scripted generator

SLM_PLAN = ["Step one.\n\n", "Step two.\n\n", "So \\boxed{18}"]


class ScriptedGenerator:
    """Deterministic stand-in for a model: the SLM follows SLM_PLAN, the LLM always writes 'LLM step.';
    rollouts from a text are correct for all (after an LLM step), half (after 'Step one.'), one (the prompt), none."""

    def __init__(self, name, plan=None, hidden=4):
        self.name, self.plan, self.hidden, self.layers = name, plan, hidden, 2
        self.step_calls = 0

    def prompt(self, question):
        return f"<{self.name}>{question}|"

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, texts, *, max_new_tokens, stop_at_step, sample, temperature=1.0, top_p=1.0,
                 return_hidden=False):
        gens = []
        for text in texts:
            response = text.split("|", 1)[1]
            if stop_at_step:
                self.step_calls += 1
                if self.plan is None:
                    gens.append(col.Generation("LLM step.\n\n", 3, False))
                else:
                    step = self.plan[response.count("\n\n")]
                    gens.append(col.Generation(step, len(step), not step.endswith("\n\n")))
            else:
                gens.append(col.Generation("", 1, True))
        if not stop_at_step:  # rollouts: each prefix repeated n times (several prefixes may share a call)
            seen: dict[str, int] = {}
            for i, text in enumerate(texts):
                n, j = texts.count(text), seen.get(text, 0)
                seen[text] = j + 1
                correct = n if text.endswith("LLM step.\n\n") else (n + 1) // 2 if text.endswith("Step one.\n\n") \
                    else 1 if text.endswith("|") else 0
                gens[i] = col.Generation("\\boxed{18}" if j < correct else "\\boxed{0}", 5, True)
        hidden = np.array([[len(t), 1.0, -1.0, 0.5] for t in texts]) if return_hidden else None
        return gens, hidden


def _config(**kw):
    base = dict(dataset="gsm8k", max_steps=8, num_rollouts=4, feature_dim=3)
    base.update(kw)
    return col.CollectConfig(**base)


def _problems(k=2):
    return [bm.Problem(str(i), f"question {i}", "18", "gsm8k") for i in range(k)]


def test_scripted_collection_exact_numbers(tmp_path):
    slm, llm = ScriptedGenerator("slm", SLM_PLAN), ScriptedGenerator("llm")
    col.collect(_problems(1), slm, llm, None, _config(), str(tmp_path))
    record = json.loads((tmp_path / "shards" / "p000000.json").read_text())
    assert record["num_steps"] == 3 and record["finished"] and record["reference_correct"]
    assert record["slm_text"] == SLM_PLAN and record["slm_tokens"] == [len(s) for s in SLM_PLAN]
    assert record["mc_prompt"] == 1 and record["mc_after_slm"] == [2, 0, 4] and record["mc_after_llm"] == [4, 4, 4]
    assert record["query_tokens"] == 2
    trace = col.assemble(str(tmp_path), str(tmp_path / "t.npz"))
    loaded = load_trace(tmp_path / "t.npz")
    assert loaded.metadata["provenance"] == "collected" and loaded.metadata["dataset"] == "gsm8k"
    assert loaded.metadata["slm"] == {"name": "slm", "hidden": 4, "layers": 2}
    # V = (c+1)/(n+2): prompt 1/3, after SLM steps 1/2, 1/6, then exact 1 (finished, correct); LLM 5/6
    np.testing.assert_allclose(loaded.slm_step_success[0], [1.0, 1 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(loaded.llm_step_success[0], [1.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(loaded.prm_context[0], [1 / 3, 1 / 2, 1 / 6], rtol=1e-6)  # MC proxy
    np.testing.assert_allclose(loaded.prm_after_llm[0], [5 / 6] * 3, rtol=1e-6)
    assert loaded.expected_accuracy("slm") == pytest.approx(1 / 3, rel=1e-6)
    np.testing.assert_array_equal(trace.slm_step_tokens, loaded.slm_step_tokens)
    value = col.assemble(str(tmp_path), str(tmp_path / "v.npz"), success_mapping="value")
    np.testing.assert_allclose(value.slm_step_success[0], [0.5, 1 / 6, 1.0], rtol=1e-6)


def test_truncated_path_and_prm_callable(tmp_path):
    slm, llm = ScriptedGenerator("slm", SLM_PLAN), ScriptedGenerator("llm")
    calls = []

    def prm(question, steps):
        calls.append(list(steps))
        return 0.25 * len(steps)

    col.collect(_problems(1), slm, llm, prm, _config(max_steps=2), str(tmp_path),
                prm_arch=col.arch_dict("toy-prm", 8, 1))
    trace = col.assemble(str(tmp_path), str(tmp_path / "t.npz"))
    assert trace.num_steps.tolist() == [2] and trace.metadata["collection"]["truncated_paths"] == 1
    assert calls[:3] == [[], [SLM_PLAN[0]], ["LLM step.\n\n"]]
    np.testing.assert_allclose(trace.prm_context[0], [0.0, 0.25])
    np.testing.assert_allclose(trace.prm_after_slm[0], [0.25, 0.5])
    # the truncated reference response is not correct: its last step's value is exactly 0
    assert trace.slm_step_success[0, 1] == 0.0 and trace.expected_accuracy("slm") == 0.0
    assert trace.metadata["prm"]["name"] == "toy-prm"


def test_resume_skips_done_problems_and_rejects_other_settings(tmp_path):
    slm, llm = ScriptedGenerator("slm", SLM_PLAN), ScriptedGenerator("llm")
    col.collect(_problems(3), slm, llm, None, _config(), str(tmp_path))
    first = (tmp_path / "shards" / "p000001.json").read_text()
    os.remove(tmp_path / "shards" / "p000002.json")
    slm2 = ScriptedGenerator("slm", SLM_PLAN)
    col.collect(_problems(3), slm2, ScriptedGenerator("llm"), None, _config(), str(tmp_path))
    assert slm2.step_calls == 3  # only problem 2 again (3 steps)
    assert (tmp_path / "shards" / "p000001.json").read_text() == first
    trace = col.assemble(str(tmp_path), str(tmp_path / "t.npz"))
    assert trace.num_problems == 3 and trace.metadata["collection"]["problem_ids"] == ["0", "1", "2"]
    # features: standardised over valid entries
    assert np.abs(trace.features[trace.step_mask].mean(axis=0)).max() < 1e-5
    with pytest.raises(col.CollectError, match="collect_config.json.*num_rollouts"):
        col.collect(_problems(3), slm, llm, None, _config(num_rollouts=2), str(tmp_path))
    other = [bm.Problem("x", "q", "18", "gsm8k")]
    with pytest.raises(col.CollectError, match="p000000.json: shard is for problem id '0'"):
        col.collect(other, slm, llm, None, _config(), str(tmp_path))


def test_assemble_errors(tmp_path):
    with pytest.raises(col.CollectError, match="collect_config.json"):
        col.assemble(str(tmp_path), str(tmp_path / "t.npz"))
    col.collect(_problems(1), ScriptedGenerator("slm", SLM_PLAN), ScriptedGenerator("llm"), None, _config(),
                str(tmp_path))
    shard = tmp_path / "shards" / "p000000.json"
    record = json.loads(shard.read_text())
    record["mc_after_llm"] = record["mc_after_llm"][:1]
    shard.write_text(json.dumps(record))
    with pytest.raises(col.CollectError, match="p000000.json: field 'mc_after_llm' has 1 entries, expected 3"):
        col.assemble(str(tmp_path), str(tmp_path / "t.npz"))
    with pytest.raises(col.CollectError, match="num_rollouts"):
        col.CollectConfig(dataset="d", num_rollouts=0).validate()


def test_feature_projection_is_fixed():
    a = col.feature_projection(32, 16, 0)
    np.testing.assert_array_equal(a, col.feature_projection(32, 16, 0))
    assert a.shape == (32, 16) and not np.array_equal(a, col.feature_projection(32, 16, 1))
    assert np.std(a) * np.sqrt(32) == pytest.approx(1.0, abs=0.15)


# ---------------------------------------------------------------- tiny real transformers models


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny random Qwen2 causal LMs (SLM hidden 32, LLM hidden 48), a value-head PRM checkpoint and a
    byte-level tokenizer, all built and saved locally (no download)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny_models")
    # byte-level BPE without merges: one token per byte, the same pre-tokenizer/decoder family as Qwen2.5's
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for ch in sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, [], unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    paths = {}
    for name, hidden, seed in (("slm", 32, 0), ("llm", 48, 1), ("prm", 32, 2)):
        fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                                    unk_token="<unk>", bos_token="<eos>")
        if name == "llm":  # exercise the chat-template path on one model
            fast.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                                  "{% if add_generation_prompt %}<assistant>{% endif %}")
        config = transformers.Qwen2Config(
            vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=1,
            pad_token_id=0, bos_token_id=1, tie_word_embeddings=True)
        torch.manual_seed(seed)
        model = transformers.Qwen2ForCausalLM(config)
        path = root / name
        model.save_pretrained(path)
        fast.save_pretrained(path)
        if name == "prm":
            save_file({"v_head.summary.weight": torch.full((1, hidden), 0.01), "v_head.summary.bias": torch.zeros(1)},
                      str(path / "value_head.safetensors"))
        paths[name] = str(path)
    return paths


def test_hf_generator_steps_and_prompts(tiny_models):
    slm = col.load_hf_generator(tiny_models["slm"], batch_size=3)
    llm = col.load_hf_generator(tiny_models["llm"])
    assert slm.prompt("Q?").startswith("Question: Q?") and llm.prompt("Q?").startswith("<system>")
    gens, hidden = slm.generate(["ab", "abc", "a", "abcd"], max_new_tokens=7, stop_at_step=True, sample=False,
                                return_hidden=True)
    assert hidden.shape == (4, 32) and len(gens) == 4
    for g in gens:
        assert 1 <= g.num_tokens <= 7
        assert "\n\n" not in g.text[:-2] and (g.finished or g.text.endswith("\n\n") or g.num_tokens == 7)
    # step cutting on a known continuation: the shortest prefix that holds the delimiter
    ids = slm.tokenizer("x = 1\n\ny = 2", add_special_tokens=False)["input_ids"]
    cut = slm._finish(ids, stop_at_step=True)
    assert cut == col.Generation("x = 1\n\n", 7, False)
    assert slm._finish(ids[:3] + [1, 5, 6], stop_at_step=True) == col.Generation("x =", 4, True)
    assert slm._finish(ids, stop_at_step=False).text == "x = 1\n\ny = 2"


def test_value_head_prm(tiny_models):
    prm = col.ValueHeadPRM.from_pretrained(tiny_models["prm"])
    score = prm("What is 1+1?", ["1+1 = 2.\n\n", "So \\boxed{2}"])
    assert 0.0 < score < 1.0 and prm.hidden == 32
    assert score == pytest.approx(prm("What is 1+1?", ["1+1 = 2.", "So \\boxed{2}\n\n"]))
    with pytest.raises(col.CollectError, match="v_head.summary.weight"):
        col.ValueHeadPRM.from_pretrained(tiny_models["slm"])


def test_tiny_models_end_to_end_on_real_problems(tiny_models, shared_data, tmp_path):
    """The CLI on 2 real gsm8k problems with the tiny models: resumable shards, a valid 'collected' trace."""
    out_dir, output = tmp_path / "run", tmp_path / "gsm8k.npz"
    cmd = [sys.executable, "-m", "experiments.collect_traces",
           f"--benchmark={shared_data / 'gsm8k_openai' / 'test.jsonl'}", "--dataset=gsm8k",
           f"--slm={tiny_models['slm']}", f"--llm={tiny_models['llm']}", f"--prm={tiny_models['prm']}",
           f"--out_dir={out_dir}", f"--output={output}", "--max_problems=2", "--max_steps=2",
           "--max_step_tokens=6", "--max_completion_tokens=8", "--num_rollouts=2", "--batch_size=4",
           "--feature_dim=5"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ETA" in run.stderr and "wrote" in run.stdout
    trace = load_trace(output)
    assert trace.metadata["provenance"] == "collected" and trace.num_problems == 2 and trace.feature_dim == 5
    assert trace.metadata["slm"]["hidden"] == 32 and trace.metadata["llm"]["hidden"] == 48
    assert trace.metadata["prm"]["name"] == "prm"
    assert np.all(trace.slm_step_tokens[trace.step_mask] <= 6)
    assert sorted(os.listdir(out_dir / "shards")) == ["p000000.json", "p000001.json"]
    # an interrupted run: a lost shard is recollected identically (per-problem seeding), here in-process
    before = json.loads((out_dir / "shards" / "p000001.json").read_text())
    os.remove(out_dir / "shards" / "p000001.json")
    pinned = col.read_config(str(out_dir))
    cfg = col.CollectConfig(**{k: pinned[k] for k in col.CollectConfig.__dataclass_fields__})
    slm = col.load_hf_generator(tiny_models["slm"], batch_size=4)
    llm = col.load_hf_generator(tiny_models["llm"], batch_size=4)
    prm = col.ValueHeadPRM.from_pretrained(tiny_models["prm"])
    problems = bm.load_benchmark(shared_data / "gsm8k_openai" / "test.jsonl", max_problems=2)
    col.collect(problems, slm, llm, prm, cfg, str(out_dir), prm_arch=pinned["prm"], seed_fn=col.seed_torch)
    assert json.loads((out_dir / "shards" / "p000001.json").read_text()) == before
