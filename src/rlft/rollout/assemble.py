"""Sample G completions per prompt and assemble them into a padded `Rollouts` batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlft.batch import Rollouts
from rlft.data.prompts import PromptExample
from rlft.rollout.base import Generations, Generator, SamplingParams
from rlft.rollout.hf import left_pad


def sample_rollouts(
    generator: Generator,
    examples: Sequence[PromptExample],
    samples_per_prompt: int,
    params: SamplingParams,
    tok: Any,
) -> Rollouts:
    """Generate for each prompt repeated G times (all G samples of a prompt stay together)."""
    repeated = [ex for ex in examples for _ in range(samples_per_prompt)]
    gens = generator.generate([ex.ids for ex in examples], params, samples_per_prompt)
    group_ids = torch.arange(len(examples)).repeat_interleave(samples_per_prompt)
    return assemble(repeated, gens, group_ids, tok)


def assemble(
    examples: Sequence[PromptExample], gens: Generations, group_ids: torch.Tensor, tok: Any
) -> Rollouts:
    """input_ids [B, Lp+T]: left-padded prompts, then responses right-padded to the longest one."""
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
        completions=tok.batch_decode(gens.response_ids, skip_special_tokens=True),
        examples=[ex.row for ex in examples],
        truncated=torch.tensor([not f for f in gens.finished], dtype=torch.bool),
    )
