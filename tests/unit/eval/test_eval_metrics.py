"""The evaluator's arithmetic: pass@k edge cases, maj@k ties, several k from the same samples,
the summary, the side-by-side table, and the model-path checks of `rlft eval`."""

from __future__ import annotations

import pytest

from rlft.eval.accuracy import check_k_values, majority_answer, pass_at_k, score_row, summarize
from rlft.eval.compare import check_model_dir, comparison_table, rows_path_for, summary_line
from rlft.rollout.base import Generations


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 3, 1, 0.3),  # 1 - C(7,1)/C(10,1) = 1 - 7/10
        (10, 3, 5, 11 / 12),  # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 1 - 1/12
        (8, 2, 4, 11 / 14),  # 1 - C(6,4)/C(8,4) = 1 - 15/70 = 55/70
        (10, 0, 10, 0.0),  # nothing correct: 0 for every k
        (10, 10, 1, 1.0),  # everything correct
        (1, 1, 1, 1.0),  # one sample, right
        (1, 0, 1, 0.0),  # one sample, wrong: 1 - C(1,1)/C(1,1)
        (4, 1, 4, 1.0),  # k = n: any correct sample is in the only 4-subset
        (6, 2, 5, 1.0),  # n - c = 4 < k = 5: every 5-subset holds a correct one
        (6, 2, 4, 14 / 15),  # 1 - C(4,4)/C(6,4) = 1 - 1/15
    ],
)
def test_pass_at_k_hand_computed_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_1_is_the_fraction_correct():
    # 1 - C(n-c, 1)/C(n, 1) = 1 - (n-c)/n = c/n for every n, c
    for n in range(1, 7):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 0), (5, 6, 1), (5, -1, 1), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["5", "6", "7"], "5"),  # three-way tie of one vote each: the first seen
        ([None, "4", "9"], "4"),  # None is no vote; '4' and '9' tie, '4' first
        (["2.0", "3", "2", "3"], "2.0"),  # 2.0 == 2 (two votes) ties '3' (two): first spelling wins
        (["3", "8", "8", "3", "8"], "8"),  # 3 votes beat 2, whatever the order
        ([None, None, "1"], "1"),  # a lone real answer beats any number of blanks
    ],
)
def test_majority_ties_go_to_the_first_seen(answers, expected):
    assert majority_answer(answers) == expected


def test_maj_at_k_tie_won_by_a_wrong_answer_scores_zero():
    # answers ['6', '7'] tie, '6' seen first and wrong -> maj 0; accuracy 1/2;
    # pass@2 with n=2, c=1: n - c = 1 < 2 -> 1
    res = score_row(["<answer>6</answer>", "<answer>7</answer>"], "7", k=2)
    assert (res["maj"], res["accuracy"], res["pass"]) == (0.0, 0.5, 1.0)
    res = score_row(["<answer>7</answer>", "<answer>6</answer>"], "7", k=2)
    assert res["maj"] == 1.0  # same votes, the right answer first


def test_several_k_from_the_same_samples():
    comps = ["<answer>1</answer>", "<answer>2</answer>", "<answer>3</answer>", "<answer>9</answer>"]
    res = score_row(comps, "9", k=4, k_values=[1, 2])
    # n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2; pass@4 = 1
    assert res["pass@1"] == pytest.approx(0.25) and res["pass@2"] == pytest.approx(0.5)
    assert res["pass"] == 1.0
    assert check_k_values([4, 1, 4, 2], 4) == [1, 2, 4]
    with pytest.raises(ValueError, match=r"\[8\] must lie between 1 and the samples per prompt \(4\)"):
        check_k_values([1, 8], 4)


def test_summarize_means_over_rows_and_lengths():
    rows = [
        {"accuracy": 0.5, "pass": 1.0, "pass@1": 0.5, "maj": 0.0},
        {"accuracy": 1.0, "pass": 1.0, "pass@1": 1.0, "maj": 1.0},
    ]
    gens = Generations(
        response_ids=[[1, 2], [1, 2, 3, 4], [1, 2, 3], [5, 6, 7]], finished=[True, False, True, True]
    )
    s = summarize(rows, gens, samples=2, k_values=[1])
    # accuracy (0.5 + 1)/2 = 0.75, pass@2 1, pass@1 0.75, maj (0 + 1)/2 = 0.5
    assert (s["accuracy"], s["pass@k"], s["pass@1"], s["maj@k"]) == (0.75, 1.0, 0.75, 0.5)
    # tokens (2 + 4 + 3 + 3)/4 = 3; one of 4 not finished -> truncated 0.25
    assert (s["mean_response_tokens"], s["truncated_frac"], s["n"], s["k"]) == (3.0, 0.25, 2, 2)


def _res(acc: float, p1: float, p4: float, maj: float, tokens: float, n: int) -> dict:
    return {"accuracy": acc, "pass@1": p1, "pass@4": p4, "pass@k": p4, "maj@k": maj, "k": 4,
            "mean_response_tokens": tokens, "truncated_frac": 0.0, "n": n}  # fmt: skip


def test_comparison_table_one_row_per_model():
    table = comparison_table(
        {"base": _res(0.25, 0.25, 0.5, 0.0, 12.0, 8), "runs/a/final": _res(1, 1, 1, 1, 3.25, 8)}
    )
    assert table.splitlines() == [
        "model         accuracy    pass@1    pass@4     maj@4  mean_tokens      n",
        "base            0.2500    0.2500    0.5000    0.0000         12.0      8",
        "runs/a/final    1.0000    1.0000    1.0000    1.0000          3.2      8",
    ]


def test_summary_line_of_one_model():
    line = summary_line("base", _res(0.25, 0.25, 0.5, 0.0, 12.0, 8))
    assert line == (
        "model base: accuracy 0.2500  pass@1 0.2500  pass@4 0.5000  maj@4 0.0000  n=8  mean tokens 12.0"
    )


def test_rows_file_per_model():
    assert rows_path_for("out/rows.jsonl", "runs/a/final", several=False) == "out/rows.jsonl"
    assert rows_path_for("out/rows.jsonl", "runs/a/final/", several=True) == "out/rows.runs_a_final.jsonl"
    assert rows_path_for("rows.jsonl", "org/Model-1.5B", several=True) == "rows.org_Model-1.5B.jsonl"


def test_model_dir_checks_name_the_problem(tmp_path):
    run = tmp_path / "run"
    lora = run / "checkpoints" / "step-3"
    lora.mkdir(parents=True)
    (lora / "COMPLETE").write_text("3")
    (lora / "trainable.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="LoRA checkpoint holds only the adapter weights"):
        check_model_dir(str(lora))
    partial = run / "checkpoints" / "step-4"
    partial.mkdir()
    with pytest.raises(ValueError, match=r"step-4: incomplete checkpoint \(no COMPLETE marker\)"):
        check_model_dir(str(partial))
    with pytest.raises(ValueError, match="not a model directory; complete checkpoints inside: .*step-3"):
        check_model_dir(str(run))
    (run / "final").mkdir()
    (run / "final" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=f"did you mean {run / 'final'}"):
        check_model_dir(str(run))
    with pytest.raises(ValueError, match="no tokenizer files"):
        check_model_dir(str(run / "final"))
