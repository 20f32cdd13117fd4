"""Pure distillation losses: per-token divergences between a student's and a teacher's next-token
distributions over the whole vocabulary, and the sampled-token reverse-KL estimator of on-policy
distillation.

Shapes: student logits and teacher logits (or logprobs) [B, T, V], response_mask [B, T] (bool,
True = counts). Every loss is [B, T], 0 where the mask is False; the caller aggregates (token mean
over the mask: rlft.ops.masked_mean).

The teacher may be given as logits or as logprobs: log_softmax is invariant to a per-position
shift, so log_softmax(logprobs / tau) == log_softmax(logits / tau) at every temperature tau.

Temperature (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", sec. 2): both
distributions are softmax(logits / tau) and the loss is multiplied by tau^2, because the gradient
of the softened loss scales as 1 / tau^2; tau = 1 is the plain divergence.

`full_vocab_kl` is the package's one exact KL between two distributions over the vocabulary
(also the layer-pruning score of rlft.models.students).

Imports nothing from the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def tempered_logprobs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / tau) over the last dim, in float32. [..., V] -> [..., V]"""
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def full_vocab_kl(logp: Tensor, logq: Tensor) -> Tensor:
    """Exact KL(p || q) between two next-token distributions over the whole vocabulary, given as
    logprobs [..., V] -> [...] (relative entropy: Cover & Thomas 2006, "Elements of Information
    Theory", sec. 2.3, which also fixes 0 log 0 = 0):

        KL(p || q) = sum_v p(v) [log p(v) - log q(v)],  with 0 log 0 = 0 (a term with p(v) = 0 is 0).

    No temperature, no mask, no mean over positions: the caller tempers the logprobs, masks and
    averages. The direction is the argument order (first = the distribution the expectation is
    under). Gradients flow through both arguments; pass logp.detach() to differentiate only in q
    (TRPO's Fisher-vector product)."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def _check(student_logits: Tensor, teacher: Tensor, response_mask: Tensor) -> None:
    if student_logits.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher {tuple(teacher.shape)} differ in "
            "shape (distillation needs the same tokenizer / vocabulary size and token positions)"
        )
    if response_mask.shape != student_logits.shape[:-1]:
        raise ValueError(f"response_mask {tuple(response_mask.shape)} is not [B, T] of the logits")


def _masked(loss: Tensor, response_mask: Tensor) -> Tensor:
    return torch.where(response_mask.bool(), loss, torch.zeros_like(loss))


def forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, response_mask: Tensor, temperature: float = 1.0
) -> Tensor:
    """tau^2 KL(p_t || p_s) = tau^2 sum_v p_t(v) [log p_t(v) - log p_s(v)] per token [B, T]:
    the word-level KD loss (Hinton et al. 2015, sec. 2; Kim & Rush 2016, word-level KD, which is
    this up to the teacher's entropy, a constant). Mode-covering: the student pays for missing
    teacher mass."""
    _check(student_logits, teacher_logits, response_mask)
    logp_s = tempered_logprobs(student_logits, temperature)
    logp_t = tempered_logprobs(teacher_logits, temperature)
    return _masked(full_vocab_kl(logp_t, logp_s) * temperature**2, response_mask)


def reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, response_mask: Tensor, temperature: float = 1.0
) -> Tensor:
    """tau^2 KL(p_s || p_t) = tau^2 sum_v p_s(v) [log p_s(v) - log p_t(v)] per token [B, T]
    (the MiniLLM objective, Gu et al. 2024, sec. 2, computed exactly over the vocabulary at each
    position).
    Mode-seeking: the student pays for mass where the teacher has little."""
    _check(student_logits, teacher_logits, response_mask)
    logp_s = tempered_logprobs(student_logits, temperature)
    logp_t = tempered_logprobs(teacher_logits, temperature)
    return _masked(full_vocab_kl(logp_s, logp_t) * temperature**2, response_mask)


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    response_mask: Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Generalized Jensen-Shannon divergence per token [B, T] (GKD: Agarwal et al. 2024, "On-Policy
    Distillation of Language Models", sec. 2), with P = teacher, Q = student:

        JSD(beta)(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M),  M = beta P + (1 - beta) Q,

    times tau^2. beta = 0.5 is the symmetric Jensen-Shannon divergence (bounded by log 2).

    Endpoints, which way round: as beta -> 0, M -> Q and JSD(beta) ~ beta KL(P || Q), the forward
    KL; as beta -> 1, M -> P and JSD(beta) ~ (1 - beta) KL(Q || P), the reverse KL. The formula
    itself is 0 at both endpoints, so (as TRL's GKDTrainer does) beta = 0 returns `forward_kl` and
    beta = 1 returns `reverse_kl`: the limits of JSD(beta) / beta and JSD(beta) / (1 - beta). Near
    the endpoints beta mostly scales the loss down (by about beta or 1 - beta).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, response_mask, temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, response_mask, temperature)
    _check(student_logits, teacher_logits, response_mask)
    logp_s = tempered_logprobs(student_logits, temperature)
    logp_t = tempered_logprobs(teacher_logits, temperature)
    # log M = log(beta p_t + (1 - beta) p_s), mixed in probability space (not in log space)
    log_m = torch.logsumexp(torch.stack([logp_t + math.log(beta), logp_s + math.log(1.0 - beta)]), dim=0)
    jsd = beta * full_vocab_kl(logp_t, log_m) + (1.0 - beta) * full_vocab_kl(logp_s, log_m)
    return _masked(jsd * temperature**2, response_mask)


def token_level_reverse_kl_from_samples(
    student_logprobs: Tensor, teacher_logprobs: Tensor, response_mask: Tensor | None = None
) -> Tensor:
    """log p_s(y_t) - log p_t(y_t) per sampled token [B, T]: the single-sample estimate of the
    per-token reverse KL KL(p_s || p_t) when y_t ~ p_s (its expectation under the student is the
    exact reverse KL). On-policy distillation uses its negative as a dense per-token reward
    (Lu et al. 2025, Thinking Machines, "On-Policy Distillation"; the sampled form of GKD's reverse
    KL, Agarwal et al. 2024). Inputs: logprobs of the sampled tokens [B, T] under each model."""
    if student_logprobs.shape != teacher_logprobs.shape:
        raise ValueError(
            f"student logprobs {tuple(student_logprobs.shape)} and teacher logprobs "
            f"{tuple(teacher_logprobs.shape)} differ in shape"
        )
    diff = student_logprobs.float() - teacher_logprobs.float()
    return diff if response_mask is None else _masked(diff, response_mask)


DivergenceFn = Callable[..., Tensor]
DIVERGENCES: dict[str, DivergenceFn] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
}


def token_divergence(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    response_mask: Tensor,
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
) -> Tensor:
    """The divergence named `name` (forward_kl | reverse_kl | jsd) per token [B, T]; the one place
    a loss name becomes a function, so loops never branch on it."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown distillation loss '{name}' (available: {', '.join(DIVERGENCES)})")
    if name == "jsd":
        return generalized_jsd(student_logits, teacher_logits, response_mask, jsd_beta, temperature)
    return DIVERGENCES[name](student_logits, teacher_logits, response_mask, temperature)
