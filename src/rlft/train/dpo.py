"""Offline preference optimisation (`rlft dpo`): DPO or IPO on pairwise rows or K-way rankings
(every ordered pair of a ranking, each ranking weighing 1 / its pair count).

The reference is the initial policy: its sequence logprobs are computed once, before training
(and before a resume loads later weights), so no second model stays in memory. They come from
the very forward the policy's logprobs take in training (after fsdp2 has sharded the model, in
the same oneDNN context), so at step 1 the implicit rewards are exactly 0. With several processes
every rank computes them for all rankings (the same number of passes on every rank).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from rlft.accel.onednn import onednn_for
from rlft.algorithms.preference import dpo_loss, pair_tensors
from rlft.config.preference import DPOConfig, DPOLossConfig
from rlft.data.preferences import ranked_pairs
from rlft.dist.ranks import init_distributed, sum_over_ranks
from rlft.dist.sharding import is_sharded, prepare_model, reshard
from rlft.models.hub import publish_supervised
from rlft.models.load import add_lora, load_causal_lm, load_tokenizer, resolve_device, resolve_model_path
from rlft.models.logprobs import response_logprobs
from rlft.rollout.assemble import pack_prompt_response
from rlft.runtime.seeding import seed_everything
from rlft.train.preference_data import (
    EncodedRanking,
    encode_rankings,
    load_split,
    microbatches,
)
from rlft.train.supervised import check_processes, filler_chunks, run_supervised_loop

log = logging.getLogger(__name__)


def train_dpo(cfg: DPOConfig) -> dict[str, Any]:
    """Train as configured; returns the run summary (held-out reward accuracy under "heldout")."""
    path = resolve_model_path(cfg.model.path)
    seed_everything(cfg.seed)
    tok = load_tokenizer(path)
    model = load_causal_lm(
        path, cfg.model.dtype, resolve_device(cfg.model.device), cfg.model.trust_remote_code
    )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.model.lora_rank > 0:
        model = add_lora(model, cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets)
    train_rows, held_rows = load_split(cfg.data)
    mb = cfg.train.microbatch_size
    init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    check_processes(cfg, cfg.train.rankings_per_step, model)
    model = prepare_model(model, cfg.dist.strategy)  # before the reference: the training forward
    share = not is_sharded(model)  # fsdp2: the pass count may not depend on the rank's prompts
    with onednn_for(cfg, model):  # as the training forwards run
        train = with_reference(model, tok, encode_rankings(tok, train_rows, cfg.data), mb, cfg.dpo, share)
        held = with_reference(model, tok, encode_rankings(tok, held_rows, cfg.data), mb, cfg.dpo, share)
    log.info("dpo: %d training rankings, %d held-out", len(train), len(held))

    def backward(batch: list[EncodedRanking], n_rankings: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        chunks = microbatches(batch, mb)
        fillers = filler_chunks(model, chunks)  # fsdp2: as many passes as the other ranks
        for chunk in chunks:
            loss, metrics = chunk_loss(model, tok, chunk, cfg.dpo, share)
            (loss / n_rankings).backward()
            for k, v in {"loss/dpo": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v
        for chunk in fillers:
            (chunk_loss(model, tok, chunk, cfg.dpo, share)[0] * 0.0).backward()
        return {k: v / n_rankings for k, v in sum_over_ranks(sums).items()}  # items of all ranks

    @torch.no_grad()
    def evaluate(rankings: list[EncodedRanking]) -> dict[str, float]:
        model.eval()
        sums: dict[str, float] = {}
        for chunk in microbatches(rankings, mb):
            loss, metrics = chunk_loss(model, tok, chunk, cfg.dpo, share)
            for k, v in {"loss": float(loss), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v
        model.train()
        return {k.replace("/", "_"): v / len(rankings) for k, v in sums.items()}

    results = run_supervised_loop(
        cfg, model, tok, train, held, backward, evaluate, cfg.dpo.loss, cfg.train.rankings_per_step
    )
    publish_supervised(cfg, results)  # final/README.md, hub push
    return results


def sequence_logprobs(
    model: Any, tok: Any, chunk: Sequence[EncodedRanking], normalize: bool, share_prompt: bool = True
) -> torch.Tensor:
    """Logprob [N] of every response of the chunk given its prompt (summed over its tokens, or
    their mean when `normalize`), one ranking after another. With `share_prompt` the responses of
    a prompt share its forward pass (off under fsdp2: the number of passes would vary by rank)."""
    prompts = [ids[:n] for r in chunk for ids, n in zip(r.ids, r.prompt_lens, strict=True)]
    responses = [ids[n:] for r in chunk for ids, n in zip(r.ids, r.prompt_lens, strict=True)]
    input_ids, attention_mask, response_mask = pack_prompt_response(prompts, responses, tok.pad_token_id)
    device = next(model.parameters()).device
    logprobs, _ = response_logprobs(
        model,
        input_ids.to(device),
        attention_mask.to(device),
        response_mask.shape[1],
        share_prompt=share_prompt,
    )
    mask = response_mask.to(device)
    total = (logprobs * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if normalize else total


@torch.no_grad()
def with_reference(
    model: Any,
    tok: Any,
    rankings: list[EncodedRanking],
    microbatch: int,
    cfg: DPOLossConfig,
    share_prompt: bool = True,
) -> list[EncodedRanking]:
    """The rankings with each response's logprob under `model` as it is now (the reference)."""
    was_training = model.training
    model.eval()
    out = []
    for chunk in microbatches(rankings, microbatch):
        logps = sequence_logprobs(model, tok, chunk, cfg.length_normalize, share_prompt).tolist()
        for r in chunk:
            k = len(r.ids)
            out.append(dataclasses.replace(r, ref_logps=tuple(logps[:k])))
            logps = logps[k:]
    model.train(was_training)
    reshard(model)  # fsdp2: the first optimizer step must not leave a stale gathered root behind
    return out


def chunk_loss(
    model: Any, tok: Any, chunk: Sequence[EncodedRanking], cfg: DPOLossConfig, share_prompt: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over the chunk's rankings of the mean DPO/IPO loss over each ranking's pairs, and the
    same per-ranking means of the implicit-reward metrics (summed)."""
    levels = [r.ranked.levels for r in chunk]
    better, worse, weight = pair_tensors(levels, [ranked_pairs(lv) for lv in levels])
    logps = sequence_logprobs(model, tok, chunk, cfg.length_normalize, share_prompt)
    ref = torch.tensor([x for r in chunk for x in r.ref_logps], device=logps.device)
    loss, metrics = dpo_loss(
        logps[better], logps[worse], ref[better], ref[worse], cfg.beta, cfg.loss, cfg.label_smoothing
    )
    weight = weight.to(logps.device)
    return (weight * loss).sum(), {k: float((weight * v).sum()) for k, v in metrics.items()}
