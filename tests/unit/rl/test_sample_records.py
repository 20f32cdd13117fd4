"""samples.jsonl records: the best and worst completion of each prompt's group come first."""

from __future__ import annotations

import torch

from rlft.batch import Rollouts, ScoredBatch
from rlft.rl.records import sample_records


def batch(scores: list[float], group_ids: list[int]) -> ScoredBatch:
    b = len(scores)
    rollouts = Rollouts(
        input_ids=torch.zeros(b, 3, dtype=torch.long),
        attention_mask=torch.ones(b, 3, dtype=torch.long),
        response_mask=torch.ones(b, 1, dtype=torch.bool),
        group_ids=torch.tensor(group_ids),
        prompts=[f"p{g}" for g in group_ids],
        completions=[f"c{i}" for i in range(b)],
        examples=[{"answer": str(g)} for g in group_ids],
        truncated=torch.zeros(b, dtype=torch.bool),
    )
    return ScoredBatch(rollouts=rollouts, scores=torch.tensor(scores))


def picked(records: list[dict]) -> list[tuple[str, int, str]]:
    return [(r["completion"], r["group"], r["tag"]) for r in records]


def test_best_and_worst_of_each_group_then_the_rest():
    # group 0 = rows 0-2 with scores 0.5, 1.0, 0.0: best row 1, worst row 2
    # group 1 = rows 3-5 with scores 0.2, 0.2, 0.9: best row 5, worst row 3 (first of the tied .2s)
    b = batch([0.5, 1.0, 0.0, 0.2, 0.2, 0.9], [0, 0, 0, 1, 1, 1])
    assert picked(sample_records(b, 6)) == [
        ("c1", 0, "best"),
        ("c2", 0, "worst"),
        ("c5", 1, "best"),
        ("c3", 1, "worst"),
        ("c0", 0, ""),
        ("c4", 1, ""),
    ]
    first = sample_records(b, 3)
    assert picked(first) == [("c1", 0, "best"), ("c2", 0, "worst"), ("c5", 1, "best")]
    assert first[0] == {
        "prompt": "p0",
        "completion": "c1",
        "score": 1.0,
        "answer": "0",
        "group": 0,
        "tag": "best",
    }


def test_all_equal_scores_and_single_sample_groups():
    # all tied: best is the first row, worst the first of the others; a group of one has only a best
    b = batch([1.0, 1.0, 1.0, 0.3], [4, 4, 4, 9])
    assert picked(sample_records(b, 4)) == [
        ("c0", 0, "best"),
        ("c1", 0, "worst"),
        ("c3", 1, "best"),
        ("c2", 0, ""),
    ]
