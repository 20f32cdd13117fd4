"""The loop shared by the preference trainers (`rlft rm`, `rlft dpo`): encode rankings, then
steps of `rankings_per_step` rankings with microbatches that never split a ranking, checkpoints,
resume, held-out evaluation, graceful stop and the final HF-format save.

A trainer supplies two functions: `backward(batch, n_rankings) -> metrics` (accumulates the loss of
a step's rankings into .grad, normalised by the step's ranking count) and
`evaluate(rankings) -> metrics`.
"""

from __future__ import annotations

import json
import logging
import math
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlft.config import to_yaml
from rlft.data.preferences import Ranked, encode_conversation, read_preferences, split_by_prompt
from rlft.data.prompts import PromptStream
from rlft.data.rows import DataError
from rlft.fsutil import atomic_directory
from rlft.metrics import RunLogger
from rlft.models import is_peft
from rlft.optim import make_optimizer
from rlft.signals import GracefulStop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedRanking:
    ranked: Ranked
    ids: tuple[tuple[int, ...], ...]  # per response: the whole conversation's token ids
    prompt_lens: tuple[int, ...]  # per response: how many of those ids are prompt
    ref_logps: tuple[float, ...] | None = None  # DPO: per response, its logprob under the reference


def encode_rankings(tok: Any, rows: Sequence[Ranked], data_cfg: Any) -> list[EncodedRanking]:
    out = []
    for r in rows:
        enc = [
            encode_conversation(tok, r.prompt, resp, data_cfg.max_length, data_cfg.system_prompt)
            for resp in r.responses
        ]
        out.append(EncodedRanking(r, tuple(tuple(ids) for ids, _ in enc), tuple(n for _, n in enc)))
    return out


def load_split(data_cfg: Any) -> tuple[list[Ranked], list[Ranked]]:
    """Training and held-out rankings: a separate file, or a split of `path` by prompt hash."""
    if not data_cfg.path:
        raise DataError("data.path is empty: give a preference JSONL (pairwise or K-way rows)")
    rows = read_preferences(data_cfg.path, data_cfg.prompt_field)
    if data_cfg.heldout_path:
        return rows, read_preferences(data_cfg.heldout_path, data_cfg.prompt_field)
    train, held = split_by_prompt(rows, data_cfg.heldout_fraction)
    if not train:
        raise DataError(f"{data_cfg.path}: every prompt fell into the held-out split; lower heldout_fraction")
    return train, held


def microbatches(batch: Sequence[EncodedRanking], max_sequences: int) -> list[list[EncodedRanking]]:
    """Greedy packing of whole rankings into chunks of at most max_sequences responses (a ranking
    larger than that is a chunk of its own)."""
    chunks: list[list[EncodedRanking]] = []
    size = 0
    for r in batch:
        k = len(r.ids)
        if chunks and size + k <= max_sequences:
            chunks[-1].append(r)
            size += k
        else:
            chunks.append([r])
            size = k
    return chunks


def total_steps(train_cfg: Any, n_rankings: int) -> int:
    if train_cfg.steps > 0:
        return train_cfg.steps
    return max(1, math.ceil(train_cfg.epochs * n_rankings / train_cfg.rankings_per_step))


def run_preference_loop(
    cfg: Any,
    model: Any,
    tok: Any,
    train: list[EncodedRanking],
    heldout: list[EncodedRanking],
    backward: Callable[[list[EncodedRanking], int], dict[str, float]],
    evaluate: Callable[[list[EncodedRanking]], dict[str, float]],
    desc: str,
) -> dict[str, Any]:
    """Train, checkpoint, evaluate, save `output_dir/final`; returns the run summary."""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(to_yaml(cfg))
    steps = total_steps(cfg.train, len(train))
    optimizer, scheduler = make_optimizer(model.parameters(), cfg.train.optim, steps)
    stream = PromptStream(train, cfg.seed)
    ckpt_root, step = out_dir / "checkpoints", 0
    if cfg.resume and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        step = int(state["step"])
        stream.load_state_dict(state["stream"])
        log.info("resumed from %s (step %d)", ckpt, step)
    logger = RunLogger(out_dir, steps, step, cfg.log.tensorboard, cfg.log.progress, desc=desc)
    metrics: dict[str, float] = {}
    with GracefulStop() as stop:
        try:
            while step < steps:
                model.train()
                optimizer.zero_grad(set_to_none=True)
                batch = stream.take(cfg.train.rankings_per_step)
                metrics = backward(batch, len(batch))
                clip = cfg.train.optim.max_grad_norm
                if clip > 0:
                    metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                optimizer.step()
                metrics["lr"] = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                every = cfg.train.eval_every
                if heldout and ((every and step % every == 0) or step == steps):
                    metrics.update({f"eval/{k}": v for k, v in evaluate(heldout).items()})
                logger.log_metrics(step, metrics)
                every = cfg.train.save_every
                if (every and step % every == 0) or step == steps or stop.requested:
                    state = {"step": step, "stream": stream.state_dict()}
                    save_checkpoint(
                        ckpt_root, step, model, optimizer, scheduler, state, cfg.train.keep_checkpoints
                    )
                if stop.requested and step < steps:
                    log.warning("stopped after step %d; resume with --resume", step)
                    return {"metrics": metrics, "steps": step, "stopped": True}
        finally:
            logger.close()
    final = save_final_model(model, tok, out_dir)
    results = {
        "metrics": metrics,
        "steps": step,
        "final_dir": str(final),
        "heldout": {k[5:]: v for k, v in metrics.items() if k.startswith("eval/")},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (out_dir / "summary.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def save_final_model(model: Any, tok: Any, out_dir: Path) -> Path:
    """HF-format model (LoRA merged) + tokenizer in out_dir/final, written atomically."""
    if is_peft(model):
        model = model.merge_and_unload()
    with atomic_directory(out_dir / "final", ".tmp-final-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out_dir / "final"
