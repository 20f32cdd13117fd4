"""The SFT loss on hand-computed distributions: next-token cross entropy summed over the target
tokens only (position j predicts token j + 1; the first token is never a target)."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.sft import next_token_cross_entropy_sum

LN3 = math.log(3.0)
# one row of 3 positions, V = 2: position 0 -> p = (3/4, 1/4), position 1 -> (1/2, 1/2),
# position 2 -> (1/4, 3/4) (predicts nothing: no token 3)
LOGITS = torch.tensor([[[LN3, 0.0], [0.0, 0.0], [0.0, LN3]]])
IDS = torch.tensor([[0, 1, 0]])


def test_cross_entropy_by_hand():
    # targets tokens 1 and 2: -ln p_0(1) - ln p_1(0) = ln 4 + ln 2 = ln 8
    got = next_token_cross_entropy_sum(LOGITS, IDS, torch.tensor([[False, True, True]]))
    assert got.shape == () and got.dtype == torch.float32
    assert got.item() == pytest.approx(math.log(8.0), abs=1e-6)
    # only token 2: ln 2; the first token's mask is never read (nothing predicts it)
    only_last = next_token_cross_entropy_sum(LOGITS, IDS, torch.tensor([[True, False, True]]))
    assert only_last.item() == pytest.approx(math.log(2.0), abs=1e-6)
    none = next_token_cross_entropy_sum(LOGITS, IDS, torch.tensor([[True, False, False]]))
    assert none.item() == 0.0


def test_cross_entropy_gradient_is_p_minus_onehot_and_bf16_logits_are_cast():
    logits = LOGITS.clone().requires_grad_(True)
    next_token_cross_entropy_sum(logits, IDS, torch.tensor([[False, True, False]])).backward()
    # d(-ln p(1)) / d z at position 0 = p - onehot(1) = (3/4, -3/4); no other position has a target
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.75, -0.75], [0.0, 0.0], [0.0, 0.0]]]))
    got = next_token_cross_entropy_sum(LOGITS.bfloat16(), IDS, torch.tensor([[False, True, True]]))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(math.log(8.0), abs=1e-2)  # ln 3 rounded to bf16
