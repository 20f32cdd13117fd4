"""The step loop shared by the supervised trainers (`rlft sft`, `rlft rm`, `rlft dpo`): steps of
`items_per_step` items from a seeded, resumable stream, clipping, AdamW with its LR schedule,
atomic checkpoints, resume, held-out evaluation, graceful stop and the final HF-format save.

A trainer supplies two functions: `backward(batch, n_items) -> metrics` (accumulates the loss of
a step's items into .grad, normalised as the trainer defines: per ranking, per token, ...) and
`evaluate(heldout) -> metrics`. An item is whatever the trainer streams (a ranking, an example).
"""

from __future__ import annotations

import json
import logging
import math
import resource
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from rlft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlft.config import to_yaml
from rlft.data.prompts import PromptStream
from rlft.fsutil import atomic_directory
from rlft.metrics import RunLogger
from rlft.models import is_peft
from rlft.optim import make_optimizer
from rlft.signals import GracefulStop

log = logging.getLogger(__name__)
Item = TypeVar("Item")


def planned_steps(steps: int, epochs: float, n_items: int, items_per_step: int) -> int:
    """`steps` when set, else enough steps for `epochs` passes over n_items (at least 1)."""
    if steps > 0:
        return steps
    return max(1, math.ceil(epochs * n_items / items_per_step))


def run_supervised_loop(
    cfg: Any,
    model: Any,
    tok: Any,
    train: Sequence[Item],
    heldout: Sequence[Item],
    backward: Callable[[list[Item], int], dict[str, float]],
    evaluate: Callable[[Sequence[Item]], dict[str, float]],
    desc: str,
    items_per_step: int,
    summary_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, checkpoint, evaluate, save `output_dir/final`; returns the run summary (also written
    to summary.json, with `summary_extra` added). Reads cfg.output_dir, seed, resume, log.* and
    train.{steps, epochs, save_every, keep_checkpoints, eval_every, optim}."""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(to_yaml(cfg))
    steps = planned_steps(cfg.train.steps, cfg.train.epochs, len(train), items_per_step)
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
                batch = stream.take(items_per_step)
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
        **(summary_extra or {}),
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
