"""A trained reward model, or an ensemble of them, as a batched RL reward.

Each member reads the dataset row's raw prompt (a string or chat messages, field `prompt_field`)
and the completion, rendered with the member's own chat template (`rlft.data.preferences.conversation_text`);
never the policy's chat-templated prompt text. An ensemble scores by the mean over its members;
how much they disagree is logged. transformers is imported only when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlft.models.reward_model import load_reward_model, score_texts


def load_member(path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) of one reward model, frozen, in eval mode, on this process's GPU when
    there is one (`model.device=auto`), else the CPU."""
    from rlft.models.load import load_tokenizer, resolve_device

    tok = load_tokenizer(path, padding_side="right")
    model = load_reward_model(path, tok, dtype, device=resolve_device("auto"))
    return model.eval().requires_grad_(False), tok


def ensemble_metrics(table: torch.Tensor, name: str) -> dict[str, float]:
    """Metrics of member scores table [M, B] (M >= 2), over the completions every member scored
    finitely: `reward/<name>_<i>` = member i's mean score, and `reward/<name>_disagreement` = the
    mean over completions of the population std across members. Empty when M < 2 or none is finite."""
    finite = torch.isfinite(table).all(dim=0)
    if table.shape[0] < 2 or not bool(finite.any()):
        return {}
    t = table[:, finite].double()
    metrics = {f"reward/{name}_{i}": float(row.mean()) for i, row in enumerate(t)}
    metrics[f"reward/{name}_disagreement"] = float(t.std(dim=0, unbiased=False).mean())
    return metrics


class ModelReward:
    """Batched reward: `(prompts, completions, examples) -> (scores [B], metrics)`, where scores are
    the mean over ensemble members. `prompts` (the policy's templated text) are not used: each
    member reads `example[prompt_field]`. A non-finite member score makes that completion's mean
    non-finite, which the scorer counts as a failure (by the term's on_error)."""

    rlft_batched = True  # the scorer calls it once per batch (rlft.rewards.scoring)

    def __init__(
        self,
        paths: Sequence[str],
        name: str = "rm",
        prompt_field: str = "prompt",
        system_prompt: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        dtype: str = "float32",
    ):
        if not paths:
            raise ValueError("ModelReward needs at least one reward model path")
        self.paths = list(paths)
        self.name = name
        self.prompt_field = prompt_field
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.max_length = max_length
        self.members = [load_member(p, dtype) for p in self.paths]

    def raw_prompt(self, example: Mapping[str, Any]) -> Any:
        if self.prompt_field not in example:
            raise KeyError(f"dataset row has no field '{self.prompt_field}' (data.prompt_field)")
        return example[self.prompt_field]

    def member_scores(
        self, completions: Sequence[str], examples: Sequence[Mapping[str, Any]]
    ) -> torch.Tensor:
        """Scores table [M, B]: member m's score of completion b."""
        raw = [self.raw_prompt(ex) for ex in examples]
        rows = [
            score_texts(model, tok, raw, completions, self.batch_size, self.max_length, self.system_prompt)
            for model, tok in self.members
        ]
        return torch.tensor(rows, dtype=torch.float64)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        examples: Sequence[Mapping[str, Any]],
    ) -> tuple[list[float], dict[str, float]]:
        if not completions:
            return [], {}
        table = self.member_scores(completions, examples)
        return table.mean(dim=0).tolist(), ensemble_metrics(table, self.name)
