"""The RL run's held-out evaluation on a user's task: it reads the held-out share of the user's
rows (never the built-in task), scores with the run's rewards (eval.reward), logs eval/reward/*,
and hands the same prompt format and rewards to a fresh `rlft eval` process, or evaluates in
process when a reward cannot be named on a command line. Generation is stubbed with fixed texts,
so the numbers are exact."""

from __future__ import annotations

import dataclasses
import json
import logging
from types import SimpleNamespace

import pytest
import torch

import rlft.data.arithmetic
import rlft.eval.accuracy
import rlft.rl.eval
from rlft.cli.main import build_parser
from rlft.config.loader import ConfigError
from rlft.config.rl import RewardSpec
from rlft.data.heldout import split_heldout
from rlft.eval.rewarded import reward_specs
from rlft.rewards.scoring import RewardTerm
from rlft.rl.eval import PeriodicEval, eval_in_fresh_process, evaluate_heldout
from rlft.rl.heldout import eval_terms, given_heldout_rows, heldout_rows, reward_arguments
from rlft.rollout.base import Generations

# non-arithmetic tasks: a word and its reference in a `solution` column (no `answer`)
TASKS = [{"prompt": f"Spell the word number {i} backwards: w{i}x", "solution": f"x{i}w"} for i in range(40)]
REWARDS_PY = """
def exact(prompt, completion, example):
    return 1.0 if completion == example["solution"] else 0.0

def shout(prompt, completion, example, mark="!"):
    return 1.0 if completion.endswith(mark) else 0.0
"""


@pytest.fixture
def user_task(tmp_path, make_rl_config, monkeypatch):
    """(config, held-out rows): a JSONL of TASKS as data.path, rewards exact + 0.5 x shout from a
    file; the built-in task must never be read."""
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in TASKS))
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(REWARDS_PY)

    def no_builtin(*args, **kwargs):
        raise AssertionError("the built-in task was read")

    monkeypatch.setattr(rlft.data.arithmetic, "heldout_rows", no_builtin)
    cfg = make_rl_config(f"data.path={data}", "eval.heldout_fraction=0.25", "eval.every=1", "eval.limit=0")
    specs = [
        RewardSpec(fn=f"{rewards}:exact"),
        RewardSpec(fn=f"{rewards}:shout", weight=0.5, kwargs={"mark": "?"}),
    ]
    cfg = dataclasses.replace(cfg, rewards=specs)
    _, held = split_heldout([{**r} for r in TASKS], 0.25, cfg.seed)
    return cfg, held


def stub_generation(monkeypatch, answer_for):
    """Generation returns, per prompt, the texts answer_for(row prompt) (one per sample)."""

    def generate(model, tok, prompt_ids, params, samples, batch_size, progress=False):
        texts = []
        for ids in prompt_ids:
            prompt = tok.decode(ids)
            row = next(r for r in TASKS if r["prompt"] in prompt)
            texts += answer_for(row)[:samples]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        return Generations(response_ids=ids, finished=[True] * len(ids))

    monkeypatch.setattr(rlft.eval.accuracy, "generate_batched", generate)


def test_periodic_eval_scores_the_heldout_rows_with_the_run_rewards(user_task, monkeypatch, tiny_tok):
    cfg, held = user_task
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, every_samples=2))
    # per prompt: the right answer, then a wrong one ending with '?'
    stub_generation(monkeypatch, lambda row: [row["solution"], "no?"])
    ev = PeriodicEval(cfg)
    assert [r["prompt"] for r in ev.rows] == [r["prompt"] for r in held]
    assert [t.name for t in ev.terms] == ["exact", "shout"]
    m = ev(torch.nn.Linear(1, 1), tiny_tok, step=1)
    # exact: 1, 0 per prompt -> mean 1/2; shout (mark '?'): 0, 1 -> 1/2
    # totals: 1 + 0.5*0 = 1 (passes threshold 1), 0 + 0.5*1 = 0.5 (fails) -> accuracy 1/2,
    # pass@2 = 1 (one of two right); mean reward (1 + 0.5)/2 = 0.75
    assert m["eval/reward/exact"] == 0.5 and m["eval/reward/shout"] == 0.5
    assert m["eval/reward"] == 0.75 and m["eval/accuracy"] == 0.5 and m["eval/pass@k"] == 1.0
    assert "eval/maj@k" not in m  # no majority vote without an answer to vote on


