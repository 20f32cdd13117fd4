"""Score completions with weighted reward functions, guarding against raises and non-finite values.

A failure (raise, None, NaN, inf, non-number) is counted per function and, by that function's
`on_error`, either scores 0 or stops the run. A non-finite value never reaches the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlft.rewards.registry import resolve_reward, reward_name

log = logging.getLogger(__name__)


class RewardError(RuntimeError):
    """A reward function failed and its on_error is 'error'."""


@dataclass(frozen=True)
class RewardTerm:
    name: str
    fn: Callable[..., Any]
    weight: float = 1.0
    on_error: str = "zero"
    kwargs: Mapping[str, Any] | None = None


def build_terms(specs: Sequence[Any], extra: Mapping[str, Callable] | None = None) -> list[RewardTerm]:
    """Reward terms from config specs; `extra` (name -> fn) replaces the config's list when given:
    each extra fn takes its weight/on_error from a config entry of the same name, else defaults."""
    if extra:
        by_name = {s.name or reward_name(s.fn): s for s in specs}
        terms = []
        for name, fn in extra.items():
            s = by_name.get(name)
            kwargs = dict(s.kwargs) if s else {}
            terms.append(RewardTerm(name, fn, s.weight if s else 1.0, s.on_error if s else "zero", kwargs))
        return terms
    return [
        RewardTerm(s.name or reward_name(s.fn), resolve_reward(s.fn), s.weight, s.on_error, dict(s.kwargs))
        for s in specs
    ]


def as_named(reward_fns: Any) -> dict[str, Callable] | None:
    """Accept None, a mapping name -> fn, or a list of functions (named by __name__)."""
    if reward_fns is None:
        return None
    if isinstance(reward_fns, Mapping):
        return dict(reward_fns)
    return {getattr(f, "__name__", f"reward_{i}"): f for i, f in enumerate(reward_fns)}


def _checked(value: Any) -> float | None:
    if isinstance(value, (str, bytes)):
        return None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def score_completions(
    terms: Sequence[RewardTerm],
    prompts: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of reward terms per completion -> scores [B], metrics."""
    total = torch.zeros(len(completions))
    metrics: dict[str, float] = {}
    for term in terms:
        values, failures, first_error = [], 0, None
        for prompt, completion, example in zip(prompts, completions, examples, strict=True):
            try:
                v = _checked(term.fn(prompt, completion, example, **(term.kwargs or {})))
                err = None if v is not None else "returned None or a non-finite / non-numeric value"
            except Exception as e:  # a user reward may raise anything
                v, err = None, f"raised {type(e).__name__}: {e}"
            if v is None:
                failures += 1
                first_error = first_error or err
                if term.on_error == "error":
                    raise RewardError(f"reward '{term.name}' {err} (set on_error: zero to score it 0)")
                v = 0.0
            values.append(v)
        t = torch.tensor(values, dtype=torch.float32)
        total += term.weight * t
        metrics[f"reward/{term.name}"] = float(t.mean()) if len(values) else 0.0
        metrics[f"reward/{term.name}_failures"] = float(failures)
        if failures:
            log.warning(
                "reward '%s' failed on %d of %d completions (first: %s); scored 0",
                term.name,
                failures,
                len(values),
                first_error,
            )
    metrics["reward/mean"] = float(total.mean()) if len(completions) else 0.0
    metrics["reward/std"] = float(total.std()) if len(completions) > 1 else 0.0
    return total, metrics
