"""Built-in rule-based rewards. Contract: fn(prompt, completion, example) -> float."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlft.rewards import format as fmt
from rlft.rewards.answers import (
    ANSWER_TAG,
    ANSWER_TAG_CASED,
    answers_equal,
    extract_answer,
    reference_answer,
)
from rlft.rewards.code import code_pass_fraction
from rlft.rewards.countdown import countdown_reward
from rlft.rewards.math import math_answer

RewardFn = Callable[..., float]


def numeric_answer(
    prompt: str, completion: str, example: Mapping[str, Any], answer_field: str = "answer"
) -> float:
    """1.0 if the completion's final answer equals the row's answer (numerically when possible);
    the answer is read by `reference_answer` (`solution` when the default `answer` is absent)."""
    reference = reference_answer(example, answer_field, "numeric_answer")
    return 1.0 if answers_equal(extract_answer(completion), reference) else 0.0


def answer_format(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    """1.0 if the completion holds exactly one <answer>...</answer> pair with non-empty content."""
    tags = ANSWER_TAG.findall(completion)
    return 1.0 if len(tags) == 1 and tags[0].strip() else 0.0


def first_answer_int(
    prompt: str, completion: str, example: Mapping[str, Any], answer_field: str = "answer"
) -> float:
    """1.0 if the text inside the FIRST <answer>...</answer> (case-sensitive) parses with int()
    to the row's integer answer, else 0.0 (workload W's correctness reward)."""
    match = ANSWER_TAG_CASED.search(completion)
    if match is None:
        return 0.0
    reference = reference_answer(example, answer_field, "first_answer_int")
    try:
        return 1.0 if int(match.group(1).strip()) == int(reference) else 0.0
    except ValueError:
        return 0.0


def answer_tags_present(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    """1.0 if an <answer>...</answer> pair (case-sensitive) appears anywhere (W weighs it 0.1)."""
    return 1.0 if ANSWER_TAG_CASED.search(completion) else 0.0


BUILTIN_REWARDS: dict[str, RewardFn] = {
    "numeric_answer": numeric_answer,
    "answer_format": answer_format,
    "first_answer_int": first_answer_int,
    "answer_tags_present": answer_tags_present,
    "math_answer": math_answer,
    "r1_format_strict": fmt.r1_format_strict,
    "r1_format_lenient": fmt.r1_format_lenient,
    "tag_count": fmt.tag_count,
    "overlong_penalty": fmt.overlong_penalty,
    "target_length": fmt.target_length,
    "repetition_penalty": fmt.repetition_penalty,
    "countdown": countdown_reward,
    "code_pass_fraction": code_pass_fraction,
}
