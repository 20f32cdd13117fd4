"""Sampling from an fsdp2-sharded policy: the whole parameters gathered for each generate call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlft.dist.sharding import full_parameters
from rlft.rollout.base import Generations, SamplingParams


class FullParamsGenerator:
    """A Generator over a sharded policy: gathers the whole parameters for each generate call
    (colocated generation, the memory of one full copy while it samples)."""

    def __init__(self, inner: Any, model: Any):
        self.inner, self.model = inner, model

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, samples_per_prompt: int = 1
    ) -> Generations:
        with full_parameters(self.model):
            return self.inner.generate(prompt_ids, params, samples_per_prompt)

    def sync_weights(self, model: Any) -> None:
        self.inner.sync_weights(model)
