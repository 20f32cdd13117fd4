"""Evaluating a user's own task on the tiny model: `rlft eval --reward` (rewards instead of answer
matching, the prompt format as given, rows from a `datasets` dir split), and an RL run on a user
dataset whose held-out share is never trained on and is scored by the run's rewards before
training (in process) and after it (in a fresh `rlft eval` process), with the same numbers."""

from __future__ import annotations

import json

import pytest

import rlft
from rlft.cli.main import main
from rlft.data.heldout import split_heldout

# the rewards' values depend on the rows and the prompt text only, never on the random tiny
# model's completions, so every number below is worked out from the rows
REWARDS_PY = """
def row_score(prompt, completion, example):
    return float(example["score"])

def as_written(prompt, completion, example):
    return 1.0 if prompt == example["prompt"] else 0.0

def some_text(completions, **columns):  # TRL's shape
    return [1.0 if isinstance(c, str) else 0.0 for c in completions]
"""
ROWS = [
    {"prompt": "Say hi", "score": 1.0},
    {"prompt": "Say bye", "score": 0.0},
    {"prompt": "Say yo", "score": 0.5},
]


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rewards = tmp_path / "task_rewards.py"
    rewards.write_text(REWARDS_PY)
    return data, rewards


def _eval(tiny_model_path, data, out, *args):
    common = [
        "eval",
        "--model",
        tiny_model_path,
        "--data",
        str(data),
        "--max-new-tokens",
        "3",
        "--json",
        str(out),
    ]
    return main([*common, *args])


def test_eval_cli_scores_with_rewards(tiny_model_path, files, tmp_path):
    data, rewards = files
    out, rows_out = tmp_path / "out.json", tmp_path / "rows.jsonl"
    args = [
        *("--reward", f"{rewards}:row_score", "--reward", f"{rewards}:as_written"),
        *("--reward", f"{rewards}:some_text"),
        *("--reward-weight", "1", "--reward-weight", "0", "--reward-weight", "0"),
        *("--chat-template", "none", "--pass-threshold", "0.5", "--samples", "2", "--k-values", "1"),
        *("--rows", str(rows_out)),
    ]
    assert _eval(tiny_model_path, data, out, *args) == 0
    res = json.loads(out.read_text())
    # row_score: 1, 0, 0.5 -> mean 0.5; with weights 1, 0, 0 the totals are those scores
    # threshold 0.5: rows 1 and 3 pass with both samples -> accuracy 2/3, pass@2 = pass@1 = 2/3
    assert res["reward/row_score"] == 0.5 and res["reward"] == 0.5
    assert res["accuracy"] == pytest.approx(2 / 3) and res["pass@k"] == pytest.approx(2 / 3)
    assert res["pass@1"] == pytest.approx(2 / 3) and res["maj@k"] is None and (res["n"], res["k"]) == (3, 2)
    # chat_template none, no system prompt: the reward sees the prompt exactly as written
    assert res["reward/as_written"] == 1.0 and res["reward/some_text"] == 1.0
    assert res["scoring"] == "rewards: row_score x1, as_written x0, some_text x0"
    per_row = [json.loads(x) for x in rows_out.read_text().splitlines()]
    assert [r["reward"] for r in per_row] == [[1.0, 1.0], [0.0, 0.0], [0.5, 0.5]]
    assert [r["correct"] for r in per_row] == [[True, True], [False, False], [True, True]]


