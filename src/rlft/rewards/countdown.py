"""Countdown: reach a target from given numbers with + - * / (each number used exactly once).

The generator builds a random expression over the numbers so every task is solvable; the verifier
parses the model's expression with `ast` and evaluates only numbers, + - * / and parentheses with
exact fractions. Model text is never passed to eval()."""

from __future__ import annotations

import ast
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any

from rlft.rewards.answers import ANSWER_TAG
from rlft.rewards.format import r1_zero_prompt

MAX_EXPRESSION_CHARS = 200
OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


class InvalidExpression(ValueError):
    """The text is not an arithmetic expression over integer literals with + - * / ( )."""


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of the expression and the integer literals it uses (in order)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidExpression(f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise InvalidExpression(f"not an expression: {e.msg}") from None
    used: list[int] = []
    return _value(tree.body, used), used


def _value(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left, used), _value(node.right, used)
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise InvalidExpression("division by zero")
            return left / right
        if type(node.op) in OPS:
            return OPS[type(node.op)](left, right)
    raise InvalidExpression(
        f"'{type(node).__name__}' is not allowed (only integers, + - * / and parentheses)"
    )


def countdown_reward(
    prompt: str, completion: str, example: Mapping[str, Any], format_score: float = 0.0
) -> float:
    """1.0 if the last <answer> holds an expression using each of example['numbers'] exactly once
    and equal to example['target']; `format_score` if there is an answer that fails; else 0."""
    tags = ANSWER_TAG.findall(completion)
    if not tags:
        return 0.0
    expression = tags[-1].split("=")[0]  # "25 + 3 * 4 = 37" -> the left side
    try:
        value, used = evaluate(expression)
    except InvalidExpression:
        return format_score
    numbers = [int(n) for n in example["numbers"]]
    if Counter(used) != Counter(numbers) or value != int(example["target"]):
        return format_score
    return 1.0


def make_task(rng: random.Random, count: int = 4, max_number: int = 50) -> dict[str, Any]:
    """Numbers and a positive integer target built from a random expression over all of them."""
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(count)]
        order = rng.sample(numbers, len(numbers))
        value, text = Fraction(order[0]), str(order[0])
        for n in order[1:]:
            op = rng.choice("+-*/")
            if op == "/" and (n == 0 or (value / n).denominator != 1):
                op = "+"
            value = {"+": value + n, "-": value - n, "*": value * n, "/": value / n}[op]
            text = f"({text} {op} {n})"
        if value.denominator == 1 and 0 < value <= 1000:
            return {"numbers": numbers, "target": int(value), "solution": text}


def countdown_prompt(numbers: list[int], target: int) -> str:
    """The task in the R1-Zero template."""
    question = (
        f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
        "arithmetic operations (+, -, *, /) and each number must be used exactly once. Show your "
        "work in <think> </think> tags and return the final equation in <answer> </answer> tags, "
        "for example <answer> (1 + 2) / 3 </answer>"
    )
    return r1_zero_prompt(question)


def countdown_rows(seed: int, count: int = 4, max_number: int = 50) -> Iterator[dict[str, Any]]:
    """Endless seeded stream of rows: prompt, numbers, target, a reference solution, and answer."""
    rng = random.Random(seed)
    while True:
        task = make_task(rng, count, max_number)
        yield {
            "prompt": countdown_prompt(task["numbers"], task["target"]),
            "answer": task["solution"],
            **task,
        }
