"""Ranking validation, rank levels and Kendall tau-b, each expected value worked out by hand."""

from __future__ import annotations

import math

import pytest

from rlft.label.agreement import RankingError, agreement, kendall_tau_b, rank_levels, validate_ranking


def test_rank_levels_of_nested_ranking():
    # [2, [0, 3], 1]: response 2 is best (level 0), 0 and 3 tie next (level 1), 1 last (level 2)
    assert rank_levels([2, [0, 3], 1], 4) == [1, 2, 0, 1]


def test_tau_one_adjacent_swap():
    # x = [0,1,2,3] vs y = [1,0,2,3] as rank levels. Of the 6 pairs only (0,1) flips:
    # concordant 5, discordant 1, no ties -> tau = (5 - 1) / sqrt(6 * 6) = 4/6
    assert kendall_tau_b([0, 1, 2, 3], [1, 0, 2, 3]) == pytest.approx(4 / 6)


def test_tau_identical_and_reversed():
    # identical: 6 concordant -> 6/6 = 1; reversed: 6 discordant -> -6/6 = -1
    assert kendall_tau_b([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau_b([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)


def test_tau_b_tie_in_one_ranking():
    # x levels [0,0,1,2] (0 and 1 tied), y levels [0,1,2,3]. Pair (0,1) is tied in x: n_x = 1,
    # counted neither way; the other 5 pairs are concordant. n_0 = 6, n_y = 0:
    # tau_b = 5 / sqrt((6 - 1) * (6 - 0)) = 5 / sqrt(30) ~ 0.9129
    assert kendall_tau_b([0, 0, 1, 2], [0, 1, 2, 3]) == pytest.approx(5 / math.sqrt(30))


def test_tau_b_ties_in_both_rankings():
    # x levels [0,0,1,2], y levels [0,1,1,2]. (0,1) tied in x, (1,2) tied in y; the other four
    # pairs (0,2) (0,3) (1,3) (2,3) are concordant: tau_b = 4 / sqrt((6-1) * (6-1)) = 4/5
    assert kendall_tau_b([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx(0.8)


def test_tau_b_ranking_vs_its_reverse_with_shared_tie():
    # [2,[0,3],1] -> levels [1,2,0,1]; [1,[0,3],2] -> levels [1,0,2,1]. Pair (0,3) is tied in both
    # (n_x = n_y = 1); the remaining 5 pairs are all discordant: tau_b = -5 / sqrt(5 * 5) = -1
    x, y = rank_levels([2, [0, 3], 1], 4), rank_levels([1, [0, 3], 2], 4)
    assert kendall_tau_b(x, y) == pytest.approx(-1.0)


def test_tau_b_undefined_when_all_tied():
    # every pair tied in x: n_0 - n_x = 0, the denominator vanishes
    assert kendall_tau_b([0, 0, 0], [0, 1, 2]) is None
    with pytest.raises(ValueError, match="length"):
        kendall_tau_b([0, 1], [0, 1, 2])


def test_agreement_means_over_pairs_then_prompts():
    rankings = {
        # alice-bob 4/6, alice-carol 1, bob-carol 4/6 -> prompt mean (2/3 + 1 + 2/3) / 3 = 7/9
        "a": {"alice": [0, 1, 2, 3], "bob": [1, 0, 2, 3], "carol": [0, 1, 2, 3]},
        # fully reversed -> -1
        "b": {"alice": [0, 1, 2], "bob": [2, 1, 0]},
        # one annotator only: no overlap, ignored
        "c": {"alice": [1, 0]},
        # alice ties everything: tau-b undefined, counted apart, no prompt mean
        "d": {"alice": [[0, 1]], "bob": [0, 1]},
    }
    res = agreement(rankings, {"a": 4, "b": 3, "c": 2, "d": 2})
    # mean over prompts with a defined mean: (7/9 + (-1)) / 2 = -1/9
    assert res["mean_tau_b"] == pytest.approx(-1 / 9)
    assert res["prompts_overlap"] == 3
    assert res["pairs"] == 4
    assert res["undefined_pairs"] == 1


def test_agreement_without_overlap():
    res = agreement({"a": {"alice": [0, 1]}}, {"a": 2})
    assert res == {"mean_tau_b": None, "prompts_overlap": 0, "pairs": 0, "undefined_pairs": 0}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([2, [0, 3], 1], [2, [0, 3], 1]),
        ([[2], [3, 0], 1], [2, [0, 3], 1]),  # one-element groups flattened, groups sorted
        ([[0, 1, 2, 3]], [[0, 1, 2, 3]]),  # all tied is a valid (if uninformative) ranking
        ([3, 2, 1, 0], [3, 2, 1, 0]),
    ],
)
def test_validate_ranking_accepts_and_normalises(given, expected):
    assert validate_ranking(given, 4) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], "non-empty list"),
        ("0123", "non-empty list"),
        ({"0": 1}, "non-empty list"),
        ([0, 1, 2], r"responses \[3\] are not ranked"),
        ([0, 1, 1, 2, 3], "appears twice"),
        ([0, [1, 2], 2, 3], "appears twice"),
        ([0, 1, 2, 4], "not a response index 0..3"),
        ([0, 1, 2, -1], "not a response index"),
        ([0, 1, 2, True], "not a response index"),
        ([0, 1, 2, "3"], "not a response index"),
        ([0, 1, 2, 3.0], "not a response index"),
        ([0, 1, [], 2, 3], "empty tie group at position 2"),
        ([[0, [1]], 2, 3], "not a response index"),
        ([0, 1, 2, None], "not a response index"),
    ],
)
def test_validate_ranking_rejects(given, message):
    with pytest.raises(RankingError, match=message):
        validate_ranking(given, 4)
