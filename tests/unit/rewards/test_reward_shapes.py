"""Reward functions in TRL's shape run unchanged: TRL's documented examples (a length reward, an
accuracy reward on a `solution` column, a regex format reward), written afresh here, score a
conversational batch exactly as their per-sample equivalents; `None`, `async def`, a missing
column, a wrong count and `pkg.mod.fn` names."""

from __future__ import annotations

import re
import sys
import types

import pytest
import torch

from rlft.config.rl import RewardSpec
from rlft.rewards.registry import resolve_reward, reward_name
from rlft.rewards.scoring import RewardError, build_terms, score_completions
from rlft.rewards.shapes import MissingColumns, is_trl_shaped


def reward_len(completions, **kwargs):
    """TRL's example: completions close to 20 characters score best."""
    return [-abs(20 - len(c[0]["content"])) for c in completions]


def accuracy(completions, solution, **kwargs):
    """TRL's example on a `solution` column: 1 when the completion contains it."""
    return [1.0 if s in c[0]["content"] else 0.0 for c, s in zip(completions, solution, strict=True)]


def format_reward(completions, **kwargs):
    """TRL's example: the <think>...</think><answer>...</answer> template, as a regex."""
    pattern = r"^<think>.*?</think>\s*<answer>.*?</answer>$"
    return [1.0 if re.match(pattern, c[0]["content"], re.S) else 0.0 for c in completions]


def len_per_sample(prompt, completion, example):
    return float(-abs(20 - len(completion)))


def accuracy_per_sample(prompt, completion, example):
    return 1.0 if example["solution"] in completion else 0.0


def format_per_sample(prompt, completion, example):
    return 1.0 if re.match(r"^<think>.*?</think>\s*<answer>.*?</answer>$", completion, re.S) else 0.0


ROWS = [
    {"prompt": [{"role": "user", "content": "What is 2 + 3?"}], "solution": "5", "_source": "d.jsonl:1"},
    {"prompt": [{"role": "user", "content": "What is 4 * 4?"}], "solution": "16", "_source": "d.jsonl:2"},
    {"prompt": [{"role": "user", "content": "What is 9 - 7?"}], "solution": "2", "_source": "d.jsonl:3"},
]
COMPLETIONS = ["<think>2 and 3</think> <answer>5</answer>", "It is 15.", "<answer>2</answer>"]
TEXTS = ["<templated prompt>"] * 3


def _scores(fns: dict) -> tuple[torch.Tensor, dict[str, float]]:
    return score_completions(build_terms([], fns), TEXTS, COMPLETIONS, ROWS, [[1, 2], [3], [4, 5, 6]])


def test_trl_examples_score_as_their_per_sample_equivalents():
    assert all(map(is_trl_shaped, (reward_len, accuracy, format_reward)))
    assert not is_trl_shaped(len_per_sample)
    trl, m_trl = _scores({"len": reward_len, "acc": accuracy, "fmt": format_reward})
    mine, m_mine = _scores({"len": len_per_sample, "acc": accuracy_per_sample, "fmt": format_per_sample})
    # lengths 41, 9, 18 -> -21, -11, -2; solutions 5 yes, 16 no, 2 yes -> 1, 0, 1; format 1, 0, 0
    # weighted sums (weights 1): -21 + 1 + 1 = -19, -11 + 0 + 0 = -11, -2 + 1 + 0 = -1
    assert trl.tolist() == mine.tolist() == [-19.0, -11.0, -1.0]
    for key in ("reward/len", "reward/acc", "reward/fmt", "reward/mean"):
        assert m_trl[key] == m_mine[key], key


def test_trl_calls_get_the_datasets_own_prompts_ids_and_columns():
    seen = {}

    def spy(prompts, completions, completion_ids, solution, **kwargs):
        seen.update(
            prompts=prompts, completions=completions, ids=completion_ids, solution=solution, kw=kwargs
        )
        return [0.0] * len(completions)

    _scores({"spy": spy})
    assert seen["prompts"] == [r["prompt"] for r in ROWS]  # the message lists, not templated text
    assert seen["completions"][1] == [{"role": "assistant", "content": "It is 15."}]
    assert seen["ids"] == [[1, 2], [3], [4, 5, 6]] and seen["solution"] == ["5", "16", "2"]
    assert seen["kw"] == {}  # no other column; rlft's own `_source` stays out
    # string prompts: completions stay strings
    rows = [{"prompt": "What is 2 + 3?", "solution": "5"}]
    score_completions(build_terms([], {"spy": spy}), ["t"], ["5"], rows)
    assert seen["prompts"] == ["What is 2 + 3?"] and seen["completions"] == ["5"]


def test_none_does_not_apply_and_is_left_out_of_the_terms_mean():
    def only_long(completions, **kwargs):
        return [None if len(c[0]["content"]) < 12 else 2.0 for c in completions]

    scores, m = _scores({"long": only_long})
    # lengths 41, 9, 18: 2, None, 2 -> scores 2, 0, 2; mean over the 2 samples it applies to = 2
    assert scores.tolist() == [2.0, 0.0, 2.0]
    assert m["reward/long"] == 2.0 and m["reward/long_failures"] == 0.0


def test_async_rewards_of_both_shapes_are_awaited():
    async def trl_async(completions, **kwargs):
        return [float(len(c[0]["content"]) % 7) for c in completions]

    async def sample_async(prompt, completion, example):
        return float(len(completion) % 7)

    a, _ = _scores({"a": trl_async})
    b, _ = _scores({"b": sample_async})
    assert a.tolist() == b.tolist() == [41 % 7, 9 % 7, 18 % 7]


def test_a_column_the_dataset_lacks_stops_the_run_naming_file_and_columns():
    def needs_answer(completions, answer, **kwargs):
        return [1.0] * len(completions)

    with pytest.raises(MissingColumns) as caught:
        _scores({"needs_answer": needs_answer})
    assert str(caught.value) == (
        "reward 'needs_answer' needs the column(s) 'answer', which d.jsonl does not have "
        "(its columns: solution)"
    )


@pytest.mark.parametrize(
    "result, message",
    [([1.0], "returned 1 values for 3 completions"), (1.0, "returned a float, not a list of 3 values")],
)
def test_a_wrong_result_fails_every_completion_and_stops_the_step(result, message):
    def wrong(completions, **kwargs):
        return result

    with pytest.raises(RewardError, match=f"reward 'wrong' failed on all 3 completions .*{message}"):
        _scores({"wrong": wrong})


def test_dotted_module_names_resolve_like_colon_names(monkeypatch):
    module = types.ModuleType("rwshape_pkg_for_test")
    module.reward_len = reward_len
    monkeypatch.setitem(sys.modules, "rwshape_pkg_for_test", module)
    assert resolve_reward("rwshape_pkg_for_test.reward_len") is reward_len
    assert resolve_reward("rwshape_pkg_for_test:reward_len") is reward_len
    assert reward_name("rwshape_pkg_for_test.reward_len") == "reward_len"
    (term,) = build_terms([RewardSpec(fn="rwshape_pkg_for_test.reward_len")])
    assert term.name == "reward_len" and term.trl
    with pytest.raises(ValueError, match="name the function in the file, e.g. my.py:my_reward"):
        resolve_reward("my.py")
