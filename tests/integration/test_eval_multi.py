"""`rlft eval` with several models side by side (a base dir and a checkpoints/step-N dir), and the
periodic held-out evaluation during RL: logged at the right steps, invisible to training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_support import read_metrics, saved_weights

import rlft
from rlft.config.loader import ConfigError
from rlft.eval.compare import EvalOptions, evaluate_models, rows_path_for
from rlft.models.load import load_causal_lm, load_tokenizer
from rlft.models.tiny import build_tiny_model
from rlft.rl.eval import PeriodicEval
from rlft.runtime.checkpoint import save_checkpoint

ROWS = [
    {"prompt": "What is 2 + 3?", "answer": "5"},
    {"prompt": "What is 4 * 4?", "answer": 16},
    {"prompt": "What is 9 - 7?", "answer": "2"},
]


def _checkpoint_of_other_model(tmp_path) -> str:
    """checkpoints/step-1 of a run whose model is a differently seeded tiny Llama."""
    other = build_tiny_model(tmp_path / "other", seed=1)
    model, tok = load_causal_lm(str(other)), load_tokenizer(str(other))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return str(save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, opt, sched, {}, tokenizer=tok))


def test_eval_cli_compares_models_side_by_side(cli, tmp_path, tiny_model_path):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    ckpt = _checkpoint_of_other_model(tmp_path)
    common = ["--data", str(data), "--samples", "4", "--k-values", "1,2", "--max-new-tokens", "5"]
    both, rows = tmp_path / "both.json", tmp_path / "rows.jsonl"
    p = cli("eval", "--model", tiny_model_path, ckpt, *common, "--json", str(both), "--rows", str(rows))
    assert p.returncode == 0, p.stderr
    models = json.loads(both.read_text())["models"]
    assert list(models) == [tiny_model_path, ckpt]
    # a summary line per model as it finishes, then the table: header + one row per model
    lines = p.stdout.splitlines()
    assert [x.split(":")[0] for x in lines[:2]] == [f"model {tiny_model_path}", f"model {ckpt}"]
    header = ["model", "accuracy", "pass@1", "pass@2", "pass@4", "maj@4", "mean_tokens", "n"]
    assert lines[2].split() == header
    for name, line in zip(models, lines[3:5], strict=True):
        res = models[name]
        assert (res["n"], res["k"]) == (3, 4) and line.split()[0] == name
        assert line.split()[1] == f"{res['accuracy']:.4f}" and line.split()[-1] == "3"
        rows_file = Path(rows_path_for(str(rows), name, several=True))
        per_row = [json.loads(x) for x in rows_file.read_text().splitlines()]
        assert [len(r["completions"]) for r in per_row] == [4, 4, 4]
        # every pass@j is the mean over rows of 1 - C(4-c, j)/C(4, j), c = correct samples of the row
        for j in (1, 2):
            expected = sum(_pass(4, sum(r["correct"]), j) for r in per_row) / 3
            assert res[f"pass@{j}"] == pytest.approx(expected)
        assert res["pass@1"] == pytest.approx(res["accuracy"])  # pass@1 = c/n
        assert res["pass@k"] == pytest.approx(sum(r["pass"] for r in per_row) / 3)
    # each model samples from a freshly seeded stream: alone, the checkpoint scores the same
    alone = tmp_path / "alone.json"
    p = cli("eval", "--model", ckpt, *common, "--json", str(alone))
    assert p.returncode == 0, p.stderr
    single = json.loads(alone.read_text())
    assert "models" not in single and single == models[ckpt]


def _pass(n: int, c: int, k: int) -> float:
    from math import comb

    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def test_eval_models_rejects_the_same_model_twice():
    with pytest.raises(ValueError, match="--model given more than once: a"):
        evaluate_models(["a", "b", "a"], ROWS, EvalOptions())


# ---------------------------------------------------------------- periodic eval during RL

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=4",
    "train.minibatch_size=4",
    "train.microbatch_size=4",
    "train.save_every=1",
    "train.keep_checkpoints=5",
    "eval.limit=3",
    "eval.max_new_tokens=4",
]
EVAL_EVERY_STEP = ["eval.every=1", "eval.every_samples=2"]  # sampled (T=1), so it draws random numbers


def _training_keys(m: dict) -> dict:
    return {k: v for k, v in m.items() if not k.startswith(("eval/", "perf/"))}


def test_periodic_eval_leaves_training_unchanged_and_resumes(make_rl_config, tmp_path):
    plain, evald, resumed = tmp_path / "plain", tmp_path / "evald", tmp_path / "resumed"
    rlft.train_rl(make_rl_config(*SMALL, "train.steps=3", out=plain))
    rlft.train_rl(make_rl_config(*SMALL, *EVAL_EVERY_STEP, "train.steps=3", out=evald))
    mp, me = read_metrics(plain), read_metrics(evald)
    assert [_training_keys(m) for m in me] == [_training_keys(m) for m in mp]
    wp, we = saved_weights(plain / "final"), saved_weights(evald / "final")
    assert wp.keys() == we.keys() and all(torch.equal(wp[k], we[k]) for k in wp)
    assert (plain / "samples.jsonl").read_text() == (evald / "samples.jsonl").read_text()
    for m in me:
        assert 0.0 <= m["eval/accuracy"] <= m["eval/pass@k"] <= 1.0  # pass@2 >= mean correct
        assert 0.0 <= m["eval/maj@k"] <= m["eval/pass@k"]  # a right majority needs a right sample
        assert 1.0 <= m["eval/response_len"] <= 4.0 and 0.0 <= m["eval/truncated_frac"] <= 1.0
    assert not any(k.startswith("eval/") for m in mp for k in m)
    # stopped after step 2 and resumed: step 3, its eval included, is what the whole run logged
    rlft.train_rl(make_rl_config(*SMALL, *EVAL_EVERY_STEP, "train.steps=2", out=resumed))
    rlft.train_rl(make_rl_config(*SMALL, *EVAL_EVERY_STEP, "train.steps=3", "resume=true", out=resumed))
    mr = read_metrics(resumed)

    def no_perf(ms: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if not k.startswith("perf/")} for m in ms]

    assert no_perf(mr) == no_perf(me)


def test_periodic_eval_steps_and_config_errors(make_rl_config):
    ev = PeriodicEval(make_rl_config("eval.every=2", "eval.limit=5", "eval.every_limit=3"))
    assert [s for s in range(1, 7) if ev.due(s)] == [2, 4, 6]
    assert len(ev.rows) == 3  # every_limit wins over limit
    assert not PeriodicEval(make_rl_config()).due(4)  # every = 0: never
    with pytest.raises(ConfigError, match="'eval.every_samples' must be >= 1, got 0"):
        PeriodicEval(make_rl_config("eval.every=1", "eval.every_samples=0"))


def test_periodic_eval_restores_train_mode_and_rng(make_rl_config, tiny_model, tiny_tok):
    ev = PeriodicEval(
        make_rl_config("eval.every=1", "eval.every_samples=2", "eval.limit=3", "eval.max_new_tokens=4")
    )
    plain = ev(tiny_model.eval(), tiny_tok, step=5)
    tiny_model.train()
    tiny_model.gradient_checkpointing_enable()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checkpointed = ev(tiny_model, tiny_tok, step=5)
    assert tiny_model.training  # back in train mode for the update
    assert torch.equal(torch.get_rng_state(), before)  # the training stream did not move
    # generated in eval mode with its own seed (seed + step): same numbers as the plain model's
    drop = ("perf/eval_s",)
    assert {k: v for k, v in checkpointed.items() if k not in drop} == {
        k: v for k, v in plain.items() if k not in drop
    }
