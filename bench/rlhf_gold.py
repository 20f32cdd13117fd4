"""The simulated annotators' rule ("gold"), used by bench/rlhf_demo.py: a right final number is
worth 1, and among equally right answers shorter is better (up to 0.5 for an empty answer, 0 at
60 words or more). Also usable as a reward: `fn: bench/rlhf_gold.py:gold_score`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlft.rewards.builtin import numeric_answer

CONCISE_WORDS = 60


def gold_score(prompt: str, completion: str, example: Mapping[str, Any]) -> float:
    words = min(len(completion.split()), CONCISE_WORDS)
    return numeric_answer(prompt, completion, example) + 0.5 * (1 - words / CONCISE_WORDS)
