"""Frozen containers passed between the RL step's phases. Shapes use the letters of docs/design.md:
P prompts, G samples per prompt, B = P*G sequences, Lp padded prompt length, T response length,
L = Lp + T. Imports nothing else from the package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Rollouts:
    """Sampled completions, right after generation."""

    input_ids: Tensor  # [B, L] long: left-padded prompt then right-padded response
    attention_mask: Tensor  # [B, L] long: 1 on real prompt and response tokens
    response_mask: Tensor  # [B, T] bool: True on response tokens that count (through EOS)
    group_ids: Tensor  # [B] long: index of the prompt each sequence answers
    prompts: Sequence[str]  # [B] prompt text (after the chat template)
    completions: Sequence[str]  # [B] decoded response text (special tokens removed)
    examples: Sequence[Mapping[str, Any]]  # [B] dataset row behind each sequence
    truncated: Tensor  # [B] bool: hit max_new_tokens without EOS

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: Any) -> Rollouts:
        """The same rollouts with every tensor on `device` (the model's)."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, Tensor)})


@dataclass(frozen=True)
class ScoredBatch:
    """Everything the update needs; tensors filled in phase by phase via `with_`."""

    rollouts: Rollouts
    scores: Tensor  # [B] float: summed, weighted reward per sequence
    advantages: Tensor | None = None  # [B, T] float
    old_logprobs: Tensor | None = None  # [B, T] float (None: one pass, policy is its own old)
    ref_logprobs: Tensor | None = None  # [B, T] float (None: no KL term)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def with_(self, **changes: Any) -> ScoredBatch:
        return replace(self, **changes)

    def select(self, idx: Tensor) -> ScoredBatch:
        """Rows idx of every [B, ...] tensor (for minibatches and microbatches)."""
        r = self.rollouts
        pick = idx.tolist()
        rollouts = Rollouts(
            input_ids=r.input_ids[idx],
            attention_mask=r.attention_mask[idx],
            response_mask=r.response_mask[idx],
            group_ids=r.group_ids[idx],
            prompts=[r.prompts[i] for i in pick],
            completions=[r.completions[i] for i in pick],
            examples=[r.examples[i] for i in pick],
            truncated=r.truncated[idx],
        )

        def sel(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[idx]

        return ScoredBatch(
            rollouts=rollouts,
            scores=self.scores[idx],
            advantages=sel(self.advantages),
            old_logprobs=sel(self.old_logprobs),
            ref_logprobs=sel(self.ref_logprobs),
            extras={k: v[idx] for k, v in self.extras.items()},
        )


def batch_indices(size: int, chunk: int) -> list[Tensor]:
    """Consecutive index chunks [0..chunk), [chunk..2chunk), ... covering range(size)."""
    return [torch.arange(i, min(i + chunk, size)) for i in range(0, size, chunk)]
