"""TRL-shaped reward functions (length, accuracy on a `solution` column, a regex format reward) in
a real RL run on the tiny model, on a conversational JSONL dataset: every step they log the same
rewards as their per-sample equivalents, and the run trains on them (scores are not silently 0)."""

from __future__ import annotations

import json
import re

from run_support import read_metrics

import rlft


def reward_len(completions, **kwargs):
    return [-abs(6 - len(c[0]["content"])) / 6 for c in completions]


def accuracy(completions, solution, **kwargs):
    return [1.0 if s in c[0]["content"] else 0.0 for c, s in zip(completions, solution, strict=True)]


def format_reward(completions, **kwargs):
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    return [1.0 if re.match(pattern, c[0]["content"]) else 0.0 for c in completions]


def format_per_sample(prompt, completion, example):
    return 1.0 if re.match(r"^<think>.*?</think><answer>.*?</answer>$", completion) else 0.0


def len_per_sample(prompt, completion, example):
    return -abs(6 - len(completion)) / 6


def accuracy_per_sample(prompt, completion, example):
    return 1.0 if example["solution"] in completion else 0.0


def test_trl_rewards_log_what_their_per_sample_twins_log(make_rl_config, tmp_path):
    data = tmp_path / "conv.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "solution": str(a + b)}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1)]
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    cfg = make_rl_config(
        f"data.path={data}",
        "data.answer_field=solution",
        "train.steps=2",
        "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6",
        out=out,
    )
    twins = {"len_twin": len_per_sample, "acc_twin": accuracy_per_sample, "fmt_twin": format_per_sample}
    rlft.train_rl(cfg, reward_fns={"len": reward_len, "acc": accuracy, "fmt": format_reward, **twins})
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["reward/len"] == m["reward/len_twin"] and m["reward/acc"] == m["reward/acc_twin"]
        assert m["reward/fmt"] == m["reward/fmt_twin"]
        assert m["reward/len_failures"] == m["reward/acc_failures"] == m["reward/fmt_failures"] == 0.0
        # each completion's score sums both shapes' equal values: twice the TRL terms' mean
        assert abs(m["reward/mean"] - 2 * (m["reward/len"] + m["reward/acc"] + m["reward/fmt"])) < 1e-6
    assert any(m["reward/len"] != 0.0 for m in metrics)  # a real signal, not zeros everywhere
