"""Format rewards for R1-Zero-style training: the <think>/<answer> template (strict, lenient and
tag-count partial credit), length shaping and a repetition penalty; plus the R1-Zero prompt.

Lengths are measured in characters or whitespace-separated words (a reward function sees text,
not tokens): pass `unit="words"` to count words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# DeepSeek-AI, "DeepSeek-R1" (2025), Table 1: the R1-Zero training template.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer. The reasoning process and answer are enclosed within <think> </think> "
    "and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {question}. Assistant:"
)
STRICT = re.compile(
    r"^<think>\n(?:(?!</?think>).)*\n</think>\n<answer>\n(?:(?!</?answer>).)*\n</answer>$", re.S
)
LENIENT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.S)
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def r1_zero_prompt(question: str) -> str:
    """The R1-Zero template around a question (use as a plain-text prompt, no chat template)."""
    return R1_ZERO_TEMPLATE.format(question=question.strip().rstrip("."))


def r1_format_strict(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    """1.0 iff the completion is exactly '<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>'
    (each tag once, on its own line, nothing before or after; surrounding whitespace ignored)."""
    return 1.0 if STRICT.match(completion.strip()) else 0.0


def r1_format_lenient(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    """1.0 iff a <think>...</think> block is followed (after optional whitespace) by an
    <answer>...</answer> block anywhere in the completion."""
    return 1.0 if LENIENT.search(completion) else 0.0


def tag_count(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    """Partial credit: 0.25 for each of the four tags that appears exactly once (max 1.0)."""
    return sum(0.25 for tag in TAGS if completion.count(tag) == 1)


def text_length(text: str, unit: str = "chars") -> int:
    """Length in characters or whitespace-separated words."""
    if unit == "chars":
        return len(text)
    if unit == "words":
        return len(text.split())
    raise ValueError(f"unit must be 'chars' or 'words', got '{unit}'")


def overlong_penalty(
    prompt: str,
    completion: str,
    example: Mapping[str, Any],
    max_length: int = 1024,
    cache_length: int = 256,
    unit: str = "chars",
) -> float:
    """Soft overlong punishment (DAPO, Yu et al. 2025, eq. 13): 0 up to max_length - cache_length,
    then falling linearly to -1 at max_length, and -1 beyond."""
    if not 0 < cache_length <= max_length:
        raise ValueError("need 0 < cache_length <= max_length")
    n = text_length(completion, unit)
    free = max_length - cache_length
    if n <= free:
        return 0.0
    if n <= max_length:
        return (free - n) / cache_length
    return -1.0


def target_length(
    prompt: str, completion: str, example: Mapping[str, Any], target: int = 256, unit: str = "chars"
) -> float:
    """1 at exactly `target`, falling linearly with the relative distance: max(0, 1 - |n - t| / t)."""
    if target <= 0:
        raise ValueError("target must be positive")
    n = text_length(completion, unit)
    return max(0.0, 1.0 - abs(n - target) / target)


def repetition_penalty(
    prompt: str, completion: str, example: Mapping[str, Any], ngram: int = 3, max_penalty: float = -1.0
) -> float:
    """Word n-gram repetition: max_penalty * (1 - distinct n-grams / all n-grams); 0 when the
    completion has fewer than `ngram` words. max_penalty must be <= 0."""
    if max_penalty > 0:
        raise ValueError("max_penalty must be <= 0")
    words = completion.lower().split()
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    if not grams:
        return 0.0
    return max_penalty * (1.0 - len(set(grams)) / len(grams))
