"""Rankings with ties: validation, rank levels, and inter-annotator agreement (Kendall tau-b).

A ranking lists response indices best to worst; an element that is a list is a group of tied
responses: ``[2, [0, 3], 1]`` over K=4 responses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

Ranking = list[int | list[int]]


class RankingError(ValueError):
    """A submitted ranking is not a permutation of 0..K-1 with optional tie groups."""


def validate_ranking(ranking: Any, k: int) -> Ranking:
    """Check `ranking` covers each of 0..k-1 exactly once; return it normalised (one-element
    groups become plain indices, tie groups sorted ascending)."""
    if not isinstance(ranking, list) or not ranking:
        raise RankingError("ranking must be a non-empty list of response indices, best first")
    seen: set[int] = set()
    out: Ranking = []
    for pos, item in enumerate(ranking):
        group = item if isinstance(item, list) else [item]
        if not group:
            raise RankingError(f"empty tie group at position {pos}")
        for idx in group:
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < k:
                raise RankingError(f"{idx!r} is not a response index 0..{k - 1}")
            if idx in seen:
                raise RankingError(f"response {idx} appears twice")
            seen.add(idx)
        out.append(group[0] if len(group) == 1 else sorted(group))
    if len(seen) != k:
        missing = sorted(set(range(k)) - seen)
        raise RankingError(f"responses {missing} are not ranked (expected all of 0..{k - 1})")
    return out


def rank_levels(ranking: Sequence[int | Sequence[int]], k: int) -> list[int]:
    """levels[i] = position of response i's group (0 = best). [2, [0, 3], 1] -> [1, 2, 0, 1]."""
    levels = [-1] * k
    for level, item in enumerate(ranking):
        for idx in item if isinstance(item, (list, tuple)) else [item]:
            levels[idx] = level
    return levels


def kendall_tau_b(x: Sequence[int], y: Sequence[int]) -> float | None:
    """Kendall's tau-b between two rank-level vectors over the same items (Kendall 1945):

        tau_b = (n_c - n_d) / sqrt((n_0 - n_x) * (n_0 - n_y))

    with n_0 = n(n-1)/2 pairs, n_c / n_d concordant / discordant pairs (a pair tied in either
    vector is neither), n_x / n_y pairs tied in x / y. None when undefined (one vector all tied).
    """
    if len(x) != len(y):
        raise ValueError(f"rank vectors differ in length: {len(x)} vs {len(y)}")
    n_c = n_d = n_x = n_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        n_x += dx == 0
        n_y += dy == 0
        if dx * dy > 0:
            n_c += 1
        elif dx * dy < 0:
            n_d += 1
    n_0 = len(x) * (len(x) - 1) // 2
    denom = math.sqrt((n_0 - n_x) * (n_0 - n_y))
    return None if denom == 0 else (n_c - n_d) / denom


def agreement(rankings_by_prompt: Mapping[str, Mapping[str, Sequence[Any]]], ks: Mapping[str, int]) -> dict:
    """Mean pairwise tau-b: per prompt the mean over annotator pairs, then the mean over prompts
    ranked by >= 2 annotators. `rankings_by_prompt[prompt_id][annotator] = ranking`, `ks[prompt_id]`
    = number of responses. Pairs where tau-b is undefined (an all-tied ranking) are counted apart."""
    per_prompt: list[float] = []
    overlap = pairs = undefined = 0
    for pid, by_annotator in rankings_by_prompt.items():
        if len(by_annotator) < 2:
            continue
        overlap += 1
        levels = [rank_levels(r, ks[pid]) for _, r in sorted(by_annotator.items())]
        taus = []
        for a, b in combinations(levels, 2):
            tau = kendall_tau_b(a, b)
            if tau is None:
                undefined += 1
            else:
                taus.append(tau)
        pairs += len(taus)
        if taus:
            per_prompt.append(sum(taus) / len(taus))
    mean = sum(per_prompt) / len(per_prompt) if per_prompt else None
    return {"mean_tau_b": mean, "prompts_overlap": overlap, "pairs": pairs, "undefined_pairs": undefined}
