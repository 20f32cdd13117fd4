"""rlft.rewards.answers (extraction, equivalence) and rlft.eval.accuracy (pass@k, majority vote)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rlft.eval.accuracy import majority_answer, pass_at_k, score_row
from rlft.rewards.answers import answers_equal, extract_answer, to_number
from rlft.rewards.builtin import answer_format, numeric_answer

# ---------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("think 3 ... <answer> 42 </answer> then 7", "42"),  # tags win over later numbers, stripped
        ("<answer>1</answer> no, <ANSWER>2</ANSWER>", "2"),  # last tag, case-insensitive
        (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),  # nested braces balanced
        (r"\boxed{3} or rather \boxed{ 5 }", "5"),  # the last \boxed, stripped
        (r"\boxed{unclosed 4", "4"),  # unbalanced box: falls through to the last number
        ("steps 12 then\n#### 1,000", "1,000"),  # GSM8K style
        ("first 3, then 5.", "5"),  # last number; a trailing full stop is not a decimal
        ("it is -17 degrees", "-17"),  # negative
        ("half: 1/2", "1/2"),  # fraction kept whole
        ("pi ~ 3.14", "3.14"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# ---------------------------------------------------------------- answers_equal


@pytest.mark.parametrize(
    ("predicted", "reference", "equal"),
    [
        ("1,000", 1000, True),  # comma grouping: '1,000' -> 1000
        ("1000", "1,000", True),
        ("1/2", "0.5", True),  # Fraction(1,2) == Fraction('0.5')
        ("0.50", "1/2", True),
        ("-3", -3, True),
        ("-3", "3", False),  # sign matters
        ("$12", "12", True),  # one number inside -> compared numerically
        ("12.0", 12, True),
        ("13", "12", False),
        ("Paris ", "paris", True),  # non-numbers: whitespace/case-insensitive string equality
        ("New  York", "new york", True),
        ("3 or 4", "3", False),  # two numbers -> not a number -> string compare '3 or 4' != '3'
        (None, "3", False),  # no answer extracted
        ("3", None, False),
    ],
)
def test_answers_equal(predicted, reference, equal):
    assert answers_equal(predicted, reference) is equal


def test_to_number_exact_fractions():
    # exact rationals, no float rounding: '0.1' -> 1/10, '1/3' -> 1/3, '-2,500' -> -2500
    assert to_number("0.1") == Fraction(1, 10)
    assert to_number("1/3") == Fraction(1, 3)
    assert to_number("-2,500") == -2500
    assert to_number("1/0") is None  # ZeroDivisionError -> None
    assert to_number("abc") is None


def test_numeric_answer_reward_and_missing_field():
    # extracted '1,000' vs reference '1000' -> 1.0; wrong -> 0.0
    assert numeric_answer("q", "so #### 1,000", {"answer": "1000"}) == 1.0
    assert numeric_answer("q", "<answer>7</answer>", {"answer": "8"}) == 0.0
    with pytest.raises(KeyError, match="'answer'"):
        numeric_answer("q", "7", {"question": "7"})  # (`solution` is read in its place: test_answer_alias)


def test_answer_format_reward():
    # exactly one non-empty <answer> pair -> 1, otherwise 0
    assert answer_format("q", "x <answer>4</answer>", {}) == 1.0
    assert answer_format("q", "<answer> </answer>", {}) == 0.0
    assert answer_format("q", "<answer>1</answer><answer>2</answer>", {}) == 0.0
    assert answer_format("q", "4", {}) == 0.0


# ---------------------------------------------------------------- pass@k and majority


def test_pass_at_k_hand_computed():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # n=5, c=1, k=1: 1 - C(4,1)/C(5,1) = 1 - 4/5 = 0.2 (= accuracy for k=1)
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    # n=4, c=1, k=3: 1 - C(3,3)/C(4,3) = 1 - 1/4 = 0.75
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75)
    # no correct sample: 1 - C(5,2)/C(5,2) = 0
    assert pass_at_k(5, 0, 2) == 0.0
    # n-c=1 < k=2: every 2-subset holds a correct sample -> 1
    assert pass_at_k(5, 4, 2) == 1.0


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


def test_majority_first_seen_wins_ties():
    # counts: '7' x2, '3' x2 -> tie; '3' was seen first
    assert majority_answer(["3", "7", "7", "3"]) == "3"
    # a clear majority beats order
    assert majority_answer(["3", "7", "7"]) == "7"


def test_majority_normalises_numbers_and_ignores_none():
    # '1,000', '1000' and '1000.0' are one vote of 3 for 1000; '5' has 2 -> the first spelling wins
    assert majority_answer(["5", "1,000", None, "1000", "5", "1000.0"]) == "1,000"
    # strings vote case/whitespace-insensitively: 'Paris' + ' paris' = 2 > 'Rome' 1
    assert majority_answer(["Rome", "Paris", " paris"]) == "Paris"
    assert majority_answer([None, None]) is None


def test_score_row_hand_computed():
    comps = ["<answer>7</answer>", "it is 6", "#### 7", "nothing"]
    res = score_row(comps, "7", k=2)
    # answers ['7', '6', '7', None]; correct [T, F, T, F] -> accuracy 2/4 = 0.5
    assert res["answers"] == ["7", "6", "7", None]
    assert res["accuracy"] == pytest.approx(0.5)
    # pass@2 with n=4, c=2: 1 - C(2,2)/C(4,2) = 1 - 1/6 = 0.833333
    assert res["pass"] == pytest.approx(5 / 6)
    # majority of ['7','6','7'] is '7' == reference -> maj 1.0
    assert res["maj"] == 1.0


def test_comma_list_is_not_one_number():
    # only groups of exactly three digits after a comma are thousands separators: '3,4' is not 34
    assert answers_equal("3,4", "34") is False
    assert to_number("2,3,5") is None
    assert to_number("12,345") == 12345  # still a valid grouping
