"""Verifiable math rewards: extract the final answer, then compare it with the reference using
Hugging Face's math-verify (numbers, fractions, LaTeX, sets, intervals), falling back to exact
numeric / normalised-string comparison (rlft.rewards.answers) when math-verify is missing, fails
to parse, or errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from rlft.rewards.answers import answers_equal, extract_answer, reference_answer

log = logging.getLogger(__name__)
VERIFY_TIMEOUT_S = 5


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError:  # optional at import time; the numeric fallback still works
        return None
    return math_verify


def _as_latex(text: str) -> str:
    """Wrap plain answers in $...$ so math-verify's LaTeX extractor sees them as math."""
    t = text.strip()
    return t if t.startswith("$") or "\\(" in t or "\\[" in t else f"${t}$"


def verified_equal(predicted: str, reference: str) -> bool | None:
    """math-verify's verdict, or None when it cannot decide (not installed, nothing parsed, error).

    Its signal-based timeout only works in the main thread; elsewhere it runs without one, and
    the caller's pool timeout bounds it instead."""
    mv = _math_verify()
    if mv is None:
        return None
    main = threading.current_thread() is threading.main_thread()
    timeout = VERIFY_TIMEOUT_S if main else None
    try:
        gold = mv.parse(_as_latex(reference), parsing_timeout=timeout)
        pred = mv.parse(_as_latex(predicted), parsing_timeout=timeout)
        if not gold or not pred:
            return None
        return bool(mv.verify(gold, pred, timeout_seconds=timeout))
    except Exception as e:  # math-verify raises on exotic input; fall back
        log.debug("math-verify failed on %r vs %r: %s", predicted, reference, e)
        return None


def math_equal(predicted: str | None, reference: object) -> bool:
    """True if the answers are equivalent: math-verify when it decides, else numeric / string.

    Either check saying equal is enough (math-verify misses plain strings, the fallback misses
    LaTeX such as \\frac{1}{2} vs 0.5)."""
    if predicted is None or reference is None or not str(reference).strip() or not predicted.strip():
        return False
    ref = str(reference)
    if answers_equal(predicted, ref):
        return True
    return bool(verified_equal(predicted, ref))


def math_answer(
    prompt: str, completion: str, example: Mapping[str, Any], answer_field: str = "answer"
) -> float:
    """1.0 if the completion's final answer (<answer>, \\boxed{}, ####, last number) is
    equivalent to the row's reference answer (`reference_answer`: `solution` when the default
    `answer` is absent), else 0.0."""
    reference = reference_answer(example, answer_field, "math_answer")
    return 1.0 if math_equal(extract_answer(completion), reference) else 0.0
