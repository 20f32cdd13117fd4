"""Ways to word an arithmetic problem, so a model learns the arithmetic and not one sentence.

Each op has a list of templates with `{a}` and `{b}`. With a share of them kept for held-out rows
only ("unseen" phrasings), evaluation tells what was learnt about the problems from what was
learnt about their wording. Which templates are unseen is a pure function of the template text
(a hash), so it never depends on a seed, and adding a template moves no other.
"""

from __future__ import annotations

import hashlib
import re

FIXED = {"+": "What is {a} + {b}?", "-": "What is {a} - {b}?", "*": "What is {a} * {b}?"}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": (
        "What is {a} + {b}?",
        "Compute {a} plus {b}.",
        "Add {a} and {b}.",
        "What is the sum of {a} and {b}?",
        "Calculate {a} + {b}.",
        "{a} + {b} = ?",
        "How much is {a} plus {b}?",
        "Find the total of {a} and {b}.",
        "What do you get if you add {b} to {a}?",
        "Work out {a} + {b}.",
        "Evaluate {a}+{b}.",
        "What number is {b} more than {a}?",
    ),
    "-": (
        "What is {a} - {b}?",
        "Compute {a} minus {b}.",
        "Subtract {b} from {a}.",
        "What is the difference between {a} and {b}?",
        "Calculate {a} - {b}.",
        "{a} - {b} = ?",
        "How much is {a} minus {b}?",
        "Take {b} away from {a}. What is left?",
        "What do you get if you subtract {b} from {a}?",
        "Work out {a} - {b}.",
        "Evaluate {a}-{b}.",
        "What number is {b} less than {a}?",
    ),
    "*": (
        "What is {a} * {b}?",
        "Compute {a} times {b}.",
        "Multiply {a} by {b}.",
        "What is the product of {a} and {b}?",
        "Calculate {a} x {b}.",
        "{a} * {b} = ?",
        "How much is {a} multiplied by {b}?",
        "What is {a} groups of {b}?",
        "What do you get if you multiply {a} and {b}?",
        "Work out {a} × {b}.",
        "Evaluate {a}*{b}.",
        "What is {b} taken {a} times?",
    ),
}


def is_unseen(template: str, fraction: float) -> bool:
    """Whether `template` is kept for held-out rows only (a hash of its text below `fraction`)."""
    bucket = int(hashlib.sha256(template.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def templates(op: str, unseen: bool, fraction: float) -> tuple[str, ...]:
    """The op's seen (unseen=False) or unseen templates; each side keeps at least one."""
    if op not in TEMPLATES:
        raise ValueError(f"unknown arithmetic op '{op}' (use {', '.join(TEMPLATES)})")
    side = tuple(t for t in TEMPLATES[op] if is_unseen(t, fraction) == unseen)
    if side:
        return side
    ordered = sorted(TEMPLATES[op], key=lambda t: hashlib.sha256(t.encode()).hexdigest())
    return (ordered[0],) if unseen else tuple(ordered[1:])


def parse(template: str, text: str) -> tuple[int, int] | None:
    """(a, b) when `text` is `template` filled with two integers, else None."""
    pattern = re.escape(template).replace(r"\{a\}", r"(?P<a>-?\d+)").replace(r"\{b\}", r"(?P<b>-?\d+)")
    m = re.fullmatch(pattern, text)
    return (int(m["a"]), int(m["b"])) if m else None
