"""The CUDA path (`model.device`): the same numbers on a GPU as on the CPU, exact resume on the GPU,
checkpoints that move between devices. They need a CUDA device, so CI (CPU only) skips them with
that reason; run them on a GPU machine with `python -m pytest -m gpu tests/gpu` (docs/gpu.md has
the figures of the last run). TF32 stays off (torch's default for matmuls), so fp32 is compared
with fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rlft
from rlft.algorithms import get_algorithm
from rlft.batch import ScoredBatch
from rlft.config.rl import AlgoConfig
from rlft.data.prompts import PromptExample
from rlft.models.load import load_causal_lm, resolve_device
from rlft.rl.update import UpdatePlan, update_policy
from rlft.rollout.assemble import assemble
from rlft.rollout.base import Generations, SamplingParams
from rlft.rollout.hf import HFGenerator
from rlft.runtime.guard import NonFiniteGuard

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)"),
]
CUDA = torch.device("cuda")
PROMPTS = ["What is 2 + 3?", "Hi", "What is 10 * 12?", "7-1?"]
RESPONSES = ["5", "3.", "120", "six"]


def _batch(tok) -> ScoredBatch:
    """4 sequences, 2 groups, hand-set advantages +1/-1 per group (GRPO z-scores of 2 samples)."""
    examples = [
        PromptExample(text=p, ids=tok(p, add_special_tokens=False)["input_ids"], row={}) for p in PROMPTS
    ]
    resp = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in RESPONSES]
    rollouts = assemble(examples, Generations(resp, [True] * 4), torch.tensor([0, 0, 1, 1]), tok)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None] * rollouts.response_mask
    return ScoredBatch(rollouts=rollouts, scores=torch.tensor([1.0, 0.0, 1.0, 0.0]), advantages=adv)


def _update(model, batch: ScoredBatch, device: torch.device) -> dict[str, float]:
    model = model.to(device)
    params = get_algorithm("grpo").resolve(AlgoConfig(kl_coef=0.0))
    moved = batch.with_(rollouts=batch.rollouts.to(device), scores=batch.scores.to(device))
    moved = moved.with_(advantages=batch.advantages.to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    plan = UpdatePlan(minibatch_size=4, microbatch_size=2)
    metrics = update_policy(model, optimizer, get_algorithm("grpo"), moved, params, plan, NonFiniteGuard(3))
    return metrics


def test_update_on_cuda_equals_cpu(tiny_model_path, tiny_tok):
    batch = _batch(tiny_tok)
    on_cpu, on_gpu = load_causal_lm(tiny_model_path), load_causal_lm(tiny_model_path)
    a, b = _update(on_cpu, batch, torch.device("cpu")), _update(on_gpu, batch, CUDA)
    for key in ("loss/policy", "optim/grad_norm", "policy/entropy"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert a["optim/grad_norm"] > 0  # a real step: both moved the weights by lr x the same grads
    for (name, p), q in zip(on_cpu.named_parameters(), on_gpu.parameters(), strict=True):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-6, msg=name)


def test_greedy_decode_on_cuda_equals_cpu(tiny_model_path, tiny_tok):
    ids = [tiny_tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    cpu = HFGenerator(load_causal_lm(tiny_model_path), tiny_tok).generate(ids, params, 2)
    gpu = HFGenerator(load_causal_lm(tiny_model_path, device=CUDA), tiny_tok).generate(ids, params, 2)
    assert gpu.response_ids == cpu.response_ids and gpu.finished == cpu.finished


def test_seeded_sampling_on_cuda_is_per_prompt(tiny_model_path, tiny_tok):
    gen = HFGenerator(load_causal_lm(tiny_model_path, device=CUDA), tiny_tok)
    ids = [tiny_tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seeds=(5, 6, 7, 8))
    full = gen.generate(ids, params, 3).response_ids
    alone = gen.generate(ids[2:3], SamplingParams(10, 1.0, seeds=(7,)), 3).response_ids
    assert full[6:9] == alone  # prompt 2's samples depend on its seed only
    assert len({tuple(r) for r in full}) > 1


def _read(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _no_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


SMALL = ["model.device=cuda", "train.save_every=1", "train.keep_checkpoints=4", "rollout.max_new_tokens=6"]


def test_grpo_on_cuda_resumes_exactly_and_checkpoints_load_on_cpu(make_rl_config, tmp_path):
    a, b = tmp_path / "straight", tmp_path / "parted"
    rlft.train_rl(make_rl_config(*SMALL, "train.steps=4", out=a))
    rlft.train_rl(make_rl_config(*SMALL, "train.steps=2", out=b))
    rlft.train_rl(make_rl_config(*SMALL, "train.steps=4", "resume=true", out=b))
    assert _no_timings(_read(a, "metrics.jsonl")) == _no_timings(_read(b, "metrics.jsonl"))
    assert _read(a, "samples.jsonl") == _read(b, "samples.jsonl")
    # a GPU run's final model and checkpoint load on the CPU, with the GPU's values
    from safetensors.torch import load_file

    saved = load_file(str(next((a / "final").glob("*.safetensors"))))
    on_cpu = load_causal_lm(str(a / "final"))
    state = on_cpu.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k in state)
    assert all(v.device.type == "cpu" for v in saved.values())
    optim = torch.load(a / "checkpoints" / "step-4" / "optimizer.pt", weights_only=True, map_location="cpu")
    assert any(s["exp_avg"].abs().sum() > 0 for s in optim["state"].values())


def test_auto_device_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))  # one past the last GPU
    assert resolve_device("auto") == torch.device("cuda", 0)  # ranks wrap around the node's GPUs
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
