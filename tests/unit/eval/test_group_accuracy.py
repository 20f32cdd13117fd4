"""Accuracy per value of a row field (e.g. seen vs unseen phrasings of the built-in task)."""

from __future__ import annotations

from rlft.eval.accuracy import eval_summary, group_accuracies
from rlft.eval.compare import summary_line


def test_each_value_gets_the_mean_accuracy_of_its_rows():
    rows = [{"phrasing": "seen"}, {"phrasing": "unseen"}, {"phrasing": "seen"}, {}, {"phrasing": "unseen"}]
    per_row = [{"accuracy": a} for a in (1.0, 0.0, 0.5, 1.0, 1.0)]
    # seen: (1 + 0.5) / 2 = 0.75; unseen: (0 + 1) / 2 = 0.5; the row without the field is left out
    assert group_accuracies(rows, per_row, "phrasing") == {
        "accuracy/phrasing=seen": 0.75,
        "accuracy/phrasing=unseen": 0.5,
    }
    assert group_accuracies(rows, per_row, "") == {}


def test_the_summary_and_its_line_carry_the_groups():
    res = {
        "accuracy": 0.6, "pass@k": 0.6, "maj@k": 0.6, "n": 4, "k": 1, "mean_response_tokens": 9.0,
        "truncated_frac": 0.0, "rows": [], "accuracy/phrasing=seen": 0.75, "accuracy/phrasing=unseen": 0.5,
    }  # fmt: skip
    assert eval_summary(res)["accuracy/phrasing=unseen"] == 0.5 and "rows" not in eval_summary(res)
    assert summary_line("m", res).endswith("phrasing=seen 0.7500  phrasing=unseen 0.5000")
