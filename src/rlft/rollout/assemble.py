"""Assemble sampled completions into a padded `Rollouts` batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlft.batch import Rollouts
from rlft.data.prompts import PromptExample
from rlft.rollout.base import Generations
from rlft.rollout.hf import left_pad


def pack_prompt_response(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids [B, Lp+T] (prompts left-padded, responses right-padded to the longest), attention
    mask [B, Lp+T] and response_mask [B, T] (bool)."""
    prompts, prompt_mask = left_pad(prompt_ids, pad)
    width = max(1, max(len(r) for r in response_ids))
    resp = torch.full((len(response_ids), width), pad, dtype=torch.long)
    resp_mask = torch.zeros((len(response_ids), width), dtype=torch.bool)
    for i, r in enumerate(response_ids):
        if r:
            resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            resp_mask[i, : len(r)] = True
    input_ids = torch.cat([prompts, resp], dim=1)
    return input_ids, torch.cat([prompt_mask, resp_mask.long()], dim=1), resp_mask


def assemble(
    examples: Sequence[PromptExample],
    gens: Generations,
    group_ids: torch.Tensor,
    tok: Any,
    completions: Sequence[str] | None = None,
) -> Rollouts:
    """A Rollouts batch (layout of `pack_prompt_response`). `completions` are the decoded responses
    when the caller has them already."""
    input_ids, attention_mask, resp_mask = pack_prompt_response(
        [ex.ids for ex in examples], gens.response_ids, tok.pad_token_id
    )
    return Rollouts(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=resp_mask,
        group_ids=group_ids,
        prompts=[ex.text for ex in examples],
        completions=list(completions)
        if completions is not None
        else tok.batch_decode(gens.response_ids, skip_special_tokens=True),
        examples=[ex.row for ex in examples],
        truncated=torch.tensor([not f for f in gens.finished], dtype=torch.bool),
    )
