"""Held-out evaluation scored by reward functions instead of answer matching.

The completions of an evaluation are scored by the same `RewardTerm`s and the same entry as
training (`rlft.rewards.scoring.score_completions`), so per-sample, TRL-shaped, `async def`,
pooled and batched rewards (reward models) all work. A completion is correct when its weighted
total reward is at least the pass threshold (with one 0/1 verifier of weight 1 and threshold 1,
exactly answer accuracy); pass@k comes from those flags. maj@k needs an answer to vote on, so
it is given for answer matching only (None here).

`--reward` on the command line: a reward name (built-in, `pkg.mod:fn`, `pkg.mod.fn`,
`file.py:fn`) or a JSON object of a config `rewards` entry (`{"fn": ..., "weight": ...,
"kwargs": {...}}`), which is how a run hands its rewards to a fresh `rlft eval` process.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from rlft.config.loader import ConfigError, build
from rlft.config.rl import RewardSpec
from rlft.rewards.scoring import RewardTerm, build_terms, score_completions

TOLERANCE = 1e-6  # a weighted total within float rounding of the threshold passes


@dataclasses.dataclass(frozen=True)
class RewardScores:
    """Scores of B completions: the weighted totals, each term's value per completion (0 where it
    failed or does not apply), whether each passed, and the terms' means (`reward/<name>`, over
    the completions a term applies to) and failure counts (`reward/<name>_failures`)."""

    totals: list[float]  # [B]
    values: dict[str, list[float]]  # term name -> [B]
    correct: list[bool]  # [B]
    metrics: dict[str, float]


def reward_scores(
    terms: Sequence[RewardTerm],
    prompts: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    completion_ids: Sequence[Sequence[int]] | None = None,
    pass_threshold: float = 1.0,
) -> RewardScores:
    """Score with training's entry, one term at a time (weight 1, so each term's own values are
    kept), and sum the weighted values in the terms' order as training does."""
    if not terms:
        raise ValueError("reward scoring needs at least one reward function")
    total = torch.zeros(len(completions))
    values: dict[str, list[float]] = {}
    metrics: dict[str, float] = {}
    for term in terms:
        own, term_metrics = score_completions(
            [dataclasses.replace(term, weight=1.0)], prompts, completions, examples, completion_ids
        )
        total += term.weight * own
        values[term.name] = own.tolist()
        metrics.update({k: v for k, v in term_metrics.items() if k not in ("reward/mean", "reward/std")})
    totals = total.tolist()
    correct = [t >= pass_threshold - TOLERANCE for t in totals]
    return RewardScores(totals, values, correct, metrics)


def rewarded_row(scores: RewardScores, start: int, samples: int) -> dict[str, Any]:
    """One prompt's share of the scores (its `samples` completions from `start`): the total per
    completion, each term's values, the correct flags."""
    part = slice(start, start + samples)
    return {
        "reward": scores.totals[part],
        "rewards": {name: vals[part] for name, vals in scores.values.items()},
        "correct": scores.correct[part],
    }


def reward_summary(
    scores: RewardScores, terms: Sequence[RewardTerm], pass_threshold: float
) -> dict[str, Any]:
    """Summary keys of reward scoring: `reward` (mean weighted total), `reward/<name>` and
    `reward/<name>_failures` per term, the threshold, and which rewards scored (`scoring`)."""
    n = len(scores.totals)
    return {
        "scoring": "rewards: " + ", ".join(f"{t.name} x{t.weight:g}" for t in terms),
        "pass_threshold": pass_threshold,
        "reward": sum(scores.totals) / n if n else 0.0,
        **scores.metrics,
    }


def reward_specs(items: Sequence[str], weights: Sequence[float] = ()) -> list[RewardSpec]:
    """`--reward` arguments as config entries: a name, or a JSON object of a `rewards` entry.
    `weights` (`--reward-weight`), when given, holds one weight per `--reward` in order."""
    if weights and len(weights) != len(items):
        raise ConfigError(f"--reward-weight given {len(weights)} times for {len(items)} --reward")
    specs = []
    for i, item in enumerate(items):
        if item.lstrip().startswith("{"):
            try:
                data = json.loads(item)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--reward {item!r}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"--reward {item!r}: expected a JSON object")
            spec = build(RewardSpec, data, prefix="rewards.")
        else:
            spec = RewardSpec(fn=item)
        specs.append(dataclasses.replace(spec, weight=float(weights[i])) if weights else spec)
    return specs


def terms_from_args(
    items: Sequence[str],
    weights: Sequence[float] = (),
    prompt_field: str = "prompt",
    system_prompt: str | None = None,
) -> list[RewardTerm]:
    """The reward terms `rlft eval --reward ...` scores with ([] without --reward: answer
    matching); names are resolved by rlft.rewards.registry, reward models loaded here."""
    if not items:
        if weights:
            raise ConfigError("--reward-weight needs --reward")
        return []
    data = SimpleNamespace(prompt_field=prompt_field, system_prompt=system_prompt)
    return build_terms(reward_specs(items, weights), None, data)
