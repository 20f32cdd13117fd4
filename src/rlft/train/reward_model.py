"""Reward-model training (`rlft rm`): a scalar head on a causal LM learns human rankings with the
Bradley-Terry loss over all pairs of each ranking (or the listwise Plackett-Luce likelihood), and
ad-hoc scoring of (prompt, response) rows (`rlft rm score`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import torch

from rlft.algorithms.preference import (
    bradley_terry_nll,
    centering_penalty,
    pair_accuracy,
    pair_calibration_error,
    pair_tensors,
    plackett_luce_nll,
)
from rlft.config.preference import RewardLossConfig, RMConfig
from rlft.data.preferences import ranked_pairs
from rlft.dist.ranks import sum_over_ranks
from rlft.dist.sharding import as_forward
from rlft.models.load import load_tokenizer, resolve_device, resolve_model_path
from rlft.models.reward_model import load_reward_model, right_pad, score_texts, sequence_scores
from rlft.runtime.seeding import seed_everything
from rlft.train.preference_data import (
    EncodedRanking,
    encode_rankings,
    load_split,
    microbatches,
)
from rlft.train.supervised import filler_chunks, run_supervised_loop

log = logging.getLogger(__name__)


def train_reward_model(cfg: RMConfig) -> dict[str, Any]:
    """Train as configured; returns the run summary (held-out pair accuracy under "heldout")."""
    path = resolve_model_path(cfg.model.path)
    seed_everything(cfg.seed)
    tok = load_tokenizer(path, padding_side="right")
    model = load_reward_model(
        path, tok, cfg.model.dtype, cfg.model.trust_remote_code, resolve_device(cfg.model.device)
    )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    train_rows, held_rows = load_split(cfg.data)
    train = encode_rankings(tok, train_rows, cfg.data)
    held = encode_rankings(tok, held_rows, cfg.data)
    log.info("reward model: %d training rankings, %d held-out", len(train), len(held))

    def backward(batch: list[EncodedRanking], n_rankings: int) -> dict[str, float]:
        totals = {"loss": 0.0, "correct": 0.0, "pairs": 0.0, "reward_sum": 0.0, "responses": 0.0}
        chunks = microbatches(batch, cfg.train.microbatch_size)
        fillers = filler_chunks(model, chunks)  # fsdp2: as many passes as the other ranks
        for chunk in chunks:
            scores = chunk_scores(model, tok, chunk)
            loss = ranking_loss(scores, chunk, cfg.reward)
            (loss / n_rankings).backward()
            totals["loss"] += loss.item()
            _add_pair_counts(totals, scores.detach(), chunk)
        for chunk in fillers:
            (ranking_loss(chunk_scores(model, tok, chunk), chunk, cfg.reward) * 0.0).backward()
        totals = sum_over_ranks(totals)  # the step's items on every rank
        return {
            "loss/reward_model": totals["loss"] / n_rankings,
            "train/pair_accuracy": totals["correct"] / max(totals["pairs"], 1.0),
            "reward/mean": totals["reward_sum"] / max(totals["responses"], 1.0),
        }

    def evaluate(rankings: list[EncodedRanking]) -> dict[str, float]:
        return heldout_metrics(model, tok, rankings, cfg.train.microbatch_size)

    return run_supervised_loop(
        cfg, model, tok, train, held, backward, evaluate, "rm", cfg.train.rankings_per_step
    )


def chunk_scores(model: Any, tok: Any, chunk: Sequence[EncodedRanking]) -> torch.Tensor:
    """Scores [N] of every response of the chunk's rankings, one ranking after another (a forward
    pass of `model` also under fsdp2: rlft.dist.sharding.as_forward)."""
    x, mask = right_pad([list(ids) for r in chunk for ids in r.ids], tok.pad_token_id)
    device = next(model.parameters()).device
    scores = as_forward(model, sequence_scores, "rlft_sequence_scores")
    return scores(x.to(device), mask.to(device))


def ranking_loss(
    scores: torch.Tensor, chunk: Sequence[EncodedRanking], cfg: RewardLossConfig
) -> torch.Tensor:
    """Sum over the chunk's rankings of each ranking's loss (BT: weighted mean over its pairs)."""
    levels = [r.ranked.levels for r in chunk]
    if cfg.loss == "plackett_luce":
        loss, offset = scores.new_zeros(()), 0
        for lv in levels:
            loss = loss + plackett_luce_nll(scores[offset : offset + len(lv)], lv)
            offset += len(lv)
    else:
        pairs = [ranked_pairs(lv) for lv in levels]
        better, worse, weight = pair_tensors(levels, pairs)
        margins = None
        if cfg.use_margin:
            margins = torch.tensor(
                [r.ranked.margin for r, p in zip(chunk, pairs, strict=True) for _ in p], device=scores.device
            )
        loss = (weight.to(scores.device) * bradley_terry_nll(scores, better, worse, margins)).sum()
    if cfg.centering_coef > 0:
        group_ids = torch.tensor([i for i, lv in enumerate(levels) for _ in lv], device=scores.device)
        loss = loss + cfg.centering_coef * centering_penalty(scores, group_ids) * len(chunk)
    return loss


def _add_pair_counts(totals: dict[str, float], scores: torch.Tensor, chunk: Sequence[EncodedRanking]) -> None:
    levels = [r.ranked.levels for r in chunk]
    better, worse, _ = pair_tensors(levels, [ranked_pairs(lv) for lv in levels])
    diff = scores[better] - scores[worse]
    totals["correct"] += float(pair_accuracy(diff).sum())
    totals["pairs"] += len(diff)
    totals["reward_sum"] += float(scores.sum())
    totals["responses"] += len(scores)


@torch.no_grad()
def heldout_metrics(
    model: Any, tok: Any, rankings: list[EncodedRanking], microbatch: int
) -> dict[str, float]:
    """Pair accuracy (every pair counts once; equal scores count half), BT loss, calibration
    error of sigmoid(score gap), and the reward's mean / std over held-out responses."""
    was_training = model.training
    model.eval()
    diffs, all_scores = [], []
    for chunk in microbatches(rankings, microbatch):
        scores = chunk_scores(model, tok, chunk)
        levels = [r.ranked.levels for r in chunk]
        better, worse, _ = pair_tensors(levels, [ranked_pairs(lv) for lv in levels])
        diffs.append(scores[better] - scores[worse])
        all_scores.append(scores)
    model.train(was_training)
    diff, scores = torch.cat(diffs).cpu(), torch.cat(all_scores).cpu()
    return {
        "pair_accuracy": float(pair_accuracy(diff).mean()),
        "bt_loss": float(torch.nn.functional.softplus(-diff).mean()),
        "calibration_error": pair_calibration_error(torch.sigmoid(diff)),
        "reward_mean": float(scores.mean()),
        "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
        "pairs": float(len(diff)),
    }


