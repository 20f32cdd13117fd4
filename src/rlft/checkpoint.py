"""Atomic, complete checkpoints: written to a temp dir, fsynced, marked complete, then renamed.

checkpoints/step-N/ holds the model (safetensors, from_pretrained-loadable), optimizer and
scheduler state, every RNG state and the trainer state (step, data cursor, counters). Nothing is
unpickled on load: tensors come from safetensors or torch.load(weights_only=True), the rest is JSON.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlft.fsutil import atomic_directory, fsync_tree

COMPLETE = "COMPLETE"
CRITIC = "critic.safetensors"
TRAINABLE = "trainable.safetensors"
STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


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
) -> Path:
    """Write checkpoints/step-N atomically (data fsynced before the COMPLETE marker, then the
    directory renamed into place); prune older complete ones beyond `keep`."""
    final = root / f"step-{step}"
    with atomic_directory(final, f".tmp-step-{step}-") as tmp:
        save_model_weights(model, tmp)
        if tokenizer is not None:  # so `rlft eval --model checkpoints/step-N` works
            tokenizer.save_pretrained(tmp)
        if critic is not None:
            save_file({k: v.detach().contiguous() for k, v in critic.state_dict().items()}, str(tmp / CRITIC))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        fsync_tree(tmp)
        (tmp / COMPLETE).write_text(str(step))
    prune_checkpoints(root, keep)
    return final


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.exists():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / COMPLETE).exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (never the newest), and stale temp dirs."""
    found = complete_checkpoints(root)
    for _, path in found[: max(len(found) - max(keep, 1), 0)]:
        shutil.rmtree(path, ignore_errors=True)
    for p in root.glob(".tmp-step-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_model_weights(model: Any, directory: Path) -> None:
    """Full HF-format weights; for a partly frozen model (LoRA), only its trainable tensors (the
    frozen rest is re-created from model.path on resume)."""
    named = dict(model.named_parameters())
    if all(p.requires_grad for p in named.values()):
        model.save_pretrained(directory, safe_serialization=True)
        return
    state = {k: p.detach().contiguous() for k, p in named.items() if p.requires_grad}
    save_file(state, str(directory / TRAINABLE))


def load_model_weights(model: Any, path: Path) -> None:
    if (path / TRAINABLE).exists():
        state = load_file(str(path / TRAINABLE))
        trainable = {k for k, p in model.named_parameters() if p.requires_grad}
        if set(state) != trainable:
            raise ValueError(f"{path}: trainable tensors do not match this model (LoRA settings changed?)")
        model.load_state_dict(state, strict=False)
        return
    load_full_weights(model, path)


def load_full_weights(model: Any, path: Path) -> None:
    """Load safetensors weights in place; tied parameters missing from the file must share storage."""
    files = sorted(f for f in path.glob("*.safetensors") if f.name not in (CRITIC, TRAINABLE))
    if not files:
        raise FileNotFoundError(f"{path}: no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{path}: weights do not match the model (unexpected keys {unexpected[:3]})")
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"{path}: weights do not match the model (missing keys {untied[:3]})")


def load_checkpoint(
    path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, critic: Any = None
) -> dict[str, Any]:
    """Restore model (and critic), optimizer, scheduler and RNG state; return the trainer state."""
    if not (path / COMPLETE).exists():
        raise ValueError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    load_model_weights(model, path)
    if critic is not None:
        if not (path / CRITIC).exists():
            raise ValueError(f"{path} has no value model ({CRITIC}) but this run uses one")
        critic.load_state_dict(load_file(str(path / CRITIC)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / "trainer_state.json").read_text())
