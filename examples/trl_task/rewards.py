"""Reward functions written the way TRL's documentation writes them (batched: `completions` plus
dataset columns as keyword lists, conversational completions as message lists). rlft calls them
unchanged: `rewards: [{fn: examples/trl_task/rewards.py:accuracy}, ...]`."""

from __future__ import annotations

import re

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _text(completion) -> str:
    return completion[0]["content"] if isinstance(completion, list) else completion


def _final_number(text: str) -> str | None:
    boxed = BOXED.findall(text)
    found = NUMBER.findall(boxed[-1] if boxed else text)
    return found[-1].replace(",", "") if found else None


def accuracy(completions, solution, **kwargs):
    """1 when the completion's final number (the boxed one if any) equals the solution."""
    return [1.0 if _final_number(_text(c)) == s else 0.0 for c, s in zip(completions, solution, strict=True)]


def boxed_format(completions, **kwargs):
    """1 when the completion gives exactly one \\boxed{number}."""
    boxed = [BOXED.findall(_text(c)) for c in completions]
    return [1.0 if len(b) == 1 and NUMBER.fullmatch(b[0].strip()) else 0.0 for b in boxed]
