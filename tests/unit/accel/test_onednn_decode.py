"""Speed-ups that must not change numerics: oneDNN linears (decode and training), the reserved KV cache."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from rlft.accel.onednn import (
    onednn_linear_available,
    onednn_linears,
    onednn_matmul,
    pack_linear,
)
from rlft.accel.packed import packed_linears
from rlft.models.load import cache_keyword
from rlft.rollout.kv_cache import ReservedLayer, reserved_cache

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 24), (3, 1, 24), (64, 24)])
def test_packed_linear_equals_aten(shape):
    # y = x W^T + b; the packed kernel sums in another order, so equal to float rounding only:
    # |error| <= ~K * eps * max|x||W| = 24 * 1.2e-7 * O(10) ~ 3e-5 at worst, 1e-5 typical
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x = torch.randn(shape)
    packed = pack_linear(layer.weight, batch_hint=shape[0])
    got = onednn_matmul(x, packed, layer.bias.detach())
    assert got.shape == (*shape[:-1], 40)
    torch.testing.assert_close(got, layer(x).detach(), rtol=1e-5, atol=3e-5)


class _Subclassed(nn.Linear):
    pass


@needs_onednn
def test_packed_linears_packs_plain_fp32_cpu_linears_and_restores_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), _Subclassed(8, 8), nn.Linear(8, 4, bias=False))
    model[3].to(torch.bfloat16)
    x = torch.randn(3, 8)
    with torch.no_grad():
        plain = model[:3](x)
        with packed_linears(model) as n:
            packed = model[:3](x)
            assert "forward" in model[0].__dict__  # the plain fp32 layer runs packed
            assert "forward" not in model[2].__dict__  # a subclass keeps its own forward
            assert "forward" not in model[3].__dict__  # bf16 is not packed
        assert n == 1
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in model)


@needs_onednn
def test_packed_linears_restores_forwards_after_an_error():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match="boom"), packed_linears(model):
        raise RuntimeError("boom")
    assert "forward" not in model[0].__dict__


@needs_onednn
def test_packed_linears_packs_the_weights_at_entry():
    # the packed copy is taken on entering: an update inside the context is not seen until re-entry
    layer = nn.Linear(4, 2, bias=False)
    x = torch.ones(1, 4)
    with torch.no_grad(), packed_linears(layer, fuse_siblings=False):
        before = layer(x).clone()
        layer.weight.add_(1.0)  # every output grows by sum(x) = 4 once repacked
        assert torch.equal(layer(x), before)
    with torch.no_grad(), packed_linears(layer):
        torch.testing.assert_close(layer(x), before + 4.0)


@needs_onednn
def test_onednn_linears_train_with_the_same_gradients_as_aten():
    # L = sum(y * c) with y = x W^T + b: dL/dx = c W, dL/dW = c^T x, dL/db = sum over rows of c
    torch.manual_seed(0)
    layer = nn.Linear(16, 12)
    x = torch.randn(2, 5, 16, requires_grad=True)
    c = torch.randn(2, 5, 12)
    grads = []
    for fast in (False, True):
        layer.zero_grad(), setattr(x, "grad", None)
        with onednn_linears(layer) if fast else contextlib.nullcontext():
            (layer(x) * c).sum().backward()
        grads.append((x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    by_hand = (c @ layer.weight.detach(), c.reshape(10, 12).t() @ x.detach().reshape(10, 16), c.sum((0, 1)))
    for aten, fast, hand in zip(*grads, by_hand, strict=True):
        torch.testing.assert_close(fast, aten, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(aten, hand, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linears_take_row_strided_inputs():
    # the LM head on each sequence's last position: x = h[:, -1:, :] has a row stride of T * d.
    # y = x W^T and dL/dW = dy^T x for L = sum(y * c): the same as aten's (oneDNN takes x
    # contiguous; fed as strided rows it ran a ~100x slower kernel)
    torch.manual_seed(0)
    layer = nn.Linear(16, 40, bias=False)
    h = torch.randn(3, 7, 16)
    c = torch.randn(3, 1, 40)
    grads = []
    for ctx in (contextlib.nullcontext(), onednn_linears(layer)):
        layer.zero_grad()
        with ctx:
            (layer(h[:, -1:, :]) * c).sum().backward()
        grads.append(layer.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], c.reshape(3, 40).t() @ h[:, -1, :], rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linears_second_derivatives_equal_atens():
    # TRPO's Fisher-vector product differentiates a gradient: H v for
    # L = sum(tanh(W2 tanh(W1 x)) * c) over both weights; dL/dW1 runs through dL/dh = dy W2, so
    # H v needs that product differentiable in W2, as aten's linear backward is
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Linear(5, 3, bias=False))
    x, c = torch.randn(4, 6), torch.randn(4, 3)
    v = [torch.randn_like(p) for p in model.parameters()]
    hvps = []
    for fast in (False, True):
        with onednn_linears(model) if fast else contextlib.nullcontext():
            loss = (torch.tanh(model(x)) * c).sum()
            grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
            dot = sum((g * u).sum() for g, u in zip(grads, v, strict=True))
            hvps.append(torch.autograd.grad(dot, list(model.parameters())))
    for fast, aten in zip(hvps[1], hvps[0], strict=True):
        torch.testing.assert_close(fast, aten, rtol=1e-4, atol=1e-5)


@needs_onednn
def test_onednn_contexts_nest_and_restore_the_forward_they_found():
    layer = nn.Linear(4, 4)
    with onednn_linears(layer):
        training_forward = layer.__dict__["forward"]
        with torch.no_grad(), packed_linears(layer):
            assert layer.__dict__["forward"] is not training_forward
        assert layer.__dict__["forward"] is training_forward  # decode inside training: restored
    assert "forward" not in layer.__dict__


@pytest.mark.skipif(ReservedLayer is None, reason="transformers without per-layer caches")
def test_reserved_cache_gives_the_dynamic_caches_logits(tiny_model):
    # prefill 2 left-padded prompts, repeat each twice, decode 3 steps, drop a row, decode 2 more:
    # the reserved cache must give the same logits as transformers' DynamicCache at every step
    from transformers import DynamicCache

    torch.manual_seed(0)
    ids = torch.randint(3, 100, (2, 5))
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    outs = {}
    for name, cache in (("dynamic", DynamicCache(config=tiny_model.config)), ("reserved", None)):
        if cache is None:
            cache = reserved_cache(tiny_model.config, capacity=5 + 5)
        outs[name] = _decode_logits(tiny_model, cache, ids, mask)
    assert isinstance(reserved_cache(tiny_model.config, 4).layers[0], ReservedLayer)
    for a, b in zip(outs["dynamic"], outs["reserved"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch.no_grad()
def _decode_logits(model, cache, ids, mask):
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **{cache_keyword(model): cache})
    cache.batch_repeat_interleave(2)
    mask, logits = mask.repeat_interleave(2, 0), [out.logits[:, -1].repeat_interleave(2, 0)]
    nxt, pos = logits[0].argmax(-1), mask.sum(-1)
    for step in range(5):
        if step == 3:  # row 1 finished: it leaves the batch
            keep = torch.tensor([0, 2, 3])
            cache.batch_select_indices(keep)
            nxt, pos, mask = nxt[keep], pos[keep], mask[keep]
        mask = torch.cat([mask, torch.ones(len(mask), 1, dtype=mask.dtype)], 1)
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=pos[:, None],
            **{cache_keyword(model): cache},
        )
        logits.append(out.logits[:, -1])
        nxt, pos = logits[-1].argmax(-1), pos + 1
    return logits


@pytest.mark.skipif(ReservedLayer is None, reason="transformers without per-layer caches")
def test_reserved_cache_refuses_to_overflow(tiny_model):
    cache = reserved_cache(tiny_model.config, capacity=4)
    with pytest.raises(ValueError, match="reserved for 4 positions, asked to hold 5"), torch.no_grad():
        tiny_model(input_ids=torch.ones(1, 5, dtype=torch.long), **{cache_keyword(tiny_model): cache})


@needs_onednn
@pytest.mark.parametrize("onednn", [True, False])
def test_supervised_loops_follow_the_configs_model_section(onednn):
    # SFT/RM/DPO read model.onednn, distillation student.onednn (its teacher follows the student)
    from rlft.accel.onednn import onednn_for
    from rlft.config.common import ModelConfig
    from rlft.config.distill import DistillConfig
    from rlft.config.sft import SFTConfig

    model = ModelConfig(onednn=onednn)
    for cfg in (SFTConfig(model=model), DistillConfig(student=model)):
        student, teacher = nn.Linear(4, 4), nn.Linear(4, 4)
        with onednn_for(cfg, student, teacher) as n:
            assert n == (2 if onednn else 0)
            assert ("forward" in student.__dict__) is onednn
            assert ("forward" in teacher.__dict__) is onednn
