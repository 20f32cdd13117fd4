"""The Generator seam: anything that turns prompt token ids into sampled completions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    # one seed per prompt: its completions come from its own RNG, so they do not depend on which
    # prompts share the call or the process (world-size invariance); None = the global torch RNG
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Generations:
    response_ids: list[list[int]]  # per sequence, through the first EOS (included) or max_new_tokens
    finished: list[bool]  # True where an EOS ended the sequence


class Generator(Protocol):
    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, samples_per_prompt: int = 1
    ) -> Generations:
        """Sample `samples_per_prompt` completions per prompt, prompt-major (all of prompt 0 first)."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from `model`'s current weights (no-op when it shares the module)."""
        ...
