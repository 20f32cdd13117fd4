"""A tokenizer whose pad token is its EOS (what `prepare_tokenizer` does when a tokenizer has no pad
token): padding is masked by position, never by token id, so the EOS that ends a completion or an
assistant turn is still a training target, in RL and in SFT alike."""

from __future__ import annotations

import torch

from rlft.data.sft import SFTExample, assistant_mask, padded_batch
from rlft.models.logprobs import response_logprobs
from rlft.rollout.assemble import pack_prompt_response
from rlft.train.sft import token_ce_sum


def test_rl_response_mask_keeps_eos_when_pad_is_eos(tiny_model, tiny_tok):
    eos = tiny_tok.eos_token_id
    a, b, c = tiny_tok.convert_tokens_to_ids(["1", "2", "3"])
    prompts = [[a, b], [c]]
    responses = [[a, eos], [b, c, eos], [c]]  # the 3rd was cut at max_new_tokens: no EOS
    pad_eos = pack_prompt_response([prompts[0], prompts[1], prompts[1]], responses, eos)
    pad_other = pack_prompt_response([prompts[0], prompts[1], prompts[1]], responses, tiny_tok.pad_token_id)
    ids, attn, mask = pad_eos
    # responses right-padded to T = 3: the mask follows lengths 2, 3, 1, whatever the pad id is
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert torch.equal(mask, pad_other[2]) and torch.equal(attn, pad_other[1])
    # the EOS ending responses 1 and 2 is in the mask; the padding after it (also EOS ids) is not
    assert ids[0, -3:].tolist() == [a, eos, eos] and mask[0].tolist() == [True, True, False]
    # same logprobs on every masked token (the EOS targets included) with either pad id
    with torch.no_grad():
        lp_eos, _ = response_logprobs(tiny_model.eval(), ids, attn, 3)
        lp_pad, _ = response_logprobs(tiny_model, pad_other[0], pad_other[1], 3)
    assert torch.allclose(lp_eos[mask], lp_pad[mask], atol=1e-6)
    assert torch.isfinite(lp_eos[0, 1]) and lp_eos[0, 1] < 0  # log p(EOS) of response 1 counts


def test_sft_loss_learns_eos_when_pad_is_eos(tiny_model, tiny_tok):
    eos = tiny_tok.eos_token_id
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    long = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "fine"}]
    ids_s, mask_s = assistant_mask(tiny_tok, short)
    ids_l, mask_l = assistant_mask(tiny_tok, long)
    # "...<|im_start|>assistant\n" "o" "k" "<|im_end|>" "\n": targets o, k and the EOS, not the "\n"
    assert [tiny_tok.decode([t]) for t, m in zip(ids_s, mask_s, strict=True) if m] == ["o", "k", "<|im_end|>"]
    assert ids_s[-2] == eos and mask_s[-2] and not mask_s[-1]

    examples = [SFTExample(tuple(ids_s), tuple(mask_s)), SFTExample(tuple(ids_l), tuple(mask_l))]
    batch_eos = padded_batch(examples, pad_id=eos)
    batch_pad = padded_batch(examples, pad_id=tiny_tok.pad_token_id)
    # the short row is padded with EOS ids, yet its loss mask is True at exactly 3 + 5 targets
    # ("ok" + EOS, "fine" + EOS): padding is never a target
    assert batch_eos.n_targets == 3 + 5
    assert torch.equal(batch_eos.loss_mask, batch_pad.loss_mask)
    pad_cols = batch_eos.attention_mask[0] == 0
    assert (
        bool((batch_eos.input_ids[0][pad_cols] == eos).all()) and not batch_eos.loss_mask[0][pad_cols].any()
    )
    with torch.no_grad():
        loss_eos = token_ce_sum(tiny_model.eval(), batch_eos)
        loss_pad = token_ce_sum(tiny_model, batch_pad)
    assert torch.allclose(loss_eos, loss_pad, atol=1e-5)
