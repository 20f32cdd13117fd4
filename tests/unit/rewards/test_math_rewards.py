"""rlft.rewards.math: extraction + math-verify equivalence with a numeric fallback."""

from __future__ import annotations

import pytest

from rlft.rewards import math as rmath
from rlft.rewards.math import math_answer, math_equal

# (predicted, reference, equal?) -- each case's reason in the trailing comment
CASES = [
    ("1/2", "0.5", True),  # fraction vs decimal: both exactly 1/2
    ("0.5", "1/2", True),  # and the other way round
    ("\\frac{1}{2}", "0.5", True),  # LaTeX fraction: only math-verify parses it
    ("\\dfrac{3}{4}", "0.75", True),  # \dfrac too
    ("1,000", "1000", True),  # thousands separator
    ("1000", "1,000", True),
    ("5 cm", "5", True),  # a unit after the number
    ("$12", "12", True),  # a currency sign
    ("12%", "12", True),  # a percent sign
    ("-3", "-3", True),  # negative
    ("-3", "3", False),  # the sign matters
    ("3", "-3", False),
    ("3.0", "3", True),  # trailing zero
    ("0.333", "1/3", False),  # a rounded decimal is not the fraction
    ("2\\sqrt{2}", "\\sqrt{8}", True),  # symbolic equality
    ("\\{1,2\\}", "\\{2,1\\}", True),  # sets are unordered
    ("Paris", "paris", True),  # non-numeric: case-insensitive string match
    (None, "3", False),  # no answer at all
    ("", "3", False),  # empty answer
    ("x", "3", False),
    ("3", "", False),  # empty reference never matches
]


@pytest.mark.parametrize(("pred", "ref", "equal"), CASES)
def test_math_equal_table(pred, ref, equal):
    assert math_equal(pred, ref) is equal


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("<think>2+2</think><answer>4</answer>", 1.0),  # answer tag
        ("so the result is \\boxed{\\frac{8}{2}}", 1.0),  # boxed LaTeX = 4
        ("steps...\n#### 4", 1.0),  # GSM8K style
        ("I think it is 3, no wait, 4", 1.0),  # last number
        ("<answer>5</answer> but 4", 0.0),  # the tag wins over later numbers
        ("no idea", 0.0),  # nothing extracted
    ],
)
def test_math_answer_extraction(completion, reward):
    assert math_answer("", completion, {"answer": "4"}) == reward


def test_missing_answer_field_raises():
    with pytest.raises(KeyError, match="answer"):
        math_answer("", "4", {})


def test_numeric_fallback_without_math_verify(monkeypatch):
    monkeypatch.setattr(rmath, "_math_verify", lambda: None)
    assert math_equal("1/2", "0.5")  # the plain Fraction comparison still decides
    assert math_equal("1,000", "1000")
    assert not math_equal("\\frac{1}{2}", "0.5")  # LaTeX needs math-verify
