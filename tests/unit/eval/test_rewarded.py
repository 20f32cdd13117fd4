"""Held-out evaluation scored by reward functions: hand-worked per-reward means, weighted totals,
accuracy at the pass threshold and pass@k for fixed completions, through training's scoring entry
(per-sample, TRL-shaped, async and batched rewards); `--reward` arguments as config entries."""

from __future__ import annotations

import pytest

from rlft.config.loader import ConfigError
from rlft.errors import DataError
from rlft.eval.accuracy import eval_summary, score_rows, summarize
from rlft.eval.compare import comparison_table, summary_line
from rlft.eval.rewarded import reward_specs, terms_from_args
from rlft.rewards.scoring import RewardError, RewardTerm
from rlft.rollout.base import Generations

ROWS = [
    {"prompt": "Name a primary colour.", "solution": "red"},
    {"prompt": "The opposite of up?", "solution": "down"},
]
COMPLETIONS = ["red", "blue", "down", "sideways"]  # two samples per row, row-major


def exact(prompt, completion, example):
    return 1.0 if completion == example["solution"] else 0.0


async def exact_async(prompt, completion, example):
    return exact(prompt, completion, example)


def short(completions, solution, **kwargs):  # TRL's shape: one value per completion, None = n/a
    return [len(c) / 10 if len(c) < 8 else None for c in completions]


def exact_batched(prompts, completions, examples):
    return [exact(p, c, e) for p, c, e in zip(prompts, completions, examples, strict=True)], {
        "judge/calls": 1.0
    }


exact_batched.rlft_batched = True


def _terms(first=exact, **first_kwargs) -> list[RewardTerm]:
    return [
        RewardTerm("exact", first, 1.0, **first_kwargs),
        RewardTerm("short", short, 0.5, trl=True),
    ]


def _score(terms, threshold=1.0, k_values=(1,)):
    prompts = [r["prompt"] for r in ROWS]
    return score_rows(ROWS, prompts, COMPLETIONS, 2, terms=terms, pass_threshold=threshold, k_values=k_values)


def test_reward_scoring_hand_worked():
    per_row, extra = _score(_terms())
    # exact: red=1 blue=0 down=1 sideways=0 -> mean 0.5
    # short: red 0.3, blue 0.4, down 0.4, sideways (8 chars) None -> mean over 3 = 1.1/3
    # totals (exact + 0.5 short): 1.15, 0.2, 1.2, 0.0 -> mean 2.55/4 = 0.6375
    assert extra["reward/exact"] == 0.5
    assert extra["reward/short"] == pytest.approx(1.1 / 3)
    assert extra["reward"] == pytest.approx(0.6375)
    assert extra["reward/exact_failures"] == 0.0 and extra["maj@k"] is None
    assert extra["scoring"] == "rewards: exact x1, short x0.5" and extra["pass_threshold"] == 1.0
    assert [r["reward"] for r in per_row] == [pytest.approx([1.15, 0.2]), pytest.approx([1.2, 0.0])]
    assert per_row[1]["rewards"] == {"exact": [1.0, 0.0], "short": [pytest.approx(0.4), 0.0]}
    # threshold 1: correct = [T, F], [T, F]: accuracy 1/2 per row; pass@2 (n=2, c=1) = 1; pass@1 = c/n
    assert [r["correct"] for r in per_row] == [[True, False], [True, False]]
    assert [(r["accuracy"], r["pass"], r["pass@1"]) for r in per_row] == [(0.5, 1.0, 0.5)] * 2
    assert "answer" not in per_row[0] and per_row[0]["completions"] == ["red", "blue"]


def test_the_pass_threshold_decides_accuracy():
    # threshold 1.2: only 'down' (1.2, within float rounding) passes -> row 0 accuracy 0, pass@2 0;
    # row 1 accuracy 1/2, pass@2 1
    per_row, _ = _score(_terms(), threshold=1.2)
    assert [r["correct"] for r in per_row] == [[False, False], [True, False]]
    assert [(r["accuracy"], r["pass"]) for r in per_row] == [(0.0, 0.0), (0.5, 1.0)]
    # threshold 0.1: every total but sideways' 0.0 passes
    per_row, _ = _score(_terms(), threshold=0.1)
    assert [r["correct"] for r in per_row] == [[True, True], [True, False]]


