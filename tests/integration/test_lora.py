"""LoRA (PEFT): the reference is the base model with adapters disabled, checkpoints hold only the
trainable tensors and resume exactly, the final model is merged, loadable and computes what the
adapted policy computes, TRPO works on it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import rlft
import rlft.rl.loop
from rlft.models.load import AdaptersOff, add_lora, is_peft, load_causal_lm
from rlft.models.logprobs import response_logprobs
from rlft.runtime.checkpoint import load_model_weights

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=4",
    "train.microbatch_size=8",
    "model.lora_rank=4",
    "train.optim.lr=0.05",
]


def _ids(tok):
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    ids = torch.tensor([tok(text + "5", add_special_tokens=False)["input_ids"]])
    return ids, torch.ones_like(ids)


def test_reference_with_adapters_off_equals_the_base_model(tiny_model, tiny_tok):
    ids, mask = _ids(tiny_tok)
    base, _ = response_logprobs(tiny_model.eval(), ids, mask, 3)
    peft_model = add_lora(tiny_model, 4, 16.0, "all-linear")
    with torch.no_grad():  # make the adapters matter: B is zero-initialised, so set it
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
    adapted, _ = response_logprobs(peft_model, ids, mask, 3)
    reference, _ = response_logprobs(AdaptersOff(peft_model), ids, mask, 3)
    assert not torch.allclose(adapted, base, atol=1e-4)  # the adapters change the policy
    assert torch.equal(reference, base)  # the reference is exactly the base model


def test_lora_resume_is_exact_and_final_is_merged(make_rl_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = [*SMALL, "algo.kl_coef=0.1", "train.save_every=1"]
    rlft.train_rl(make_rl_config(*common, "train.steps=3", out=a))
    rlft.train_rl(make_rl_config(*common, "train.steps=2", out=b))
    ckpt = load_file(b / "checkpoints" / "step-2" / "trainable.safetensors")
    assert ckpt and all("lora_" in k for k in ckpt)  # only adapters are checkpointed
    rlft.train_rl(make_rl_config(*common, "train.steps=3", "resume=true", out=b))
    ma = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss/policy"] for m in ma] == [m["loss/policy"] for m in mb]
    assert [m["policy/kl"] for m in ma] == [m["policy/kl"] for m in mb]
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert not any("lora" in k for k in wa)  # merged into plain weights
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    AutoModelForCausalLM.from_pretrained(a / "final")  # loadable without PEFT


def _logprobs(model, ids, mask, n):
    with torch.no_grad():
        return response_logprobs(model.eval(), ids, mask, n)[0]


def test_lora_final_equals_the_adapted_policy(
    make_rl_config, tmp_path, tiny_model_path, tiny_tok, monkeypatch
):
    text = tiny_tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    answer = "5, since 2 + 3 = 5"
    ids = torch.tensor([tiny_tok(text + answer, add_special_tokens=False)["input_ids"]])
    mask, n = torch.ones_like(ids), len(answer)  # one token per character
    adapted = {}
    save_final = rlft.rl.loop.save_final

    def capture_then_save(model, tok, out_dir, merge_lora=True):
        # the policy as trained: the PEFT model, adapters on, just before the final save merges it
        assert is_peft(model) and merge_lora
        adapted["logprobs"] = _logprobs(model, ids, mask, n)
        return save_final(model, tok, out_dir, merge_lora)

    monkeypatch.setattr(rlft.rl.loop, "save_final", capture_then_save)

    def spread(prompt, completion, example):  # almost never equal over a group: a real gradient
        return float(sum(map(ord, completion)) % 5)

    out = tmp_path / "run"
    cfg = make_rl_config(*SMALL, "train.steps=2", "train.save_every=2", out=out)
    rlft.train_rl(cfg, [spread])
    policy = adapted["logprobs"]
    final = _logprobs(AutoModelForCausalLM.from_pretrained(out / "final"), ids, mask, n)
    base = _logprobs(load_causal_lm(tiny_model_path), ids, mask, n)
    assert policy.shape == (1, n)
    # merging W + (alpha / r) B A changes only float32 rounding (about 5e-7 here)
    assert torch.allclose(final, policy, atol=1e-5, rtol=0)
    # the adapters moved the policy far beyond that tolerance (about 0.3 here), so the equality
    # above is no accident
    assert float((final - base).abs().max()) > 1e-3
    # the last checkpoint's adapters on a fresh base model give the same policy
    m = cfg.model
    fresh = add_lora(load_causal_lm(tiny_model_path), m.lora_rank, m.lora_alpha, m.lora_targets)
    load_model_weights(fresh, out / "checkpoints" / "step-2")
    assert torch.allclose(_logprobs(fresh, ids, mask, n), policy, atol=1e-5, rtol=0)


@pytest.mark.parametrize("lora", [False, True])
def test_trpo_keeps_the_trust_region_full_and_lora(make_rl_config, tmp_path, lora):
    overrides = [
        *SMALL[:4],
        "algo.name=trpo",
        "algo.trpo.max_kl=0.001",
        "train.steps=2",
        f"model.lora_rank={4 if lora else 0}",
    ]
    rlft.train_rl(make_rl_config(*overrides, out=tmp_path / "t"))
    metrics = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        # an accepted step measured KL(old||new) <= max_kl and a positive surrogate gain
        if m["trpo/accepted"]:
            assert m["trpo/kl"] <= 0.001 and m["trpo/surrogate_gain"] > 0
    assert any(m["trpo/accepted"] for m in metrics)
