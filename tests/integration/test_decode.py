"""The lean decode loop against transformers' `generate`, and the logit filters by hand."""

from __future__ import annotations

import math

import torch

from rlft.rollout.base import SamplingParams
from rlft.rollout.decode import filter_logits, sample_categorical
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


def _token_histogram(tokens: list[int], vocab: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=vocab).double() / len(tokens)


def test_sampling_has_generates_distribution(tiny_model, tiny_tok):
    # 4000 samples of 2 tokens from one prompt (no EOS possible) with each loop; temperature 0.2
    n, vocab, params = 4000, len(tiny_tok), SamplingParams(max_new_tokens=2, temperature=0.2)
    prompt = _ids(tiny_tok)[:1]
    gen = HFGenerator(tiny_model, tiny_tok, batch_size=n)
    ref = HFGenerator(tiny_model, tiny_tok, batch_size=n, use_generate=True)
    gen.eos = ref.eos = [len(tiny_tok) + 100]  # an id the model can never produce
    torch.manual_seed(3)
    ours = gen.generate(prompt, params, n).response_ids
    torch.manual_seed(4)
    theirs = ref.generate(prompt, params, n).response_ids
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor(prompt)).logits[0, -1]
    exact = torch.softmax(logits.double() / 0.2, -1)
    # total variation to the exact first-token distribution: sampling noise alone gives at most
    # 0.5 * sum sqrt(2p/(pi n)) ~ 0.05 (101 tokens); temperature 0.4 instead is 0.28 away
    wrong_temperature = torch.softmax(logits.double() / 0.4, -1)
    first = [_token_histogram([r[i] for r in rows], vocab) for rows in (ours, theirs) for i in (0,)]
    for hist in first:
        assert 0.5 * (hist - exact).abs().sum() < 0.06
        assert 0.5 * (hist - wrong_temperature).abs().sum() > 0.2
    # second tokens (conditioned on the first): the two loops' marginals agree
    second = [_token_histogram([r[1] for r in rows], vocab) for rows in (ours, theirs)]
    assert 0.5 * (second[0] - second[1]).abs().sum() < 0.1


def test_sample_categorical_frequencies_and_zero_mass():
    # unnormalised weights 1.0 : 0.6 : 0.3 : 0.1 : 0 (= 0.5, 0.3, 0.15, 0.05, 0), 40000 draws:
    # expected counts 20000, 12000, 6000, 2000, 0; binomial std sqrt(n p (1-p)) = 100, 92, 71, 44
    weights = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0]).expand(40000, 5)
    drawn = sample_categorical(weights, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=5).tolist()
    for count, expected, std in zip(counts, [20000, 12000, 6000, 2000, 0], [100, 92, 71, 44, 0], strict=True):
        assert abs(count - expected) <= 5 * std
    again = sample_categorical(weights, torch.Generator().manual_seed(0))
    assert torch.equal(drawn, again)  # seeded: the same draws


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