def test_one_verifier_of_weight_one_is_answer_accuracy():
    per_row, extra = _score([RewardTerm("exact", exact)])
    assert [r["accuracy"] for r in per_row] == [0.5, 0.5] and extra["reward"] == 0.5


@pytest.mark.parametrize(
    "term",
    [
        RewardTerm("exact", exact_async),  # awaited together
        RewardTerm("exact", exact_batched, batched=True),  # rlft's batched shape (reward models)
        RewardTerm("exact", exact, timeout_s=5.0, workers=2),  # a slow reward's thread pool
    ],
)
def test_every_reward_shape_scores_the_same(term):
    _, extra = _score([term, RewardTerm("short", short, 0.5, trl=True)])
    assert extra["reward/exact"] == 0.5 and extra["reward"] == pytest.approx(0.6375)
    if term.batched:
        assert extra["judge/calls"] == 1.0  # a batched term's own metrics come along


def test_a_reward_failing_everywhere_stops_the_evaluation():
    def broken(prompt, completion, example):
        return example["no_such_column"]

    with pytest.raises(RewardError, match="reward 'broken' failed on all 4 completions"):
        _score([RewardTerm("broken", broken)])


def test_summary_keys_and_the_table_under_reward_scoring():
    per_row, extra = _score(_terms())
    gens = Generations(response_ids=[[1], [1, 2], [1], [1]], finished=[True] * 4)
    res = {**summarize(per_row, gens, 2, [1]), **extra}
    summary = eval_summary(res)
    # the contract's keys stay (maj@k null: no vote without an answer), the reward keys follow
    assert list(summary)[:8] == [
        "accuracy", "pass@k", "maj@k", "n", "k", "mean_response_tokens", "truncated_frac", "pass@1"
    ]  # fmt: skip
    assert summary["maj@k"] is None and summary["reward"] == pytest.approx(0.6375)
    assert {"scoring", "pass_threshold", "reward/exact", "reward/short"} <= set(summary)
    assert "maj@2" not in summary_line("m", res) and "reward 0.6375" in summary_line("m", res)
    assert comparison_table({"m": res}).splitlines()[0].split()[-3] == "reward"


def test_reward_arguments_become_config_entries():
    specs = reward_specs(["numeric_answer", '{"fn": "tag_count", "weight": 0.2, "kwargs": {"a": 1}}'])
    assert [(s.fn, s.weight, s.kwargs) for s in specs] == [
        ("numeric_answer", 1.0, {}),
        ("tag_count", 0.2, {"a": 1}),
    ]
    weighted = reward_specs(["numeric_answer", "answer_format"], [0.7, 0.3])
    assert [s.weight for s in weighted] == [0.7, 0.3]
    with pytest.raises(ConfigError, match="--reward-weight given 1 times for 2 --reward"):
        reward_specs(["numeric_answer", "answer_format"], [0.7])
    with pytest.raises(ConfigError, match="did you mean 'rewards.weight'"):
        reward_specs(['{"fn": "numeric_answer", "wieght": 2}'])
    terms = terms_from_args(["numeric_answer"], (), prompt_field="question")
    assert [(t.name, t.weight, t.prompt_field) for t in terms] == [("numeric_answer", 1.0, "question")]
    assert terms_from_args([]) == []
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        terms_from_args(["nope"])


def test_answer_matching_reads_a_worked_solution_like_the_answer_rewards():
    rows = [{"prompt": "2 + 3?", "solution": "Add them: 2 + 3 = 5.\n#### 5"}, {"prompt": "x", "answer": "7"}]
    per_row, extra = score_rows(rows, ["2 + 3?", "x"], ["<answer>5</answer>", "7"], 1)
    # the worked solution is reduced to its final answer 5; the second row uses its own answer
    assert [r["answer"] for r in per_row] == ["5", "7"] and [r["accuracy"] for r in per_row] == [1.0, 1.0]
    assert extra == {"scoring": "answer"}
    with pytest.raises(DataError, match=r"here:3: missing field 'answer' \(or 'solution'\)"):
        score_rows([{"prompt": "p", "_source": "here:3"}], ["p"], ["1"], 1)
    with pytest.raises(DataError, match=r"missing field 'ref' to match"):  # no alias for another field
        score_rows([{"prompt": "p", "solution": "1"}], ["p"], ["1"], 1, answer_field="ref")
