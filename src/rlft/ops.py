"""Tensor helpers shared by algorithms and loops: masked statistics and logprob gathering.

Imports nothing else from the package.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() if dim is None else (x * m).sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over entries where mask is True; 0 where there are none (never NaN)."""
    count = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Population variance over masked entries (0 for fewer than one entry)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


LOGPROB_CHUNK_ROWS = 256  # rows of [N, V] logits turned into fp32 temporaries at once


def gather_logprobs(logits: Tensor, targets: Tensor, chunk_rows: int = LOGPROB_CHUNK_ROWS) -> Tensor:
    """log softmax(logits)[targets] in fp32, `chunk_rows` rows at a time: no [..., V] log-softmax
    or fp32 copy is ever held, forward or backward (`_ChunkedLogprobs`).

    logits [..., V], targets [...] (long) -> [...] fp32
    """
    flat, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return _ChunkedLogprobs.apply(flat, flat_targets, chunk_rows).reshape(targets.shape)


class _ChunkedLogprobs(torch.autograd.Function):
    """Row-chunked log softmax(z)[t]: saves only the logits (no copy); backward recomputes the
    softmax chunk by chunk: d out_i / d z_ij = [j = t_i] - softmax(z_i)_j."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, chunk_rows: int) -> Tensor:
        parts = [torch.zeros(0, device=logits.device)]  # an empty batch: an empty result
        for z, t in zip(logits.split(chunk_rows), targets.split(chunk_rows), strict=True):
            parts.append(torch.log_softmax(z.float(), dim=-1).gather(-1, t[:, None]).squeeze(-1))
        ctx.save_for_backward(logits, targets)
        ctx.chunk_rows = chunk_rows
        return torch.cat(parts)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, targets = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        c = ctx.chunk_rows
        for i in range(0, logits.shape[0], c):
            g = grad[i : i + c, None]
            chunk = torch.softmax(logits[i : i + c].float(), dim=-1).mul_(-g)  # -g * softmax
            chunk.scatter_add_(-1, targets[i : i + c, None], g)  # + g at the target
            grad_logits[i : i + c] = chunk
        return grad_logits, None, None


def entropy_from_logits(logits: Tensor, chunk_rows: int = LOGPROB_CHUNK_ROWS) -> Tensor:
    """Entropy of softmax(logits) over the last dim: logsumexp(z) - sum softmax(z) * z, computed
    over row chunks so no fp32 [..., V] temporary is built."""
    flat = logits.reshape(-1, logits.shape[-1])
    parts = [torch.zeros(0, device=logits.device)]  # an empty batch: an empty result
    for c in flat.split(chunk_rows):
        z = c.float()
        parts.append(torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1))
    return torch.cat(parts).reshape(logits.shape[:-1])


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
