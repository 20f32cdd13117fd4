"""The step loop shared by the supervised trainers (`rlft sft`, `rlft rm`, `rlft dpo`): steps of
`items_per_step` items from a seeded, resumable stream, clipping, AdamW with its LR schedule,
atomic checkpoints, resume, held-out evaluation, graceful stop and the final HF-format save.

A trainer supplies two functions: `backward(batch, n_items) -> metrics` (accumulates the loss of
a step's items into .grad, normalised as the trainer defines: per ranking, per token, ...) and
`evaluate(heldout) -> metrics`. An item is whatever the trainer streams (a ranking, an example).

Under torchrun each rank gets an equal share of every step's items and `n_items` counts the items
of all ranks; a trainer that normalises by tokens sums its count over ranks
(rlft.dist.ranks.global_sum). Gradients are summed over ranks, metrics averaged. With
dist.strategy=fsdp2 (rlft.dist.sharding) the model is sharded and every forward/backward pass gathers
parameters, all ranks together: a trainer runs as many passes on every rank (`filler_chunks`
pads the shorter ranks with zero-weight passes; held-out sets are the same on every rank), and
samples with the whole parameters gathered (rlft.dist.sharding.FullParamsGenerator). Checkpoints and
the final model are gathered by every rank and written by rank 0.
"""

from __future__ import annotations

import logging
import math
import resource
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rlft.accel.onednn import onednn_for
from rlft.config.common import check_step_sizes
from rlft.config.loader import ConfigError, to_yaml
from rlft.data.prompts import PromptStream
from rlft.dist.checkpoint import load_checkpoint, save_checkpoint
from rlft.dist.ranks import (
    init_distributed,
    is_main,
    rank_log_dir,
    rank_slice,
    reduce_metrics,
    sum_gradients,
    world_size,
)
from rlft.dist.sharding import clip_grad_norm, extra_passes, prepare_model
from rlft.models.load import is_peft
from rlft.models.save import save_final
from rlft.runtime.guard import NonFiniteGuard
from rlft.runtime.optim import make_optimizer
from rlft.runtime.shell import resume_step, run_steps, write_summary
from rlft.telemetry.metrics import RunLogger

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Chunk = TypeVar("Chunk")


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
    other_models: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train, checkpoint, evaluate, save `output_dir/final`; returns the run summary (also written
    to summary.json, with `summary_extra` added). Reads cfg.output_dir, seed, resume, log.*,
    train.{steps, epochs, save_every, keep_checkpoints, eval_every, optim} and model.onednn
    (student.onednn): `backward` and `evaluate` run with the linears of `model` and
    `other_models` (a frozen teacher) on oneDNN."""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    check_processes(cfg, items_per_step, model)
    model = prepare_model(model, cfg.dist.strategy)
    if is_main():
        (out_dir / "config.yaml").write_text(to_yaml(cfg))
    check_step_sizes(cfg.train)
    steps = planned_steps(cfg.train.steps, cfg.train.epochs, len(train), items_per_step)
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps)  # skips non-finite steps (reliability)
    optimizer, scheduler = make_optimizer(model.parameters(), cfg.train.optim, steps)
    stream = PromptStream(train, cfg.seed)
    ckpt_root = out_dir / "checkpoints"

    def load(ckpt: Path) -> int:
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        stream.load_state_dict(state["stream"])
        guard.load_state_dict(state.get("guard", guard.state_dict()))
        return int(state["step"])

    def one_step(step: int) -> dict[str, float]:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        batch = stream.take(items_per_step)  # every rank: the same items; then its share
        with onednn_for(cfg, model, *other_models):
            metrics = backward(batch[rank_slice(len(batch), "items per step")], len(batch))
        sum_gradients([p for p in model.parameters() if p.requires_grad])
        metrics = reduce_metrics(metrics)
        clip = cfg.train.optim.max_grad_norm
        grad_norm = clip_grad_norm(list(model.parameters()), clip)
        if clip > 0:
            metrics["optim/grad_norm"] = grad_norm
        loss = sum(v for k, v in metrics.items() if k.startswith("loss"))
        if guard.check(loss, grad_norm):  # else: skipped, counted; aborts after K in a row
            optimizer.step()
        metrics["optim/skipped_steps"] = float(guard.skipped)
        metrics["optim/lr"] = scheduler.get_last_lr()[0]
        scheduler.step()
        every = cfg.train.eval_every
        if heldout and ((every and step % every == 0) or step == steps):
            with onednn_for(cfg, model, *other_models):
                metrics.update({f"eval/{k}": v for k, v in evaluate(heldout).items()})
        return metrics

    def save(step: int) -> None:
        state = {"step": step, "stream": stream.state_dict(), "guard": guard.state_dict()}
        save_checkpoint(ckpt_root, step, model, optimizer, scheduler, state, cfg.train.keep_checkpoints)

    start = resume_step(cfg.resume, ckpt_root, load)
    log_dir, log_cfg = rank_log_dir(out_dir, cfg.log)  # rank 0: out_dir; others: ranks/rank-N
    logger = RunLogger.for_config(log_dir, log_cfg, steps, start, desc)
    done = run_steps(start, steps, cfg.train.save_every, logger, one_step, save)
    if done.stopped:
        return {"metrics": done.metrics, "steps": done.step, "stopped": True}
    merge_lora = cfg.save.merge_lora if hasattr(cfg, "save") else True  # LoRA: merged or the adapter
    final, model = save_final(model, tok, out_dir, merge_lora)  # every rank
    results = {
        "metrics": done.metrics,
        "steps": done.step,
        "final_dir": str(final),
        "heldout": {k[5:]: v for k, v in done.metrics.items() if k.startswith("eval/")},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **(summary_extra or {}),
    }
    write_summary(out_dir, results)
    return results


def check_processes(cfg: Any, items_per_step: int, model: Any = None) -> None:
    """ConfigError for what several processes cannot run here (yet): items per step that do not
    split evenly, LoRA (`model`, a PEFT model) under fsdp2."""
    n = world_size()
    if n == 1:
        return
    if items_per_step % n:
        raise ConfigError(f"the items per step ({items_per_step}) must be a multiple of the {n} processes")
    if cfg.dist.strategy == "fsdp2" and is_peft(model):
        key = "student.lora_rank" if hasattr(cfg, "student") else "model.lora_rank"
        raise ConfigError(
            f"{key} > 0 with dist.strategy=fsdp2 is not supported on several processes ({n} here) yet: "
            f"use dist.strategy=ddp, or {key}=0"
        )


def filler_chunks(model: Any, chunks: Sequence[Chunk]) -> list[Chunk]:
    """Copies of chunks[0] for this rank to run with weight 0 after its `chunks` (one forward and
    backward pass each), so that every rank runs as many passes as the busiest one: fsdp2 gathers
    parameters in each pass, all ranks together (rlft.rl.update.extra_passes); [] otherwise.
    Collective under fsdp2: every rank calls it before its first pass of the step."""
    return list(chunks[:1]) * extra_passes(model, len(chunks), chunks)
