"""Checkpoints of runs on one or several processes, in one format: rlft.runtime.checkpoint's
single-process layout (HF safetensors weights, optimizer.pt, scheduler, RNG, trainer state).

- One process: exactly rlft.runtime.checkpoint.save_checkpoint / load_checkpoint.
- ddp: every rank holds the same model and optimizer state, so rank 0 writes them as one
  process would; on resume every rank reads the same files.
- fsdp2: every rank takes part in gathering the whole weights and optimizer state; rank 0
  writes them; on resume each rank loads its shard of them.

Atomic across ranks: rank 0 writes to a temp dir, marks it complete and renames it; the other
ranks wait for its outcome (and fail with its error). As the format does not depend on the
world size or the strategy, a run may resume on a different number of processes.
Checkpoints live in output_dir, which every rank must see (a shared filesystem across nodes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from rlft.runtime import checkpoint
from rlft.runtime.checkpoint import CheckpointError
from rlft.dist.ranks import broadcast_object, is_main, world_size
from rlft.dist.sharding import (
    full_optimizer_state,
    full_state_dict,
    is_sharded,
    load_full_optimizer_state,
    load_full_state_dict,
)


class _GatheredModel:
    """A sharded model as rlft.runtime.checkpoint sees it: save_pretrained writes the gathered weights."""

    def __init__(self, model: Any, state: Mapping[str, torch.Tensor]):
        self._model, self._state = model, state

    def save_pretrained(self, directory: Any, **kwargs: Any) -> None:
        self._model.save_pretrained(directory, state_dict=dict(self._state), **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
    critic: Any = None,
    tokenizer: Any = None,
    run_info: Mapping[str, Any] | None = None,
) -> Path:
    """rlft.runtime.checkpoint.save_checkpoint, on every rank of the run (see the module docstring)."""
    if world_size() > 1 and is_sharded(model):  # collectives: every rank, before rank 0 writes
        model = _GatheredModel(model, full_state_dict(model))
        gathered = full_optimizer_state(optimizer)
        optimizer = SimpleNamespace(state_dict=lambda: gathered)
    args = (root, step, model, optimizer, scheduler, trainer_state, keep, critic, tokenizer, run_info)
    if world_size() == 1:
        return checkpoint.save_checkpoint(*args)
    error = None
    if is_main():
        try:
            checkpoint.save_checkpoint(*args)
        except Exception as e:  # every rank fails with rank 0's error, none waits forever
            error = f"{type(e).__name__}: {e}"
    error = broadcast_object(error)
    if error is not None:
        raise CheckpointError(f"rank 0 could not write checkpoint step-{step}: {error}")
    return root / f"step-{step}"


def load_checkpoint(
    path: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    critic: Any = None,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """rlft.runtime.checkpoint.load_checkpoint, on every rank of the run; all ranks must pick the same
    checkpoint."""
    if world_size() > 1 and broadcast_object(str(path)) != str(path):
        raise CheckpointError(
            f"this rank would resume from {path}, rank 0 from another checkpoint: output_dir must be "
            "on a filesystem every node shares"
        )
    if not is_sharded(model):
        return checkpoint.load_checkpoint(path, model, optimizer, scheduler, critic, run_info)
    checkpoint.check_checkpoint(path, model, critic, run_info)
    load_full_state_dict(model, checkpoint.read_full_weights(path))
    load_full_optimizer_state(
        optimizer, torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    )
    return checkpoint.load_loop_state(path, scheduler)
