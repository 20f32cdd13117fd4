"""Chunked logprob gather / entropy (rlft.ops) against the naive full log-softmax."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.ops import gather_logprobs, logprobs_and_entropy


def test_hand_computed_two_token_vocab() -> None:
    # z = [0, ln 3]: softmax = [1/4, 3/4]; logsumexp = ln(1 + 3) = ln 4
    # logprob of token 1 = ln 3 - ln 4 = ln 0.75; entropy = -(1/4 ln 1/4 + 3/4 ln 3/4)
    z = torch.tensor([[0.0, math.log(3.0)]])
    assert gather_logprobs(z, torch.tensor([1])).item() == pytest.approx(math.log(0.75), abs=1e-6)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    logprob, entropy = logprobs_and_entropy(z, torch.tensor([1]))
    assert logprob.item() == pytest.approx(math.log(0.75), abs=1e-6)
    assert entropy.item() == pytest.approx(h, abs=1e-6)


def _random_logits(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 50, generator=g) * 5
    logits[0, 0, 3] = 1e4  # extreme values: one token takes all the mass ...
    logits[1, 2] = -1e4  # ... a row of huge negatives ...
    logits[2, 5, :10] = -float("inf")  # ... and tokens masked out with -inf
    return logits


@pytest.mark.parametrize("chunk_rows", [1, 4, 5, 21, 1000])
def test_chunked_equals_naive_values_and_gradients(chunk_rows: int) -> None:
    base = _random_logits(0)
    targets = torch.randint(10, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 7, generator=torch.Generator().manual_seed(2))
    naive_in = base.clone().requires_grad_(True)
    naive = torch.log_softmax(naive_in, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    (naive * weights).sum().backward()
    chunk_in = base.clone().requires_grad_(True)
    chunked = gather_logprobs(chunk_in, targets, chunk_rows=chunk_rows)
    (chunked * weights).sum().backward()
    torch.testing.assert_close(chunked, naive, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunk_in.grad, naive_in.grad, rtol=0, atol=1e-6)
    assert torch.isfinite(chunked).all() and torch.isfinite(chunk_in.grad).all()


@pytest.mark.parametrize("chunk_rows", [1, 6, 1000])
def test_chunked_entropy_equals_naive(chunk_rows: int) -> None:
    logits = torch.randn(4, 9, 30, generator=torch.Generator().manual_seed(3)) * 3
    logits[1, 2, :7] = -float("inf")  # masked tokens: no mass, no nan
    targets = torch.randint(7, 30, (4, 9), generator=torch.Generator().manual_seed(5))
    logp = torch.log_softmax(logits, dim=-1)
    naive = -torch.where(logp.isfinite(), logp.exp() * logp, 0.0).sum(-1)
    logprobs, entropy = logprobs_and_entropy(logits, targets, chunk_rows)
    torch.testing.assert_close(entropy, naive, rtol=0, atol=1e-5)
    torch.testing.assert_close(logprobs, logp.gather(-1, targets[..., None]).squeeze(-1), rtol=0, atol=1e-5)


def test_entropy_carries_no_gradient_and_logprobs_keep_theirs() -> None:
    logits = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(6), requires_grad=True)
    targets = torch.tensor([[0, 1, 2], [3, 4, 5]])
    logprobs, entropy = logprobs_and_entropy(logits, targets, chunk_rows=4)
    assert not entropy.requires_grad
    (logprobs.sum() + entropy.sum()).backward()  # the entropy adds nothing to the gradient
    naive_in = logits.detach().clone().requires_grad_(True)
    torch.log_softmax(naive_in, -1).gather(-1, targets[..., None]).sum().backward()
    torch.testing.assert_close(logits.grad, naive_in.grad, rtol=0, atol=1e-6)


def test_low_precision_logits_give_fp32_logprobs() -> None:
    logits = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    targets = torch.tensor([[0, 5, 39], [1, 2, 3]])
    out = gather_logprobs(logits, targets, chunk_rows=2)
    naive = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive, rtol=0, atol=1e-5)


def test_empty_batch_gives_empty_results() -> None:
    logits = torch.zeros(0, 5, 11)
    assert gather_logprobs(logits, torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5)
    logprobs, entropy = logprobs_and_entropy(logits, torch.zeros(0, 5, dtype=torch.long))
    assert logprobs.shape == entropy.shape == (0, 5)
