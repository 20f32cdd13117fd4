"""Steps 1-3 of the RL step: take prompts, sample G completions each, score them; with dynamic
sampling (DAPO), groups whose rewards are all equal are dropped and more prompts are sampled.
With several processes each takes its share of the step's prompts (all G samples of a prompt on
one rank); with per-prompt seeds a prompt's samples do not depend on the process count."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from rlft.algorithms.core import flat_groups
from rlft.batch import Rollouts
from rlft.dist.ranks import rank_slice, world_size
from rlft.rewards.scoring import score_completions
from rlft.rollout.assemble import assemble
from rlft.rollout.base import Generations, SamplingParams


def informative_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """bool [P]: groups (consecutive blocks of group_size) whose scores are not all equal."""
    return ~flat_groups(scores, torch.arange(len(scores), device=scores.device) // group_size)[0]


def prompt_seeds(run_seed: int, first_draw: int, n: int) -> tuple[int, ...]:
    """Sampling seeds of the next n prompts of the stream: a function of the run seed and each
    prompt's draw number only (the same on resume and for any process count)."""
    return tuple((run_seed * 1_000_003 + first_draw + i) % 2**62 for i in range(n))


def draws_so_far(stream: Any) -> int:
    """Prompts taken from the stream since its start (its position, counted across epochs)."""
    s = stream.state_dict()
    return int(s["epoch"]) * len(stream.examples) + int(s["index"])


def take_prompts(cfg: Any, stream: Any) -> tuple[list[Any], tuple[int, ...] | None]:
    """This rank's share of the next rollout.prompts_per_step prompts, and their sampling seeds
    (None: the global RNG)."""
    per_prompt = cfg.rollout.seed_per_prompt
    if per_prompt is None:
        per_prompt = world_size() > 1
    first = draws_so_far(stream)
    examples = stream.take(cfg.rollout.prompts_per_step)
    mine = rank_slice(len(examples), "rollout.prompts_per_step")
    seeds = prompt_seeds(cfg.seed, first, len(examples))[mine] if per_prompt else None
    return examples[mine], seeds


def collect_rollouts(
    cfg: Any, parts: Any, generator: Any, terms: Any, stream: Any, dynamic: bool
) -> tuple[Rollouts, torch.Tensor, dict[str, float]]:
    """P prompts x G samples, scored. Returns rollouts, scores [B] and reward/rollout metrics
    (reward metrics describe every sample drawn, before any dynamic-sampling filter), plus
    perf/reward_s: the seconds spent scoring."""
    r = cfg.rollout
    g = r.samples_per_prompt
    sampling = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k)
    kept_examples, kept_ids, kept_finished, kept_texts, kept_scores = [], [], [], [], []
    first_metrics: dict[str, float] = {}
    rounds = cfg.algo.max_sampling_rounds if dynamic else 1
    drawn, reward_s = 0, 0.0
    for round_ in range(rounds):
        examples, seeds = take_prompts(cfg, stream)
        drawn += len(examples)
        params = replace(sampling, seeds=seeds)
        gens = generator.generate([ex.ids for ex in examples], params, g)
        repeated = [ex for ex in examples for _ in range(g)]
        completions = parts.tok.batch_decode(gens.response_ids, skip_special_tokens=True)
        start = time.perf_counter()
        texts, rows = [ex.text for ex in repeated], [ex.row for ex in repeated]
        scores, metrics = score_completions(terms, texts, completions, rows, gens.response_ids)
        reward_s += time.perf_counter() - start
        if round_ == 0:
            first_metrics = metrics
        keep = informative_groups(scores, g) if dynamic else torch.ones(len(examples), dtype=torch.bool)
        for p in keep.nonzero().squeeze(-1).tolist():
            rows = range(p * g, (p + 1) * g)
            kept_examples.extend(repeated[i] for i in rows)
            kept_ids.extend(gens.response_ids[i] for i in rows)
            kept_finished.extend(gens.finished[i] for i in rows)
            kept_texts.extend(completions[i] for i in rows)
            kept_scores.append(scores[p * g : (p + 1) * g])
        if len(kept_scores) >= r.prompts_per_step:
            break
    if not kept_scores:  # every group was flat in every round: train on the last round as is
        kept_examples, kept_ids, kept_finished = repeated, gens.response_ids, gens.finished
        kept_texts = completions
        kept_scores = [scores]
    n = min(len(kept_examples), len(examples) * g)
    group_ids = torch.arange(n) // g
    gens = Generations(kept_ids[:n], kept_finished[:n])
    rollouts = assemble(kept_examples[:n], gens, group_ids, parts.tok, kept_texts[:n])
    if dynamic:
        first_metrics["rollout/sampling_rounds"] = float(round_ + 1)
        first_metrics["rollout/prompts_drawn"] = float(drawn)
    first_metrics["perf/reward_s"] = reward_s
    return rollouts, torch.cat(kept_scores)[:n], first_metrics
