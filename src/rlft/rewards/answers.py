"""Final-answer extraction and numeric equivalence for verifiable math rewards."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
ANSWER_TAG_CASED = re.compile(ANSWER_TAG.pattern, re.DOTALL)  # workload W's exact regex
BOXED = re.compile(r"\\boxed\{")
HASHES = re.compile(r"####\s*(.+)")
NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?")
DEFAULT_ANSWER_FIELD = "answer"
ANSWER_ALIAS = "solution"  # read when the default field is absent (TRL's math datasets name it so)


def boxed_contents(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces balanced."""
    matches = list(BOXED.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def marked_answer(text: str) -> str | None:
    """The answer a text marks as final: the last \\boxed{} content, else the last '#### x'."""
    boxed = boxed_contents(text)
    if boxed is not None:
        return boxed.strip()
    hashes = HASHES.findall(text)
    return hashes[-1].strip() if hashes else None


def extract_answer(text: str) -> str | None:
    """The model's final answer: <answer> tags, then \\boxed{}, then '#### x', then the last number."""
    tags = ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    marked = marked_answer(text)
    if marked is not None:
        return marked
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def to_number(text: str | None) -> Fraction | None:
    """Parse '1,000', '-3', '0.5', '1/2', '$12', '12.' into an exact Fraction; None if not a number."""
    if text is None:
        return None
    found = NUMBER.findall(text)
    if len(found) != 1:
        return None
    token = found[0].replace(",", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def answers_equal(predicted: str | None, reference: object) -> bool:
    """Numeric equality when both parse as numbers; else whitespace-insensitive string equality."""
    if predicted is None or reference is None:
        return False
    ref = str(reference)
    a, b = to_number(predicted), to_number(ref)
    if a is not None and b is not None:
        return a == b
    return " ".join(predicted.split()).lower() == " ".join(ref.split()).lower()


def reference_answer(example: Mapping[str, Any], field: str = DEFAULT_ANSWER_FIELD, who: str = "") -> Any:
    """A row's reference answer: `field`, or, when that is the default `answer` and the row has
    none, `solution`. A worked solution (a string with a \\boxed{} or a '#### x' line, as in MATH
    and GSM8K) is reduced to that final answer. A KeyError names the field(s) looked for and, when
    given, `who` (the reward) needs them."""
    if field in example:
        value = example[field]
    elif field == DEFAULT_ANSWER_FIELD and ANSWER_ALIAS in example:
        value = example[ANSWER_ALIAS]
    else:
        wanted = f"'{field}'" + (f" (or '{ANSWER_ALIAS}')" if field == DEFAULT_ANSWER_FIELD else "")
        raise KeyError(f"{who + ' ' if who else ''}needs the dataset field {wanted}")
    marked = marked_answer(value) if isinstance(value, str) else None
    return value if marked is None else marked
