"""Assemble sampled completions into a padded `Rollouts` batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlft.batch import Rollouts
from rlft.data.prompts import PromptExample
from rlft.rollout.base import Generations
from rlft.rollout.hf import left_pad


def assemble(
    examples: Sequence[PromptExample],
    gens: Generations,
    group_ids: torch.Tensor,
    tok: Any,
    completions: Sequence[str] | None = None,
) -> Rollouts:
    """input_ids [B, Lp+T]: left-padded prompts, then responses right-padded to the longest one.
    `completions` are the decoded responses when the caller has them already."""
    pad = tok.pad_token_id
    prompt_ids, prompt_mask = left_pad([ex.ids for ex in examples], pad)
    width = max(1, max(len(r) for r in gens.response_ids))
    resp = torch.full((len(examples), width), pad, dtype=torch.long)
    resp_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, r in enumerate(gens.response_ids):
        if r:
            resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            resp_mask[i, : len(r)] = True
    return Rollouts(
        input_ids=torch.cat([prompt_ids, resp], dim=1),
        attention_mask=torch.cat([prompt_mask, resp_mask.long()], dim=1),
        response_mask=resp_mask,
        group_ids=group_ids,
        prompts=[ex.text for ex in examples],
        completions=list(completions)
        if completions is not None
        else tok.batch_decode(gens.response_ids, skip_special_tokens=True),
        examples=[ex.row for ex in examples],
        truncated=torch.tensor([not f for f in gens.finished], dtype=torch.bool),
    )
