"""The answer alias: the built-in answer rewards read a row's `solution` when the answer field is
the default `answer` and the row has none (TRL's math datasets name the reference so), through one
helper, `reference_answer`; a worked solution is reduced to its final answer."""

from __future__ import annotations

import pytest

from rlft.rewards.answers import reference_answer
from rlft.rewards.builtin import first_answer_int, numeric_answer
from rlft.rewards.math import math_answer


def test_reference_answer_reads_answer_then_solution():
    assert reference_answer({"answer": "4", "solution": "5"}) == "4"  # `answer` wins
    assert reference_answer({"solution": "5"}) == "5"
    assert reference_answer({"answer": 7}) == 7  # not a string: as it is
    # a custom field has no alias
    assert reference_answer({"target": "3", "solution": "5"}, "target") == "3"
    with pytest.raises(KeyError, match=r"needs the dataset field 'target'\"?$"):
        reference_answer({"solution": "5"}, "target")
    # neither field: the error names both, and the reward when given
    with pytest.raises(KeyError, match=r"math_answer needs the dataset field 'answer' \(or 'solution'\)"):
        reference_answer({"question": "1+1"}, "answer", "math_answer")


def test_worked_solutions_reduce_to_their_final_answer():
    # MATH: the last \boxed{...} (nested braces kept); GSM8K: the '#### x' line
    assert reference_answer({"solution": "So $x = \\boxed{\\frac{1}{2}}$."}) == "\\frac{1}{2}"
    assert reference_answer({"answer": "3 apples + 4 = 7 apples\n#### 7"}) == "7"
    assert reference_answer({"solution": "42"}) == "42"


def test_builtin_answer_rewards_read_the_solution():
    row = {"prompt": "What is 6*7?", "solution": "6*7 = 42, so the answer is $\\boxed{42}$."}
    assert numeric_answer("", "<answer>42</answer>", row) == 1.0
    assert numeric_answer("", "<answer>41</answer>", row) == 0.0
    assert math_answer("", "The answer is \\boxed{42}", row) == 1.0
    assert math_answer("", "The answer is \\boxed{41}", row) == 0.0
    assert first_answer_int("", "<answer>42</answer>", {"solution": "42"}) == 1.0
    # an explicit answer_field is read as given (no alias)
    with pytest.raises(KeyError, match="numeric_answer needs the dataset field 'target'"):
        numeric_answer("", "42", row, answer_field="target")
    with pytest.raises(KeyError, match=r"math_answer needs the dataset field 'answer' \(or 'solution'\)"):
        math_answer("", "42", {"prompt": "q"})
