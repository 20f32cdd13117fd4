"""Built-in Python coding problems with assert tests, for code-RL examples and tests.

Each row: prompt (asks for a function in a ```python block), entry_point, tests (assert lines run
after the solution in the sandbox), and a reference solution that passes them all."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

PROMPT = (
    "Write a Python function `{signature}` that {task} Reply with the complete function in a "
    "```python code block."
)

# (signature, task, tests, reference solution)
PROBLEMS: list[tuple[str, str, list[str], str]] = [
    ("add(a, b)", "returns the sum of a and b.",
     ["assert add(1, 2) == 3", "assert add(-4, 4) == 0", "assert add(10, 25) == 35"],
     "def add(a, b):\n    return a + b\n"),
    ("is_even(n)", "returns True if the integer n is even, else False.",
     ["assert is_even(4) is True", "assert is_even(7) is False", "assert is_even(0) is True"],
     "def is_even(n):\n    return n % 2 == 0\n"),
    ("reverse_string(s)", "returns the string s reversed.",
     ["assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''",
      "assert reverse_string('ab ba!') == '!ab ba'"],
     "def reverse_string(s):\n    return s[::-1]\n"),
    ("factorial(n)", "returns n! for a non-negative integer n.",
     ["assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(10) == 3628800"],
     "def factorial(n):\n    out = 1\n    for i in range(2, n + 1):\n        out *= i\n    return out\n"),
    ("fizzbuzz(n)", "returns 'Fizz' for multiples of 3, 'Buzz' for multiples of 5, 'FizzBuzz' for "
     "multiples of both, and str(n) otherwise.",
     ["assert fizzbuzz(3) == 'Fizz'", "assert fizzbuzz(10) == 'Buzz'", "assert fizzbuzz(30) == 'FizzBuzz'",
      "assert fizzbuzz(7) == '7'"],
     "def fizzbuzz(n):\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n"
     "        return 'Fizz'\n    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)\n"),
    ("max_of_list(xs)", "returns the largest element of the non-empty list xs without using max().",
     ["assert max_of_list([1, 5, 3]) == 5", "assert max_of_list([-2, -9]) == -2",
      "assert max_of_list([7]) == 7"],
     "def max_of_list(xs):\n    best = xs[0]\n    for x in xs[1:]:\n        if x > best:\n"
     "            best = x\n    return best\n"),
    ("count_vowels(s)", "returns how many characters of s are vowels (a, e, i, o, u, either case).",
     ["assert count_vowels('hello') == 2", "assert count_vowels('xyz') == 0",
      "assert count_vowels('AEIOU') == 5"],
     "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n"),
    ("is_palindrome(s)", "returns True if s reads the same forwards and backwards, else False.",
     ["assert is_palindrome('racecar') is True", "assert is_palindrome('ab') is False",
      "assert is_palindrome('') is True"],
     "def is_palindrome(s):\n    return s == s[::-1]\n"),
    ("fibonacci(n)", "returns the n-th Fibonacci number, with fibonacci(0) == 0 and fibonacci(1) == 1.",
     ["assert fibonacci(0) == 0", "assert fibonacci(1) == 1", "assert fibonacci(10) == 55",
      "assert fibonacci(30) == 832040"],
     "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"),
    ("sum_digits(n)", "returns the sum of the decimal digits of the non-negative integer n.",
     ["assert sum_digits(0) == 0", "assert sum_digits(123) == 6", "assert sum_digits(9999) == 36"],
     "def sum_digits(n):\n    return sum(int(c) for c in str(n))\n"),
    ("unique_sorted(xs)", "returns the distinct elements of xs in increasing order, as a list.",
     ["assert unique_sorted([3, 1, 3, 2]) == [1, 2, 3]", "assert unique_sorted([]) == []",
      "assert unique_sorted([5, 5]) == [5]"],
     "def unique_sorted(xs):\n    return sorted(set(xs))\n"),
    ("gcd(a, b)", "returns the greatest common divisor of two positive integers without importing math.",
     ["assert gcd(12, 18) == 6", "assert gcd(7, 13) == 1", "assert gcd(100, 10) == 10"],
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n"),
]  # fmt: skip


def coding_rows() -> list[dict[str, Any]]:
    """All built-in problems as dataset rows."""
    rows = []
    for signature, task, tests, solution in PROBLEMS:
        rows.append(
            {
                "prompt": PROMPT.format(signature=signature, task=task),
                "entry_point": signature.split("(")[0],
                "tests": list(tests),
                "solution": solution,
            }
        )
    return rows


def train_rows(seed: int) -> Iterator[dict[str, Any]]:
    """Endless seeded stream over the built-in problems (shuffled each pass)."""
    rows = coding_rows()
    rng = random.Random(seed)
    while True:
        order = rng.sample(rows, len(rows))
        yield from order
