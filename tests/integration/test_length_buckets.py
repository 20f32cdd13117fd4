"""Length-bucketed (padding-cut) forward passes equal the padded pass: values and gradients."""

from __future__ import annotations

import pytest
import torch

from rlft.models.logprobs import length_buckets_of, response_logprobs


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """3 prompts (left-padded, lengths 5, 3, 4) x 2 samples, responses right-padded to T=7 with
    real lengths 7, 2, 1, 5, 3, 6."""
    g = torch.Generator().manual_seed(0)
    prompt_lens, resp_lens, lp, t = [5, 3, 4], [7, 2, 1, 5, 3, 6], 5, 7
    ids = torch.randint(3, vocab, (6, lp + t), generator=g)
    mask = torch.zeros(6, lp + t, dtype=torch.long)
    for row in range(6):
        n = prompt_lens[row // 2]
        ids[row, : lp - n] = 0  # left padding
        ids[row, lp:] = ids[row // 2 * 2, lp:] if row % 2 else ids[row, lp:]
        mask[row, lp - n : lp + resp_lens[row]] = 1
        ids[row, lp + resp_lens[row] :] = 0  # right padding after the response
    ids[1, :lp] = ids[0, :lp]  # the two samples of a prompt share its tokens
    ids[3, :lp], ids[5, :lp] = ids[2, :lp], ids[4, :lp]
    return ids, mask, t


def test_buckets_sort_by_length_and_cut_to_the_longest():
    lengths = torch.tensor([7, 2, 1, 5, 3, 6])
    # sorted: rows 2 (1), 1 (2), 4 (3), 3 (5), 5 (6), 0 (7); 3 groups of 2
    groups = length_buckets_of(lengths, 3)
    assert [g.tolist() for g, _ in groups] == [[2, 1], [4, 3], [5, 0]]
    assert [t for _, t in groups] == [2, 5, 7]
    # more buckets than rows: one row each; a zero length still runs one position
    assert [t for _, t in length_buckets_of(torch.tensor([0, 3]), 5)] == [1, 3]


@pytest.mark.parametrize("share_prompt", [True, False])
def test_bucketed_logprobs_and_grads_equal_padded(tiny_model, tiny_tok, share_prompt):
    ids, mask, t = _batch(len(tiny_tok))
    real = mask[:, -t:].bool()
    weights = torch.randn(real.shape, generator=torch.Generator().manual_seed(1))

    def run(buckets: int):
        tiny_model.zero_grad()
        logprobs, entropy = response_logprobs(tiny_model, ids, mask, t, True, share_prompt, buckets)
        (logprobs * weights * real).sum().backward()
        grads = [p.grad.clone() for p in tiny_model.parameters()]
        return logprobs.detach(), entropy, grads

    padded, padded_entropy, padded_grads = run(1)
    cut, cut_entropy, cut_grads = run(3)
    torch.testing.assert_close(cut[real], padded[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cut_entropy[real], padded_entropy[real], rtol=1e-5, atol=1e-5)
    # 3 buckets: rows {2, 1} cut to 2 positions, {4, 3} to 5, the rest never computed; and only
    # real response tokens reach the LM head: 0 at every padded position, bucketed or not
    for out in (cut, padded, cut_entropy, padded_entropy):
        assert (out[~real] == 0).all() and (out[real] != 0).all()
    for a, b in zip(cut_grads, padded_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("share_prompt", [True, False])
def test_head_on_real_tokens_equals_the_models_own_logits(tiny_model, tiny_tok, share_prompt, monkeypatch):
    # a plain-head model (Llama) runs its backbone and its LM head on real tokens only; any other
    # model returns logits from its own forward (logits_to_keep): the same logprobs and gradients
    import rlft.models.logprobs

    ids, mask, t = _batch(len(tiny_tok))
    real = mask[:, -t:].bool()
    weights = torch.randn(real.shape, generator=torch.Generator().manual_seed(2))
    assert type(tiny_model).__name__ in rlft.models.logprobs.PLAIN_HEAD_MODELS
    results = []
    for plain in (rlft.models.logprobs.PLAIN_HEAD_MODELS, frozenset()):
        monkeypatch.setattr(rlft.models.logprobs, "PLAIN_HEAD_MODELS", plain)
        tiny_model.zero_grad()
        logprobs, entropy = response_logprobs(tiny_model, ids, mask, t, True, share_prompt, 2)
        (logprobs * weights).sum().backward()
        results.append((logprobs.detach(), entropy, [p.grad.clone() for p in tiny_model.parameters()]))
    (split, split_entropy, split_grads), (whole, whole_entropy, whole_grads) = results
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split_entropy, whole_entropy, rtol=1e-5, atol=1e-5)
    for a, b in zip(split_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