def score_file(
    model_path: str,
    data_path: str,
    out_path: str | None,
    prompt_field: str = "prompt",
    response_field: str = "response",
    batch_size: int = 16,
    max_length: int = 1024,
) -> list[float]:
    """Score rows with `prompt` and `response` (or `responses`: a list) under a saved reward model;
    writes each row with `score` (or `scores`) added when out_path is given."""
    from rlft.data.rows import read_rows, require_fields

    rows = read_rows(data_path)
    require_fields(rows, [prompt_field])
    prompts, responses, owners = [], [], []
    for i, row in enumerate(rows):
        many = row.get("responses")
        items = many if isinstance(many, list) else [row.get(response_field)]
        for resp in items:
            if not isinstance(resp, str):
                raise ValueError(f"{row.get('_source', '?')}: field '{response_field}' must be a string")
            prompts.append(row[prompt_field])
            responses.append(resp)
            owners.append(i)
    path = resolve_model_path(model_path)
    tok = load_tokenizer(path, padding_side="right")
    model = load_reward_model(path, tok)
    scores = score_texts(model, tok, prompts, responses, batch_size, max_length)
    if out_path:
        per_row: list[list[float]] = [[] for _ in rows]
        for owner, s in zip(owners, scores, strict=True):
            per_row[owner].append(s)
        with open(out_path, "w", encoding="utf-8") as f:
            for row, s in zip(rows, per_row, strict=True):
                clean = {k: v for k, v in row.items() if k != "_source"}
                clean.update({"scores": s} if isinstance(row.get("responses"), list) else {"score": s[0]})
                f.write(json.dumps(clean) + "\n")
    return scores
