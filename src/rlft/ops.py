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
    return logprobs_and_entropy(logits, targets, chunk_rows, with_entropy=False)[0]


def logprobs_and_entropy(
    logits: Tensor, targets: Tensor, chunk_rows: int = LOGPROB_CHUNK_ROWS, with_entropy: bool = True
) -> tuple[Tensor, Tensor | None]:
    """(`gather_logprobs`, entropy of softmax(logits) (no gradient; None unless `with_entropy`)),
    both from one log-softmax per chunk of rows: logprob_i = log p_i[t_i] and
    entropy_i = -sum_j p_ij log p_ij, with p_i = softmax(z_i)."""
    flat, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    logprobs, entropy = _ChunkedLogprobs.apply(flat, flat_targets, chunk_rows, with_entropy)
    return logprobs.reshape(targets.shape), entropy.reshape(targets.shape) if with_entropy else None


class _ChunkedLogprobs(torch.autograd.Function):
    """Row-chunked log softmax(z)[t] (and entropy): saves the logits (no copy), each row's max m
    and total sum_j exp(z_j - m) [N]; backward writes d out_i / d z_ij = [j = t_i] -
    exp(z_ij - m_i) / total_i, times the incoming grad, chunk by chunk into the gradient.
    Everything is taken relative to the row's max (as log_softmax is): no cancellation at large |z|."""

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, chunk_rows: int, with_entropy: bool
    ) -> tuple[Tensor, Tensor]:
        empty = torch.zeros(0, device=logits.device)
        tops, totals, logprobs, entropies = [empty], [empty], [empty], [empty]
        for z, t in zip(logits.split(chunk_rows), targets.split(chunk_rows), strict=True):
            z = z.float()
            log_p = torch.log_softmax(z, dim=-1)  # the chunk's [c, V] temporary (and exp for H)
            logprobs.append(log_p.gather(-1, t[:, None]).squeeze(-1))
            if with_entropy:  # H = -sum p log p; nansum: p = 0 at a -inf logit, 0 * -inf = nan
                entropies.append(-torch.nansum(log_p.exp().mul_(log_p), dim=-1))
            if ctx.needs_input_grad[0]:  # m; log_p at the max is -log total: total = exp(-max log_p)
                tops.append(z.amax(-1))
                totals.append(log_p.amax(-1).neg_().exp_())
        ctx.save_for_backward(logits, targets, torch.cat(tops), torch.cat(totals))
        ctx.chunk_rows = chunk_rows
        entropy = torch.cat(entropies)
        ctx.mark_non_differentiable(entropy)
        return torch.cat(logprobs), entropy

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _entropy_grad: Tensor) -> tuple[Tensor | None, ...]:
        logits, targets, top, total = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        direct = logits.dtype == torch.float32  # low precision: an fp32 chunk, then copied
        for i in range(0, logits.shape[0], ctx.chunk_rows):
            rows = slice(i, i + ctx.chunk_rows)
            g = grad[rows, None]
            out = grad_logits[rows] if direct else torch.empty(logits[rows].shape, device=logits.device)
            torch.sub(logits[rows].float(), top[rows, None], out=out).exp_()
            out.mul_(-g / total[rows, None])  # -g softmax
            out.scatter_add_(-1, targets[rows, None], g)  # + g at the target
            if not direct:
                grad_logits[rows] = out
        return grad_logits, None, None, None


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
