"""Model forward passes that return per-token logprobs of the response part of a batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlft.ops import entropy_from_logits, gather_logprobs, position_ids_from_mask


def response_logits(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_len: int, share_prompt: bool = False
) -> Tensor:
    """Logits [B, T, V] at the positions that predict the last T tokens of input_ids [B, L].

    Only those T positions go through the LM head (logits_to_keep as positions), so [B, L, V] is
    never built.
    Positions are counted over real tokens (left padding safe). With `share_prompt`, rows with
    identical prompt tokens run their prompt once and share its KV cache: the same maths, with
    gradients flowing into the shared pass.
    """
    # HF drops the KV cache under gradient checkpointing in train mode, so no sharing there
    flag = (
        "is_activation_checkpointing"
        if hasattr(model, "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    if share_prompt and not (model.training and getattr(model, flag, False)):
        prompts = input_ids[:, : input_ids.shape[1] - response_len]
        distinct, inverse = torch.unique(prompts, dim=0, return_inverse=True)
        if len(distinct) < len(prompts):
            return _shared_prompt_logits(model, input_ids, attention_mask, response_len, inverse)
    length = input_ids.shape[1]  # position j predicts token j + 1: keep L-T-1 .. L-2
    keep = torch.arange(length - response_len - 1, length - 1, device=input_ids.device)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=keep,
        use_cache=False,
    )
    return out.logits  # [B, T, V], contiguous (a slice would make reshapes copy it)


def response_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
    with_entropy: bool = False,
    share_prompt: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Logprobs [B, T] of the last T tokens of input_ids [B, L] given everything before them
    (and their entropy [B, T] under no_grad when asked); see `response_logits`."""
    logits = response_logits(model, input_ids, attention_mask, response_len, share_prompt)
    logprobs = gather_logprobs(logits, input_ids[:, -response_len:])
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return logprobs, entropy


def _shared_prompt_logits(
    model: Any, input_ids: Tensor, attention_mask: Tensor, t: int, inverse: Tensor
) -> Tensor:
    """Logits [B, T, V] predicting the response tokens, running each distinct prompt once;
    inverse [B] maps each row to its distinct prompt."""
    from transformers import DynamicCache

    b, lp = input_ids.shape[0], input_ids.shape[1] - t
    rows = torch.arange(b, device=input_ids.device)
    first = torch.full((int(inverse.max()) + 1,), b, device=input_ids.device)
    first = first.scatter_reduce(0, inverse, rows, "amin")  # one row per distinct prompt
    prompt_mask = attention_mask[first, :lp]
    out = model(
        input_ids=input_ids[first, :lp],
        attention_mask=prompt_mask,
        position_ids=position_ids_from_mask(prompt_mask),
        past_key_values=DynamicCache(config=model.config),
        use_cache=True,
        logits_to_keep=1,
    )
    first_logits = out.logits[inverse]  # [B, 1, V]: the last prompt position predicts token 0
    if t == 1:
        return first_logits
    cache = out.past_key_values
    cache.batch_select_indices(inverse)  # repeat each prompt's keys/values for its rows
    start = prompt_mask.sum(-1)[inverse][:, None]
    positions = start + torch.arange(t - 1, device=input_ids.device)[None, :]
    rest = model(
        input_ids=input_ids[:, lp : lp + t - 1],
        attention_mask=attention_mask[:, : lp + t - 1],
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )
    return torch.cat([first_logits, rest.logits], dim=1)


@torch.no_grad()
def rollout_logprobs(model: Any, rollouts: Any, microbatch_size: int, share_prompt: bool = True) -> Tensor:
    """Logprobs [B, T] of a `Rollouts` batch under no_grad in eval mode, microbatched (reference
    and old-policy passes)."""
    was_training = model.training
    model.eval()
    t = rollouts.response_mask.shape[1]
    parts = []
    try:
        for i in range(0, rollouts.size, microbatch_size):
            rows = slice(i, i + microbatch_size)
            ids, mask = rollouts.input_ids[rows], rollouts.attention_mask[rows]
            parts.append(response_logprobs(model, ids, mask, t, share_prompt=share_prompt)[0])
    finally:
        model.train(was_training)
    return torch.cat(parts)
