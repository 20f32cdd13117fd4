"""The RL loop through the Python API on the tiny model: exact resume, non-finite guard, eval files,
Python reward functions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from run_support import read_metrics
from safetensors.torch import load_file

import rlft
from rlft.algorithms.registry import ALGORITHMS, Algorithm, outcome_advantages, ppo_clip_loss
from rlft.runtime.checkpoint import complete_checkpoints
from rlft.runtime.guard import NonFiniteError

# 2 prompts x 4 samples = 8 sequences, 2 minibatches of 4 (so old logprobs and the shuffled
# minibatch order are exercised too), 4 new tokens.
SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=4",
    "train.minibatch_size=4",
    "train.microbatch_size=4",
]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_resume_reproduces_uninterrupted_run_bitwise(make_rl_config, tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    common = [*SMALL, "train.save_every=1", "train.keep_checkpoints=5"]
    rlft.train_rl(make_rl_config(*common, "train.steps=3", out=a_dir))
    rlft.train_rl(make_rl_config(*common, "train.steps=2", out=b_dir))
    assert [s for s, _ in complete_checkpoints(b_dir / "checkpoints")] == [1, 2]
    res = rlft.train_rl(make_rl_config(*common, "train.steps=3", "resume=true", out=b_dir))
    assert res["steps"] == 3

    ma, mb = read_metrics(a_dir), read_metrics(b_dir)
    assert [m["step"] for m in mb] == [1, 2, 3]  # the resumed run appended step 3 only
    for key in ("loss/policy", "reward/mean", "optim/grad_norm", "policy/kl", "policy/entropy"):
        assert [m[key] for m in mb] == [m[key] for m in ma], key
    wa, wb = _weights(a_dir / "final"), _weights(b_dir / "final")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa = [json.loads(x) for x in (a_dir / "samples.jsonl").read_text().splitlines()]
    sb = [json.loads(x) for x in (b_dir / "samples.jsonl").read_text().splitlines()]
    assert sa == sb  # same prompts, completions and scores at every step
    state = json.loads((b_dir / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    # 3 steps x 2 prompts = 6 prompts taken from the (unshuffled) built-in stream
    assert state["step"] == 3 and state["stream"] == {"epoch": 0, "index": 6}


def _nan_loss(logprobs, old, adv, mask, p):
    loss, metrics = ppo_clip_loss(logprobs, old, adv, mask, p)
    return loss * math.nan, metrics


def test_nan_loss_skips_steps_and_keeps_weights(make_rl_config, tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "grpo", Algorithm("grpo", outcome_advantages, _nan_loss))
    out = tmp_path / "nan"
    res = rlft.train_rl(make_rl_config(*SMALL, "train.steps=2", "train.max_nonfinite_steps=5", out=out))
    m = read_metrics(out)
    # 2 RL steps x 2 minibatches = 4 optimizer steps, all skipped (4 < 5, so no abort)
    assert [x["optim/skipped_steps"] for x in m] == [2.0, 4.0]
    assert res["metrics"]["loss/policy"] != res["metrics"]["loss/policy"]  # NaN
    assert m[-1]["loss/policy"] == "nan"  # stored as a string: metrics.jsonl stays valid JSON
    before, after = _weights(Path(tiny_model_path)), _weights(out / "final")
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_consecutive_nan_steps_abort(make_rl_config, tmp_path, monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "grpo", Algorithm("grpo", outcome_advantages, _nan_loss))
    cfg = make_rl_config(*SMALL, "train.steps=3", "train.max_nonfinite_steps=3", out=tmp_path / "abort")
    # 2 optimizer steps per RL step: skipped 1, 2 in step 1, the 3rd (step 2, minibatch 1) aborts
    with pytest.raises(NonFiniteError, match="3 consecutive steps with non-finite loss/grad norm"):
        rlft.train_rl(cfg)
    assert [x["step"] for x in read_metrics(tmp_path / "abort")] == [1]


def test_python_reward_fns_score_every_completion(make_rl_config, tmp_path):
    def quarter_len(prompt, completion, example):
        return len(completion) / 4

    out = tmp_path / "fn"
    cfg = make_rl_config(*SMALL, "train.steps=2", "log.samples_per_step=8", "algo.kl_coef=0", out=out)
    res = rlft.train_rl(cfg, reward_fns=[quarter_len])
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16  # 8 sequences x 2 steps
    for s in samples:
        # weight 1 (no config entry named quarter_len): score = len(completion)/4
        assert s["score"] == pytest.approx(len(s["completion"]) / 4)
    for m in read_metrics(out):
        step = [s["score"] for s in samples if s["step"] == m["step"]]
        assert m["reward/mean"] == pytest.approx(sum(step) / 8)
        assert m["reward/quarter_len_failures"] == 0.0
        assert "reward/numeric_answer" not in m and "policy/kl" not in m  # kl_coef 0: no ref model
    assert set(res) >= {"metrics", "eval", "final_dir", "steps"}


def test_eval_before_and_after_files(make_rl_config, tmp_path):
    out = tmp_path / "ev"
    cfg = make_rl_config(
        *SMALL,
        "train.steps=1",
        "eval.before=true",
        "eval.after=true",
        "eval.limit=4",
        "eval.max_new_tokens=4",
        out=out,
    )
    res = rlft.train_rl(cfg)
    for tag in ("before", "after"):
        ev = json.loads((out / f"eval_{tag}.json").read_text())
        rows = (out / f"eval_{tag}.rows.jsonl").read_text().splitlines()
        assert 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] == 4 and len(rows) == 4
        assert res["eval"][tag]["n"] == 4
    heldout = (out / "heldout.jsonl").read_text().splitlines()
    assert len(heldout) == 4 and all(json.loads(x)["answer"] for x in heldout)
    assert (out / "config.yaml").exists()


def test_dict_config_and_config_errors(make_rl_config, tmp_path):
    from rlft.config.loader import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'algo.kl_coef'"):
        rlft.train_rl({"algo": {"kl_cof": 0.1}})
    with pytest.raises(ValueError, match="unknown algorithm 'algo.name=grpoo'; did you mean 'grpo'"):
        rlft.train_rl(make_rl_config(*SMALL, "algo.name=grpoo", out=tmp_path / "x"))


def test_cold_model_cache_does_not_change_the_run(make_rl_config, tmp_path, monkeypatch):
    warm = tmp_path / "warm"
    rlft.train_rl(make_rl_config(*SMALL, "train.steps=1", "seed=3", out=warm))
    monkeypatch.setenv("RLFT_CACHE", str(tmp_path / "cold-cache"))  # the tiny model is rebuilt here
    cold = tmp_path / "cold"
    rlft.train_rl(make_rl_config(*SMALL, "train.steps=1", "seed=3", out=cold))
    # same weights (build is seeded), same config and seed -> same samples
    assert _weights(tmp_path / "cold-cache" / "models" / "tiny-random-llama").keys()
    assert (warm / "samples.jsonl").read_text() == (cold / "samples.jsonl").read_text()


def test_prompt_limit_follows_the_model_context(make_rl_config, tmp_path, tiny_model):
    from rlft.config.loader import ConfigError
    from rlft.rl.setup import prompt_token_limit

    # the tiny model has 512 positions: 512 - 500 new tokens leaves 12 for the prompt,
    # below data.max_prompt_tokens = 512
    cfg = make_rl_config(*SMALL, "rollout.max_new_tokens=500", out=tmp_path / "a")
    assert prompt_token_limit(cfg, tiny_model) == 12
    # with 480 new tokens: min(512, 512 - 480 = 32) = 32, and max_prompt_tokens=20 wins over 32
    cfg = make_rl_config(
        *SMALL, "rollout.max_new_tokens=480", "data.max_prompt_tokens=20", out=tmp_path / "b"
    )
    assert prompt_token_limit(cfg, tiny_model) == 20
    cfg = make_rl_config(*SMALL, "rollout.max_new_tokens=512", out=tmp_path / "c")
    with pytest.raises(ConfigError, match="rollout.max_new_tokens"):
        prompt_token_limit(cfg, tiny_model)
