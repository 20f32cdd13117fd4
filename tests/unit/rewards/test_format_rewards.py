"""rlft.rewards.format: R1-Zero format, tag credit, length shaping, repetition, template."""

from __future__ import annotations

import pytest

from rlft.rewards.format import (
    overlong_penalty,
    r1_format_lenient,
    r1_format_strict,
    r1_zero_prompt,
    repetition_penalty,
    tag_count,
    target_length,
)

GOOD = "<think>\nadd them\n</think>\n<answer>\n4\n</answer>"


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        (GOOD, 1.0, 1.0),
        ("  " + GOOD + "\n", 1.0, 1.0),  # surrounding whitespace is ignored
        ("<think>add</think> <answer>4</answer>", 0.0, 1.0),  # no newlines: lenient only
        ("Sure! " + GOOD, 0.0, 1.0),  # text before the template
        (GOOD + " extra", 0.0, 1.0),  # text after it
        ("<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\n4\n</answer>", 0.0, 1.0),  # two thinks
        ("<answer>4</answer><think>x</think>", 0.0, 0.0),  # wrong order
        ("<think>x</think>", 0.0, 0.0),  # no answer
    ],
)
def test_r1_format(text, strict, lenient):
    assert r1_format_strict("", text, {}) == strict
    assert r1_format_lenient("", text, {}) == lenient


@pytest.mark.parametrize(
    ("text", "credit"),
    [
        (GOOD, 1.0),  # all four tags once: 4 * 0.25
        ("<think>x</think> 4", 0.5),  # two tags: 2 * 0.25
        ("<think><think></think><answer>4</answer>", 0.75),  # <think> twice earns nothing: 3 * 0.25
        ("plain", 0.0),
    ],
)
def test_tag_count(text, credit):
    assert tag_count("", text, {}) == credit


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (50, 0.0),  # under max - cache = 80: free
        (80, 0.0),  # at the edge: free
        (90, -0.5),  # (80 - 90) / 20 = -0.5
        (100, -1.0),  # at max: (80 - 100) / 20 = -1
        (101, -1.0),  # beyond max: -1
    ],
)
def test_overlong_penalty(n, expected):
    assert overlong_penalty("", "x" * n, {}, max_length=100, cache_length=20) == pytest.approx(expected)


def test_overlong_penalty_in_words():
    text = " ".join(["w"] * 90)  # 90 words, 179 characters
    assert overlong_penalty("", text, {}, max_length=100, cache_length=20, unit="words") == pytest.approx(
        -0.5
    )
    with pytest.raises(ValueError):
        overlong_penalty("", text, {}, max_length=10, cache_length=20)


@pytest.mark.parametrize(("n", "expected"), [(100, 1.0), (75, 0.75), (150, 0.5), (200, 0.0), (400, 0.0)])
def test_target_length(n, expected):
    # 1 - |n - 100| / 100, floored at 0: 75 -> 0.75, 150 -> 0.5, 200 -> 0, 400 -> 0 (not -3)
    assert target_length("", "x" * n, {}, target=100) == pytest.approx(expected)


def test_repetition_penalty_hand_computed():
    # "a b c a b c": 3-grams (a b c), (b c a), (c a b), (a b c) -> 4 total, 3 distinct
    # penalty = -1 * (1 - 3/4) = -0.25
    assert repetition_penalty("", "a b c a b c", {}) == pytest.approx(-0.25)
    # all distinct -> 0; fewer words than n -> 0; case-insensitive: "A a a a" has (a a a) twice
    assert repetition_penalty("", "one two three four", {}) == 0.0
    assert repetition_penalty("", "one two", {}) == 0.0
    assert repetition_penalty("", "A a a a", {}, max_penalty=-0.5) == pytest.approx(-0.25)  # -0.5 * (1 - 1/2)
    with pytest.raises(ValueError):
        repetition_penalty("", "x", {}, max_penalty=1.0)


def test_r1_zero_prompt():
    p = r1_zero_prompt("What is 2 + 2?")
    assert p.startswith("A conversation between User and Assistant.")
    assert p.endswith("User: What is 2 + 2?. Assistant:")
    assert "<think> </think>" in p and "<answer> </answer>" in p
