"""The lean decode loop against transformers' `generate`, and the logit filters by hand."""

from __future__ import annotations

import math

import torch

from rlft.rollout.base import SamplingParams
from rlft.rollout.decode import filter_logits
from rlft.rollout.hf import HFGenerator

PROMPTS = ["What is 2 + 3?", "Hi", "What is 10 * 12?"]


def _ids(tok):
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in PROMPTS
    ]
    return tok(texts, add_special_tokens=False)["input_ids"]


def test_greedy_equals_generate_with_shared_prefill(tiny_model, tiny_tok):
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    lean = HFGenerator(tiny_model, tiny_tok, batch_size=4).generate(_ids(tiny_tok), params, 2)
    ref = HFGenerator(tiny_model, tiny_tok, batch_size=4, use_generate=True).generate(
        _ids(tiny_tok), params, 2
    )
    assert lean.response_ids == ref.response_ids
    assert lean.finished == ref.finished
    # prompt-major order: both samples of prompt 0 first, and greedy samples are identical
    assert lean.response_ids[0] == lean.response_ids[1]


def test_greedy_equals_generate_when_rows_finish_early(tiny_model, tiny_tok):
    # make EOS likely so rows leave the batch at different steps: a large bias on the EOS logit
    with torch.no_grad():
        tiny_model.lm_head.weight[tiny_tok.eos_token_id] *= 3.0
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    lean = HFGenerator(tiny_model, tiny_tok).generate(_ids(tiny_tok), params)
    ref = HFGenerator(tiny_model, tiny_tok, use_generate=True).generate(_ids(tiny_tok), params)
    assert lean.response_ids == ref.response_ids


def test_seeded_sampling_equals_generate_without_early_stop(tiny_model, tiny_tok):
    # with no EOS possible every row samples every step, so both loops draw the same random
    # numbers in the same order: identical tokens prove the sampling maths (temperature) match
    gen = HFGenerator(tiny_model, tiny_tok)
    ref = HFGenerator(tiny_model, tiny_tok, use_generate=True)
    gen.eos = ref.eos = [len(tiny_tok) + 100]  # an id the model can never produce
    params = SamplingParams(max_new_tokens=10, temperature=0.7)
    torch.manual_seed(3)
    a = gen.generate(_ids(tiny_tok), params, 2)
    torch.manual_seed(3)
    b = ref.generate(_ids(tiny_tok), params, 2)
    assert a.response_ids == b.response_ids
    assert not any(a.finished)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # top-k=2 keeps the two largest (0.5, 0.3)
    kept = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isfinite(kept).tolist() == [[True, True, False, False]]
    # top-p=0.7: cumulative mass before each token is 0, 0.5, 0.8, 0.95; drop where >= 0.7
    kept = filter_logits(logits, top_k=0, top_p=0.7)
    assert torch.isfinite(kept).tolist() == [[True, True, False, False]]
    # top-p=0.5: mass before token 2 is 0.5 >= 0.5, so only the first survives
    kept = filter_logits(logits, top_k=0, top_p=0.5)
    assert torch.isfinite(kept).tolist() == [[True, False, False, False]]
    assert math.isclose(float(kept[0, 0]), math.log(0.5), rel_tol=1e-6)
