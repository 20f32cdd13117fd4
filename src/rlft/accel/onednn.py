"""fp32 CPU linear layers on oneDNN instead of aten's matmul (MKL sgemm).

On this project's CPUs (AMD EPYC, AVX-512) MKL runs fp32 products at 110-195 GFLOP/s (it does
not use its AVX-512 kernels on AMD) and the skinny ones of decoding ([N <= 32, d] x weights) far
lower; oneDNN's matmul runs the same products at 180-220 GFLOP/s on a Zen 4 and 350-460 on a
Zen 5, and 2-4x faster at decode shapes once the weight is reordered into its blocked layout
(`bench/onednn_linear.py` prints both side by side). Two ways in:

- `packed_linears(model)`: inference (decode), weights fixed inside. Every qualifying nn.Linear
  runs on a packed copy of its weight, dropped at exit (no memory outside the context; re-enter
  after each update: HFGenerator packs per generate call); linears that read one input (q/k/v,
  gate/up) run as one stacked product (rlft.accel.onednn_siblings).
- `onednn_linears(model)`: training and no-grad passes. The forward and backward products on
  oneDNN with the live weight (nothing cached, so optimizer steps are always seen).

Qualifying = exactly nn.Linear (not a subclass: quantised or parallel layers keep their own
forward), plain CPU fp32 weight (not a DTensor shard). Contexts nest: each restores the forward
it found. Results equal aten's up to float rounding (another summation order), not bit for bit.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

_MISSING = object()


def onednn_linear_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def _qualifies(module: nn.Module) -> bool:
    if type(module) is not nn.Linear:
        return False
    weight = module.weight
    return (
        type(weight) in (Tensor, nn.Parameter)
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
    )


def pack_linear(weight: Tensor, batch_hint: int) -> Tensor:
    """weight [out, in] -> an opaque oneDNN tensor for `onednn_matmul` (a copy; `weight` unchanged)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_hint)


def onednn_matmul(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [..., in] @ weight.T + bias on oneDNN, no autograd; `weight` dense [out, in] (or its
    transpose as a view of a contiguous [in, out]) or packed. `x` is made contiguous first: on a
    row-strided slice (the last position of each sequence) oneDNN falls back to a kernel ~100x
    slower."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b on oneDNN, and its backward dL/dx = dy W, dL/dW = dy^T x, dL/db = sum dy:
    on oneDNN with W and x as transposed views of contiguous matrices; on aten when the backward is
    differentiated (create_graph, TRPO's Fisher-vector product), so second derivatives stay exact."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_matmul(x, weight.detach(), None if bias is None else bias.detach())

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        flat = grad_out.reshape(-1, grad_out.shape[-1])
        differentiable = torch.is_grad_enabled()  # true only under create_graph
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if differentiable:
                grad_x = grad_out @ weight
            else:  # W^T as the weight operand: a transposed view of a contiguous matrix
                grad_x = onednn_matmul(grad_out, weight.detach().contiguous().t())
        if ctx.needs_input_grad[1]:
            x_flat = x.reshape(-1, x.shape[-1])
            if differentiable:
                grad_w = flat.t() @ x_flat
            else:  # x^T as the weight operand: a transposed view of a contiguous matrix, never strided rows
                grad_w = onednn_matmul(flat.t(), x_flat.detach().contiguous().t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat.sum(0)
        return grad_x, grad_w, grad_b


def _onednn_forward(self: nn.Linear, x: Tensor) -> Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return nn.functional.linear(x, self.weight, self.bias)
    return _OneDNNLinear.apply(x, self.weight, self.bias)


@contextlib.contextmanager
def forwards_replaced(modules: list[nn.Module], make: Callable[[nn.Module], Any]) -> Iterator[int]:
    previous = [m.__dict__.get("forward", _MISSING) for m in modules]
    try:
        for module in modules:
            module.forward = make(module)
        yield len(modules)
    finally:
        for module, before in zip(modules, previous, strict=True):
            if before is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = before


def qualifying_linears(models: tuple[Any, ...]) -> list[nn.Module]:
    if not onednn_linear_available():
        return []
    return [m for model in models if model is not None for m in model.modules() if _qualifies(m)]


def linear_bias(module: nn.Module) -> Tensor | None:
    """The linear's bias outside autograd, or None."""
    return None if module.bias is None else module.bias.detach()


def onednn_linears(*models: Any) -> contextlib.AbstractContextManager[int]:
    """Training and no-grad passes: qualifying linears run on oneDNN (autograd kept); yields how many."""
    return forwards_replaced(qualifying_linears(models), lambda m: types.MethodType(_onednn_forward, m))


def onednn_for(cfg: Any, *models: Any) -> contextlib.AbstractContextManager[int]:
    """`onednn_linears(*models)` when the config's model section (`model`, or `student` for
    distillation) has onednn on; else a context that does nothing."""
    section = getattr(cfg, "model", None) or getattr(cfg, "student", None)
    return maybe(bool(getattr(section, "onednn", False)), onednn_linears, *models)


def maybe(enabled: bool, context: Callable[..., contextlib.AbstractContextManager[int]], *models: Any):
    """`context(*models)` when enabled, else a context that does nothing (yields 0)."""
    return context(*models) if enabled else contextlib.nullcontext(0)
