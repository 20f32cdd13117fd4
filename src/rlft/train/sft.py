"""Supervised fine-tuning (`rlft sft`): the cold start before RL, and the trainer distillation
uses. Cross entropy on the assistant tokens only, averaged over all assistant tokens of the
optimizer step (so gradient accumulation over microbatches equals one big batch exactly).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rlft.algorithms.sft import next_token_cross_entropy_sum
from rlft.config.sft import SFTConfig, SFTDataConfig
from rlft.data.quarantine import REPORT_FILE, DataReport
from rlft.data.rows import DataError
from rlft.data.sft import SFTBatch, SFTExample, encode_conversations, load_conversations, sft_batches
from rlft.dist.ranks import global_sum
from rlft.models.hub import publish_supervised
from rlft.models.load import add_lora, load_causal_lm, load_tokenizer, resolve_device, resolve_model_path
from rlft.runtime.seeding import seed_everything
from rlft.train.supervised import filler_chunks, planned_steps, run_supervised_loop

log = logging.getLogger(__name__)


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Train as configured; returns the run summary (held-out loss / perplexity under "heldout",
    over-long and dropped example counts under "data")."""
    path = resolve_model_path(cfg.model.path)
    seed_everything(cfg.seed)
    tok = load_tokenizer(path, padding_side="right")
    model = load_causal_lm(
        path, cfg.model.dtype, resolve_device(cfg.model.device), cfg.model.trust_remote_code
    )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.model.lora_rank > 0:
        model = add_lora(model, cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets)
    train, held, counts = load_examples(tok, cfg.data, Path(cfg.output_dir))
    _log_arithmetic(cfg, train, held)
    layout = partial(
        sft_batches,
        pad_id=tok.pad_token_id,
        microbatch_size=cfg.train.microbatch_size,
        packing=cfg.data.packing,
        max_length=cfg.data.max_length,
    )

    def backward(batch: list[SFTExample], n_examples: int) -> dict[str, float]:
        batches = layout(batch)
        metrics = backward_token_mean(model, batches)
        slots = sum(b.input_ids.numel() for b in batches)
        metrics["sft/pad_fraction"] = 1.0 - sum(len(ex.ids) for ex in batch) / slots
        return metrics

    def evaluate(examples: Sequence[SFTExample]) -> dict[str, float]:
        return heldout_loss(model, layout(examples))

    results = run_supervised_loop(
        cfg,
        model,
        tok,
        train,
        held,
        backward,
        evaluate,
        "sft",
        cfg.train.examples_per_step,
        summary_extra={"data": counts},
    )
    publish_supervised(cfg, results)  # final/README.md, hub push
    return results


def load_examples(
    tok: Any, cfg: SFTDataConfig, out_dir: Path
) -> tuple[list[SFTExample], list[SFTExample], dict[str, int]]:
    """Encoded training and held-out examples, and the summed over-long / no-target counts. Bad
    rows are left out up to data.max_bad_fraction, all listed in out_dir/data_report.json."""
    report = DataReport(cfg.max_bad_fraction, out_dir / REPORT_FILE)
    train_convs, held_convs = load_conversations(cfg, report)
    train, counts = encode_conversations(tok, train_convs, cfg.max_length, cfg.overlong)
    held, held_counts = encode_conversations(tok, held_convs, cfg.max_length, cfg.overlong)
    if not train:
        raise DataError(f"{cfg.path}: no training example has an assistant token left to learn from")
    return train, held, {k: counts[k] + held_counts[k] for k in counts}


def _log_arithmetic(cfg: SFTConfig, train: list[SFTExample], held: list[SFTExample]) -> None:
    steps = planned_steps(cfg.train.steps, cfg.train.epochs, len(train), cfg.train.examples_per_step)
    targets = sum(ex.n_targets for ex in train)
    log.info(
        "sft: %d training examples (%d assistant tokens), %d held out; %d steps x %d examples "
        "(%.2f epochs), %d %s per forward",
        len(train),
        targets,
        len(held),
        steps,
        cfg.train.examples_per_step,
        steps * cfg.train.examples_per_step / len(train),
        cfg.train.microbatch_size,
        "packed rows" if cfg.data.packing else "examples",
    )


def token_ce_sum(model: Any, batch: SFTBatch) -> torch.Tensor:
    """Sum over the batch's assistant targets of -log p(token | the tokens before it): one forward
    of `model`, then `rlft.algorithms.sft.next_token_cross_entropy_sum`."""
    param = next(model.parameters())
    mask = batch.attention_mask.to(param.device)
    if mask.is_floating_point():
        mask = mask.to(param.dtype)
    out = model(
        input_ids=batch.input_ids.to(param.device),
        attention_mask=mask,
        position_ids=batch.position_ids.to(param.device),
        use_cache=False,
    )
    return next_token_cross_entropy_sum(
        out.logits, batch.input_ids.to(param.device), batch.loss_mask.to(param.device)
    )


def backward_token_mean(model: Any, batches: Sequence[SFTBatch]) -> dict[str, float]:
    """Accumulate grad of (sum of CE over the step's assistant tokens) / (their count), one
    forward per batch; the count is taken from all batches (of every rank) before any backward.
    Under fsdp2 a rank with fewer batches (packing) adds zero-weight passes (`filler_chunks`)."""
    n_targets = global_sum(sum(b.n_targets for b in batches))
    fillers = filler_chunks(model, batches)
    total = 0.0
    for b in batches:
        loss = token_ce_sum(model, b)
        (loss / n_targets).backward()
        total += loss.item()
    for b in fillers:
        (token_ce_sum(model, b) * 0.0).backward()
    return {
        "loss/sft": global_sum(total) / n_targets,
        "sft/assistant_tokens": n_targets,
        "sft/rows": global_sum(sum(len(b.input_ids) for b in batches)),
    }


@torch.no_grad()
def heldout_loss(model: Any, batches: Sequence[SFTBatch]) -> dict[str, float]:
    """Token-mean cross entropy over every held-out assistant token, its perplexity exp(loss),
    and the token count."""
    was_training = model.training
    model.eval()
    total = sum(float(token_ce_sum(model, b)) for b in batches)
    model.train(was_training)
    n = sum(b.n_targets for b in batches)
    return {"loss": total / n, "perplexity": math.exp(total / n), "tokens": float(n)}
