"""TRPO maths (Schulman et al. 2015, sec. 6 and appendix C): conjugate gradient on Fisher-vector
products, the step size that puts the quadratic KL model on the trust-region boundary, and a
backtracking line search that accepts only a step that keeps the measured KL <= max_kl and
improves the surrogate. Model-free: the caller supplies closures over its parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def surrogate_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """TRPO's surrogate per token, negated to be minimised: loss_t = -exp(logp_t - old_t) * A_t, the
    importance-weighted advantage without clipping (Schulman et al. 2015, eq. 14: the trust region,
    not a clip, bounds the step). All [B, T] -> loss [B, T], no metrics."""
    return -torch.exp(logprobs - old_logprobs) * advantages, {}


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float = 1e-10
) -> Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x (Shewchuk 1994, alg. B2)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr <= tol:
            break
        ap = matvec(p)
        alpha = rr / p.dot(ap).clamp(min=1e-20)
        x += alpha * p
        r -= alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def max_step(direction: Tensor, fisher_direction: Tensor, max_kl: float) -> Tensor:
    """beta * s with beta = sqrt(2 delta / s^T F s): the quadratic KL model equals delta there."""
    shs = direction.dot(fisher_direction).clamp(min=1e-20)
    return direction * torch.sqrt(2.0 * max_kl / shs)


@dataclass(frozen=True)
class LineSearchResult:
    accepted: bool
    step_fraction: float  # fraction of the full step taken (0 when rejected)
    surrogate_gain: float
    kl: float
    tries: int


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    max_kl: float,
    ratio: float,
    max_backtracks: int,
) -> LineSearchResult:
    """Try fractions 1, ratio, ratio^2, ... of the full step. `evaluate(frac)` moves the parameters
    to old + frac * step and returns (surrogate gain over the old parameters, mean KL(old||new)).
    Accept the first fraction with gain > 0 and KL <= max_kl; otherwise evaluate(0.0) restores."""
    frac = 1.0
    gain, kl = 0.0, 0.0
    for tries in range(1, max_backtracks + 1):
        gain, kl = evaluate(frac)
        if gain > 0 and kl <= max_kl:
            return LineSearchResult(True, frac, gain, kl, tries)
        frac *= ratio
    evaluate(0.0)
    return LineSearchResult(False, 0.0, gain, kl, max_backtracks)
