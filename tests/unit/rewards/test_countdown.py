"""rlft.rewards.countdown: safe expression evaluation, the verifier and the generator."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from rlft.rewards.countdown import InvalidExpression, countdown_reward, countdown_rows, evaluate, make_task

ROW = {"numbers": [3, 5, 7, 2], "target": 27}  # one solution: 2 * (7 + 5) + 3 = 24 + 3 = 27


@pytest.mark.parametrize(
    ("expr", "value", "used"),
    [
        ("3 * 7 + 5 * 2 - 5", Fraction(26), [3, 7, 5, 2, 5]),  # 21 + 10 - 5 = 26
        ("(1 + 2) / 3", Fraction(1), [1, 2, 3]),  # 3 / 3
        ("7 / 2", Fraction(7, 2), [7, 2]),  # exact, not 3.5 float
        ("((4))", Fraction(4), [4]),
    ],
)
def test_evaluate(expr, value, used):
    assert evaluate(expr) == (value, used)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",  # a call
        "2 ** 10",  # power is not allowed
        "-3 + 5",  # unary minus is not allowed (numbers are given positive)
        "1.5 * 2",  # floats are not given numbers
        "x + 1",  # names
        "1 / (2 - 2)",  # division by zero
        "1 +",  # syntax
        "1" + " + 1" * 150,  # too long (> 200 characters)
    ],
)
def test_evaluate_rejects(expr):
    with pytest.raises(InvalidExpression):
        evaluate(expr)


@pytest.mark.parametrize(
    ("completion", "why"),
    [
        ("<answer>(7 + 5) * 2 + 3 + 0</answer>", "0 is not a given number"),
        ("<answer>3 * 7 + 5 + 2</answer>", "21 + 7 = 28, not 27"),
        ("<answer>2 * (7 + 5) + 3 + 3 - 3</answer>", "= 27 but 3 is used three times"),
        ("<answer>2 * (7 + 5)</answer>", "= 24 and 3 is unused"),
        ("<answer>(7 - 5 + 3) * 2 ...</answer>", "not an expression"),
        ("<answer>2 ** 5 - 5</answer>", "= 27 but ** is not allowed (and 3, 7 unused)"),
    ],
)
def test_countdown_reward_wrong_gets_the_format_score(completion, why):
    assert countdown_reward("", completion, ROW, format_score=0.1) == 0.1, why
    assert countdown_reward("", completion, ROW) == 0.0, why


def test_countdown_reward_needs_an_answer_tag():
    assert countdown_reward("", "2 * (7 + 5) + 3", ROW, format_score=0.1) == 0.0


def test_countdown_reward_correct():
    assert countdown_reward("", "<think>..</think><answer>2 * (7 + 5) + 3</answer>", ROW) == 1.0
    assert countdown_reward("", "<answer>2 * (7 + 5) + 3 = 27</answer>", ROW) == 1.0  # "= target" ok
    assert countdown_reward("", "<answer>(3 + 2 * (5 + 7))</answer>", ROW) == 1.0  # any order
    # the last <answer> counts: a wrong first try followed by a right one
    assert countdown_reward("", "<answer>1</answer> <answer>2 * (7 + 5) + 3</answer>", ROW) == 1.0


def test_generator_tasks_are_solvable_and_seeded():
    rng = random.Random(0)
    for _ in range(200):
        task = make_task(rng)
        value, used = evaluate(task["solution"])
        assert value == task["target"] and 0 < task["target"] <= 1000
        assert sorted(used) == sorted(task["numbers"])
    a, b = countdown_rows(7), countdown_rows(7)
    first = [next(a) for _ in range(5)]
    assert first == [next(b) for _ in range(5)]  # same seed, same rows
    row = first[0]
    assert countdown_reward("", f"<answer>{row['solution']}</answer>", row) == 1.0
    assert str(row["numbers"]) in row["prompt"] and f"equals {row['target']}" in row["prompt"]
