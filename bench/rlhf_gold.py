"""The simulated annotators' rule ("gold"), used by bench/rlhf_demo.py: a right final number is
worth 1; conciseness adds 0.25 per level (0.5 for at most 10 words, 0.25 for 11..20, 0 beyond).
Responses of equal worth are ties. Also usable as a reward: `fn: bench/rlhf_gold.py:gold_score`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlft.rewards.builtin import numeric_answer


def concise_level(words: float) -> int:
    return 2 if words <= 10 else 1 if words <= 20 else 0


def gold_utility(
    prompt: str, completion: str, example: Mapping[str, Any], words: float | None = None
) -> float:
    """Worth of a completion; `words` replaces its true word count (an annotator's perception)."""
    n = len(completion.split()) if words is None else words
    return numeric_answer(prompt, completion, example) + 0.25 * concise_level(n)


def gold_score(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    return gold_utility(prompt, completion, example)
