"""Model forward passes that return per-token logprobs of the response part of a batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlft.ops import entropy_from_logits, gather_logprobs, position_ids_from_mask


def response_logprobs(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_len: int, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Logprobs [B, T] of the last T tokens of input_ids [B, L] given everything before them.

    Only the T positions that predict response tokens go through the LM head (logits_to_keep),
    so [B, L, V] is never built. Positions are counted over real tokens (left padding safe).
    """
    t = response_len
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=t + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :]  # position j predicts token j + 1
    targets = input_ids[:, -t:]
    logprobs = gather_logprobs(logits, targets)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return logprobs, entropy


@torch.no_grad()
def response_logprobs_nograd(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_len: int, microbatch_size: int
) -> Tensor:
    """`response_logprobs` under no_grad in eval mode, microbatched; [B, T]."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            response_logprobs(
                model,
                input_ids[i : i + microbatch_size],
                attention_mask[i : i + microbatch_size],
                response_len,
            )[0]
            for i in range(0, input_ids.shape[0], microbatch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)
