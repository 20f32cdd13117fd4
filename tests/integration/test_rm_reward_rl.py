"""GRPO on the tiny model with an ensemble of two reward models as the only reward: the logged
scores are what the RMs give the logged completions on the raw dataset prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rlft
from rlft.models.load import load_tokenizer
from rlft.models.reward_model import load_reward_model, score_head, score_texts

# string and chat-message prompts; `answer` is the row's index, so each logged sample leads back
# to its raw prompt (samples.jsonl records the templated prompt and the answer)
ROWS = [
    {"prompt": "2+3=", "answer": "0"},
    {"prompt": [{"role": "user", "content": "What is 7*6?"}], "answer": "1"},
    {"prompt": "Say hi.", "answer": "2"},
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1="}],
        "answer": "3",
    },
]


def save_rm(base: str, target: Path, scale: float) -> str:
    """The tiny LM with a bias-free scalar head = scale * w (w ~ N(0, 1), seed 5), saved as an RM."""
    tok = load_tokenizer(base, padding_side="right")
    model = load_reward_model(base, tok)
    w = torch.randn(score_head(model).weight.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        score_head(model).weight.copy_(scale * w)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return str(target)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grpo_with_rm_ensemble_logs_rm_scores(make_rl_config, tiny_model_path, tmp_path):
    rm_w = save_rm(tiny_model_path, tmp_path / "rm_w", 1.0)
    rm_3w = save_rm(tiny_model_path, tmp_path / "rm_3w", 3.0)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "run"
    cfg = make_rl_config(
        f"data.path={data}",
        f"rewards=[{{model: ['{rm_w}', '{rm_3w}'], weight: 0.5}}]",
        "rollout.prompts_per_step=4",
        "rollout.samples_per_prompt=4",
        "train.steps=2",
        "log.samples_per_step=16",  # the whole batch of 4 x 4 sequences
        out=out,
    )
    rlft.train_rl(cfg)

    tok = load_tokenizer(rm_w, padding_side="right")
    model = load_reward_model(rm_w, tok).eval()
    metrics, samples = _jsonl(out / "metrics.jsonl"), _jsonl(out / "samples.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and len(samples) == 32
    for m in metrics:
        step = [x for x in samples if x["step"] == m["step"]]
        raw = [ROWS[int(x["answer"])]["prompt"] for x in step]
        s = score_texts(model, tok, raw, [x["completion"] for x in step])  # the RM with head w
        # members score s and 3s: ensemble mean 2s, weighted by 0.5 -> each sample's score is s
        assert [x["score"] for x in step] == pytest.approx(s, rel=1e-4, abs=1e-5)
        assert m["reward/rm"] == pytest.approx(2 * sum(s) / 16, rel=1e-4, abs=1e-5)
        assert m["reward/mean"] == pytest.approx(sum(s) / 16, rel=1e-4, abs=1e-5)
        # population std of {s, 3s} = |s|, averaged over the batch
        assert m["reward/rm_disagreement"] == pytest.approx(sum(abs(v) for v in s) / 16, rel=1e-4)
        assert m["reward/rm_0"] == pytest.approx(sum(s) / 16, rel=1e-4, abs=1e-5)
        assert m["reward/rm_failures"] == 0.0
        # scoring the policy's templated prompt instead would give other scores
        templated = score_texts(model, tok, [x["prompt"] for x in step], [x["completion"] for x in step])
        assert max(abs(a - b) for a, b in zip(templated, s, strict=True)) > 1e-3