def test_evaluate_heldout_writes_the_heldout_rows_and_reward_results(
    user_task, monkeypatch, tiny_tok, tmp_path
):
    cfg, held = user_task
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, pass_threshold=0.5))
    stub_generation(monkeypatch, lambda row: ["no?"])  # wrong, but '?': total 0.5 >= threshold 0.5
    out = tmp_path / "out"
    out.mkdir()
    parts = SimpleNamespace(model=torch.nn.Linear(1, 1), tok=tiny_tok)
    summary = evaluate_heldout(cfg, parts, out, "before")
    written = [json.loads(x) for x in (out / "heldout.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in written] == [r["prompt"] for r in held]
    res = json.loads((out / "eval_before.json").read_text())
    assert res["n"] == len(held) and res["accuracy"] == 1.0 and res["reward"] == 0.5
    assert (res["reward/exact"], res["reward/shout"], res["maj@k"]) == (0.0, 1.0, None)
    assert summary["reward"] == 0.5 and summary["reward/shout"] == 1.0 and summary["n"] == len(held)


def test_eval_reward_settings(user_task, make_rl_config):
    cfg, _ = user_task

    def with_reward(c, value):
        return dataclasses.replace(c, eval=dataclasses.replace(c.eval, reward=value))

    assert eval_terms(with_reward(cfg, "answer"), True) == []
    assert eval_terms(make_rl_config(), user_task=False) == []  # auto on the built-in task: answers
    # one reward of the run: weight 1, its kwargs kept
    (shout,) = eval_terms(with_reward(cfg, "shout"), True)
    assert (shout.name, shout.weight, shout.kwargs) == ("shout", 1.0, {"mark": "?"})
    (builtin,) = eval_terms(with_reward(cfg, "answer_format"), True)  # not of the run: by name
    assert builtin.name == "answer_format"
    given = [RewardTerm("mine", lambda p, c, e: 1.0, 2.0)]
    assert eval_terms(cfg, True, given) == given  # auto on a user task: the run's own terms
    with pytest.raises(ConfigError, match="'eval.reward'=nope"):
        eval_terms(with_reward(cfg, "nope"), True)
    with pytest.raises(ConfigError, match=r"'eval.heldout_fraction' must be in \[0, 1\), got 1.0"):
        PeriodicEval(make_rl_config("eval.heldout_fraction=1.0"))
    with pytest.raises(ConfigError, match="eval.heldout_fraction=0 holds out none"):
        heldout_rows(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, heldout_fraction=0.0)))


def test_the_fresh_process_gets_the_same_prompt_format_and_rewards(user_task, monkeypatch, tmp_path):
    cfg, _ = user_task
    data = dataclasses.replace(
        cfg.data,
        chat_template="none",
        chat_template_kwargs={"enable_thinking": False},
        system_prompt="Be brief.",
    )
    cfg = dataclasses.replace(cfg, data=data, eval=dataclasses.replace(cfg.eval, pass_threshold=0.75))
    terms = eval_terms(cfg, True)
    args, why = reward_arguments(cfg, terms)
    assert why == ""
    seen = []
    monkeypatch.setattr(rlft.rl.eval.subprocess, "run", lambda cmd, check: seen.append(cmd))
    out = tmp_path / "eval_after.json"
    out.write_text("{}")
    eval_in_fresh_process(cfg, "some/model", tmp_path / "heldout.jsonl", out, args)
    parsed = build_parser().parse_args(seen[0][3:])  # after `python -m rlft`
    assert (parsed.chat_template, parsed.chat_template_kwargs) == ("none", {"enable_thinking": False})
    assert parsed.system_prompt == "Be brief." and parsed.pass_threshold == 0.75
    specs = reward_specs(parsed.reward, parsed.reward_weight)
    assert [(s.fn, s.name, s.weight, s.kwargs) for s in specs] == [
        (cfg.rewards[0].fn, "exact", 1.0, {}),
        (cfg.rewards[1].fn, "shout", 0.5, {"mark": "?"}),
    ]


