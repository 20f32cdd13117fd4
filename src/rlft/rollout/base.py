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


@dataclass(frozen=True)
class Generations:
    response_ids: list[list[int]]  # per sequence, through the first EOS (included) or max_new_tokens
    finished: list[bool]  # True where an EOS ended the sequence


class Generator(Protocol):
    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> Generations:
        """Sample one completion per prompt (repeat prompts for several samples)."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from `model`'s current weights (no-op when it shares the module)."""
        ...


def make_generator(backend: str, model: Any, tok: Any, batch_size: int) -> Generator:
    if backend == "hf":
        from rlft.rollout.hf import HFGenerator

        return HFGenerator(model, tok, batch_size)
    raise ValueError(f"unknown rollout backend 'rollout.backend={backend}' (available: hf)")
