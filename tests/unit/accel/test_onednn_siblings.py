"""Sibling linears (one input, several linears) stacked into one packed product at decode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlft.accel.onednn import forwards_replaced, onednn_linear_available, qualifying_linears
from rlft.accel.onednn_siblings import SiblingLinears
from rlft.accel.packed import packed_linears

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="torch built without oneDNN")


class _Block(nn.Module):
    """a and b read x (siblings); c reads a's output; `touch` changes x in place between a and b."""

    def __init__(self, touch: bool = False):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 2, bias=False), nn.Linear(3, 4)
        self.touch = touch

    def forward(self, x):
        ya = self.a(x)
        if self.touch:
            x.mul_(2.0)
        return self.c(ya), self.b(x)


def _assert_same_outputs(got, want):
    # a stacked product equals the separate ones up to float rounding (another summation order)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def _seeded_block():
    """A _Block and an input [3, 4], the same in every test."""
    torch.manual_seed(0)
    return _Block(), torch.randn(3, 4)


def _fused(model):
    modules = qualifying_linears((model,))
    siblings = SiblingLinears(modules, batch_hint=4)
    return siblings, forwards_replaced(modules, siblings.forward_of)


def test_siblings_are_learnt_from_the_first_forward_and_stacked_from_the_second():
    block, x = _seeded_block()
    with torch.no_grad():
        plain = block(x)
        siblings, ctx = _fused(block)
        with ctx:
            first, second = block(x), block(x.clone())
    # a and b read the same tensor: one group of 2; c reads another tensor: alone
    assert siblings.fused_groups == 1
    assert {len(g.members) for g in siblings.groups.values()} == {2}
    _assert_same_outputs(first, plain)
    _assert_same_outputs(second, plain)


def test_a_stacked_block_is_handed_out_only_for_the_same_unchanged_input():
    # b(x) after x.mul_(2) must be x_new W_b^T = 2 (x W_b^T), not the block computed before
    block, x = _seeded_block()
    with torch.no_grad():
        siblings, ctx = _fused(block)
        with ctx:
            block(x)
            block(x)  # groups formed (a, b)
            block.touch = True
            xc = x.clone()
            ya_c, yb = block(xc)
            other = block.b(torch.ones(1, 4))  # a group member on a fresh input: its own product
    assert siblings.fused_groups == 1
    torch.testing.assert_close(yb, (2 * x) @ block.b.weight.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ya_c, block.c(block.a(x)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other, block.b.weight.sum(1)[None], rtol=1e-5, atol=1e-6)


def test_a_weight_update_before_the_packing_forward_is_refused():
    layer = nn.Linear(4, 2)
    with torch.no_grad(), packed_linears(layer):
        layer(torch.ones(1, 4))  # first forward: dense weights, recorded
        layer.weight.add_(1.0)
        with pytest.raises(RuntimeError, match="weight changed inside packed_linears"):
            layer(torch.ones(1, 4))


def test_packed_decode_of_the_tiny_llama_stacks_qkv_and_gate_up(tiny_model):
    # per layer: q, k, v read the normed hidden state (group of 3), gate and up the MLP input (2)
    model = tiny_model.eval()
    layers = model.config.num_hidden_layers
    ids = torch.tensor([[1, 5, 9, 4, 7]])
    with torch.no_grad():
        plain = model(ids).logits
        siblings, ctx = _fused(model)
        with ctx:
            model(ids)
            stacked = model(ids).logits
    sizes = sorted(len(group) for group in siblings.learnt)
    assert sizes == [2] * layers + [3] * layers
    torch.testing.assert_close(stacked, plain, rtol=1e-4, atol=1e-5)


def test_a_later_context_on_the_same_model_starts_from_the_learnt_groups():
    # the second generate call needs no learning forward: its very first forward is stacked
    block, x = _seeded_block()
    with torch.no_grad():
        plain = block(x)
        with packed_linears(block):
            block(x)
            block(x)  # groups learnt: (a, b)
        with packed_linears(block):
            group = block.a.forward.func.__self__.groups[id(block.a)]  # built at entry
            assert group.members == [block.a, block.b]
            first = block(x)
    _assert_same_outputs(first, plain)