def test_a_python_callable_is_evaluated_in_process(user_task, monkeypatch, tiny_tok, tmp_path, caplog):
    cfg, held = user_task
    stub_generation(monkeypatch, lambda row: [row["solution"]])

    def mine(prompt, completion, example):  # handed to the API: no name a command line can use
        return 1.0

    terms = [RewardTerm("mine", mine)]
    assert reward_arguments(cfg, terms) == (
        [],
        "reward 'mine' is a Python callable that cannot be named on a command line",
    )

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a fresh process was started")

    monkeypatch.setattr(rlft.rl.eval.subprocess, "run", no_subprocess)
    parts = SimpleNamespace(model=torch.nn.Linear(1, 1), tok=tiny_tok)
    with caplog.at_level(logging.INFO, logger="rlft.rl.eval"):
        summary = evaluate_heldout(cfg, parts, tmp_path, "after", model_dir="unused/final", terms=terms)
    assert "not a fresh one: reward 'mine' is a Python callable" in caplog.text
    assert summary["reward/mine"] == 1.0 and summary["accuracy"] == 1.0 and summary["n"] == len(held)


def test_rows_given_in_python_are_evaluated(user_task, monkeypatch, tiny_tok, tmp_path):
    cfg, _ = user_task
    stub_generation(monkeypatch, lambda row: [row["solution"]])
    given = [dict(r) for r in TASKS[:3]]  # an eval_dataset handed to the API
    parts = SimpleNamespace(model=torch.nn.Linear(1, 1), tok=tiny_tok)
    summary = evaluate_heldout(cfg, parts, tmp_path, "before", rows=given)
    assert summary["n"] == 3 and summary["reward/exact"] == 1.0
    written = [json.loads(x)["prompt"] for x in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    assert written == [r["prompt"] for r in TASKS[:3]]


def test_datasets_handed_to_the_api(make_rl_config):
    cfg = make_rl_config("eval.heldout_fraction=0.25", "eval.limit=0", "eval.before=true")
    train = [dict(r) for r in TASKS]
    _, held = split_heldout(train, 0.25, cfg.seed)
    # a train_dataset and no eval_dataset: its held-out share, exactly what training leaves out
    assert [r["prompt"] for r in given_heldout_rows(cfg, train_dataset=train)] == [r["prompt"] for r in held]
    assert given_heldout_rows(cfg, eval_dataset=train[:2], train_dataset=train) == [
        {**r, "_source": f"list:row {i}"} for i, r in enumerate(train[:2], start=1)
    ]
    assert given_heldout_rows(cfg) is None  # nothing handed over: the config says where the rows are
    off = make_rl_config("eval.before=false", "eval.after=false", "eval.every=0")
    assert given_heldout_rows(off, train_dataset=train) is None  # no evaluation: nothing to read


def test_the_builtin_task_is_still_scored_by_answers(make_rl_config, tiny_model, tiny_tok, tmp_path):
    cfg = make_rl_config("eval.limit=3", "eval.max_new_tokens=2")  # eval.reward auto, no data.path
    parts = SimpleNamespace(model=tiny_model.eval(), tok=tiny_tok)
    summary = evaluate_heldout(cfg, parts, tmp_path, "before")
    res = json.loads((tmp_path / "eval_before.json").read_text())
    assert res["scoring"] == "answer" and 0.0 <= res["maj@k"] <= 1.0 and res["n"] == 3
    assert not any(k.startswith("reward") for k in (*res, *summary))
    written = [json.loads(x) for x in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    assert written == rlft.data.arithmetic.heldout_rows(cfg.data.arithmetic)[:3]
