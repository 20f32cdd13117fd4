"""Decode-time linear layers on oneDNN weights packed once per generate call (CPU, fp32).

At decode, every step multiplies a few rows [N, d] by every weight matrix of the model. On this
project's CPUs aten's fp32 matmul (MKL sgemm) runs such skinny products at a fraction of the
peak; oneDNN's matmul on a weight reordered once into its blocked layout runs them 2-4x faster
(bench/packed_linear.py prints both). The packed copy lives only while the context is open, so
it costs no memory outside generation, and the weights it packs are the ones at entry: the
context must be re-entered after every update (HFGenerator does so per generate call).

Results equal aten's up to float rounding (a different summation order), not bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

PACKABLE_DTYPES = (torch.float32,)


def onednn_linear_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def _packable(module: nn.Module) -> bool:
    weight = module.weight
    return (
        type(module) is nn.Linear  # subclasses (quantised, parallel) keep their own forward
        and type(weight) in (Tensor, nn.Parameter)  # not a DTensor shard (FSDP2)
        and weight.device.type == "cpu"
        and weight.dtype in PACKABLE_DTYPES
    )


def pack_linear(weight: Tensor, batch_hint: int) -> Tensor:
    """weight [out, in] -> an opaque oneDNN tensor for `packed_linear` (a copy; `weight` unchanged)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_hint)


def packed_linear(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    """x [..., in] @ weight.T + bias, with the weight packed by `pack_linear` (no autograd)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _packed_forward(packed: Tensor, bias: Tensor | None):
    return lambda x: packed_linear(x, packed, bias)


@contextlib.contextmanager
def packed_linears(model: nn.Module, batch_hint: int = 32) -> Iterator[int]:
    """Run every plain fp32 CPU nn.Linear of `model` on a packed copy of its weight until exit;
    yields how many were packed (0 when oneDNN is missing or nothing qualifies). For inference
    only: the packed forward has no gradient. Forwards are restored on exit, errors included."""
    modules = [m for m in model.modules() if isinstance(m, nn.Linear) and _packable(m)]
    if not onednn_linear_available():
        modules = []
    try:
        for module in modules:
            bias = None if module.bias is None else module.bias.detach()
            module.forward = _packed_forward(pack_linear(module.weight, batch_hint), bias)
        yield len(modules)
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)


def packing_context(model: Any, enabled: bool, batch_hint: int) -> contextlib.AbstractContextManager:
    return packed_linears(model, batch_hint) if enabled else contextlib.nullcontext(0)