def test_eval_cli_prompt_format_reward_entries_and_splits(tiny_model_path, files, tmp_path):
    from datasets import Dataset, DatasetDict

    data, rewards = files
    out = tmp_path / "out.json"
    written = f'{{"fn": "{rewards}:as_written", "weight": 2.0}}'  # a JSON `rewards` entry
    # the chat template wraps the prompt: the reward no longer sees it as written
    assert _eval(tiny_model_path, data, out, "--reward", written) == 0
    res = json.loads(out.read_text())
    assert res["reward/as_written"] == 0.0 and res["accuracy"] == 0.0
    assert _eval(tiny_model_path, data, out, "--reward", written, "--chat-template", "none") == 0
    assert json.loads(out.read_text())["reward"] == 2.0  # weight 2 x 1.0
    # as written, after a system prompt's paragraph: not equal any more
    args = ("--reward", written, "--chat-template", "none", "--system-prompt", "Be brief.")
    assert _eval(tiny_model_path, data, out, *args) == 0
    assert json.loads(out.read_text())["reward"] == 0.0
    # a `datasets` dir: --split picks the rows
    saved = tmp_path / "ds"
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])}).save_to_disk(
        str(saved)
    )
    args = ("--reward", f"{rewards}:row_score", "--split", "test")
    assert _eval(tiny_model_path, saved, out, *args) == 0
    assert json.loads(out.read_text())["n"] == 1 and json.loads(out.read_text())["reward"] == 1.0


def test_eval_cli_without_rewards_needs_answers(tiny_model_path, files, tmp_path, capsys):
    data, _ = files
    assert _eval(tiny_model_path, data, tmp_path / "out.json") == 2
    assert f"{data}:1: missing field 'answer' (or 'solution')" in capsys.readouterr().err
    solved = tmp_path / "solved.jsonl"  # TRL's `solution` column serves as the reference answer
    solved.write_text(json.dumps({"prompt": "What is 2 + 3?", "solution": "5"}) + "\n")
    assert _eval(tiny_model_path, solved, tmp_path / "out.json") == 0
    res = json.loads((tmp_path / "out.json").read_text())
    assert res["scoring"] == "answer" and res["n"] == 1 and res["maj@k"] in (0.0, 1.0)


def test_rl_on_a_user_dataset_evaluates_its_heldout_share(make_rl_config, tmp_path, capsys):
    tasks = [{"prompt": f"Task {i}: echo {i}", "score": (i % 4) / 4} for i in range(24)]
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tasks))
    rewards = tmp_path / "task_rewards.py"
    rewards.write_text(REWARDS_PY)
    out = tmp_path / "run"
    cfg = make_rl_config(
        f"data.path={data}",
        "data.chat_template=none",
        "eval.heldout_fraction=0.25",
        *("eval.before=true", "eval.after=true", "eval.limit=0", "eval.max_new_tokens=3"),
        "eval.pass_threshold=0.5",
        *("rollout.prompts_per_step=24", "rollout.samples_per_prompt=2", "rollout.max_new_tokens=3"),
        *("train.steps=1", "train.minibatch_size=48", "train.microbatch_size=16", "log.samples_per_step=48"),
        "algo.kl_coef=0",
        f"rewards=[{{fn: '{rewards}:row_score'}}, {{fn: '{rewards}:as_written', weight: 0}}]",
        out=out,
    )
    res = rlft.train_rl(cfg)
    train, held = split_heldout(tasks, 0.25, cfg.seed)
    written = [json.loads(x) for x in (out / "heldout.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in written] == [r["prompt"] for r in held]
    # 24 prompts in the step: every training row (the stream wraps), never a held-out one
    seen = {json.loads(x)["prompt"] for x in (out / "samples.jsonl").read_text().splitlines()}
    assert seen == {r["prompt"] for r in train}
    # row_score ignores the completion: the mean of the held-out rows' scores, before (in this
    # process) and after (in a fresh `rlft eval`, which got the same rewards and prompt format)
    expected = sum(r["score"] for r in held) / len(held)
    passing = sum(r["score"] >= 0.5 for r in held) / len(held)
    for tag in ("before", "after"):
        ev = json.loads((out / f"eval_{tag}.json").read_text())
        assert ev["reward/row_score"] == pytest.approx(expected) and ev["accuracy"] == pytest.approx(passing)
        assert ev["reward/as_written"] == 1.0 and ev["n"] == len(held) and ev["maj@k"] is None
        assert res["eval"][tag]["reward/row_score"] == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert f"held-out greedy accuracy (after training in a fresh process): {passing:.1%}" in printed
    assert f"mean reward {expected:.3f}" in printed
