"""Atomic, complete checkpoints: written to a temp dir, fsynced, marked complete, then renamed.

checkpoints/step-N/ holds the model (safetensors, from_pretrained-loadable), optimizer and
scheduler state, every RNG state and the trainer state (step, data cursor, counters). Nothing is
unpickled on load: tensors come from safetensors or torch.load(weights_only=True), the rest is JSON.
signature.json records what a resume must match (parameter names and shapes, vocab size, value
model, the loop's `run_info` such as the algorithm); a mismatch is an error naming each difference.
A failed write (disk full, ...) removes the partial temp dir and raises CheckpointError; the
previous complete checkpoint is untouched.

Test hook: RLFT_FAULT_SAVE_SLEEP_S=<seconds> sleeps after every file a save writes, widening the
window in which a chaos test (bench/chaos.py) can kill a run mid-save.

Over 300 lines on purpose: writing, finding, loading and checking a checkpoint are one on-disk
format, and its file names and guarantees stay readable in one place.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlft.errors import RunError
from rlft.runtime.atomic_fs import (
    atomic_directory,
    discard,
    fsync_tree,
    original_name,
    readable_dir,
    recover_all,
)

COMPLETE = "COMPLETE"
CRITIC = "critic.safetensors"
TRAINABLE = "trainable.safetensors"
SIGNATURE = "signature.json"
STEP_DIR = re.compile(r"^step-(\d+)$")
FAULT_SLEEP_ENV = "RLFT_FAULT_SAVE_SLEEP_S"
log = logging.getLogger(__name__)


class CheckpointError(RunError):
    """A checkpoint could not be written, or does not fit the run that tries to resume from it."""


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    """Write checkpoints/step-N atomically (data fsynced before the COMPLETE marker, then the
    directory renamed into place); prune older complete ones beyond `keep`, and newer ones (left
    by an earlier run in this directory: this run would never resume from them)."""
    final = root / f"step-{step}"
    try:
        with atomic_directory(final, f".tmp-step-{step}-") as tmp:
            _write_files(tmp, model, optimizer, scheduler, trainer_state, critic, tokenizer)
            (tmp / SIGNATURE).write_text(json.dumps(run_signature(model, critic, run_info), indent=1))
            fsync_tree(tmp)
            _fault_pause()
            (tmp / COMPLETE).write_text(str(step))
    except (OSError, RuntimeError) as e:  # a full disk reaches torch.save as a RuntimeError
        prev = latest_checkpoint(root)
        kept = (
            f"the newest complete checkpoint, {prev}, is intact" if prev else "no earlier checkpoint exists"
        )
        free_mib = shutil.disk_usage(root).free / 2**20
        raise CheckpointError(
            f"could not write checkpoint step-{step} in {root} ({free_mib:.0f} MiB free there): {e}. "
            f"Nothing partial was kept and {kept}; free space (or fix the error) and continue with "
            "--resume"
        ) from e
    prune_checkpoints(root, keep, current=step)
    return final


def _write_files(
    tmp: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], critic: Any, tokenizer: Any
) -> None:
    save_model_weights(model, tmp)
    _fault_pause()
    if tokenizer is not None:  # so `rlft eval --model checkpoints/step-N` works
        tokenizer.save_pretrained(tmp)
    if critic is not None:
        save_file({k: v.detach().contiguous() for k, v in critic.state_dict().items()}, str(tmp / CRITIC))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    _fault_pause()
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    _fault_pause()
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))


def _fault_pause() -> None:
    """Test hook: sleep RLFT_FAULT_SAVE_SLEEP_S seconds (unset = no pause)."""
    seconds = float(os.environ.get(FAULT_SLEEP_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of each complete checkpoint, oldest first; a step whose replace was killed
    between its renames is found at its aside copy (`fsutil.readable_dir`)."""
    if not root.exists():
        return []
    names = (STEP_DIR.match(original_name(p.name)) for p in root.iterdir())
    found = [(int(m.group(1)), readable_dir(root / m.group(0))) for m in names if m]
    return sorted({(s, p) for s, p in found if (p / COMPLETE).exists()})


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: Path, keep: int, current: int | None = None) -> None:
    """Finish interrupted replaces; delete stale temp dirs, complete checkpoints newer than
    `current` (the step just saved), and all but the newest `keep` of the rest (never the newest)."""
    recover_all(root)
    found = complete_checkpoints(root)
    if current is not None:
        for s, path in found:
            if s > current:
                log.warning(
                    "removing %s: it is newer than this run's step %d (an earlier run's)", path, current
                )
                discard(path)
        found = [(s, p) for s, p in found if s <= current]
    for _, path in found[: max(len(found) - max(keep, 1), 0)]:
        discard(path)
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


def read_full_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint or HF dir: every .safetensors file but the critic's and
    the trainable-only (LoRA) one."""
    files = sorted(f for f in path.glob("*.safetensors") if f.name not in (CRITIC, TRAINABLE))
    if not files:
        raise FileNotFoundError(f"{path}: no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_full_weights(model: Any, path: Path) -> None:
    """Load safetensors weights in place; tied parameters missing from the file must share storage."""
    state = read_full_weights(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{path}: weights do not match the model (unexpected keys {unexpected[:3]})")
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"{path}: weights do not match the model (missing keys {untied[:3]})")


def load_checkpoint(
    path: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    critic: Any = None,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore model (and critic), optimizer, scheduler and RNG state; return the trainer state.
    Checks first (changing nothing) that the checkpoint fits this model, critic and run_info."""
    check_checkpoint(path, model, critic, run_info)
    load_model_weights(model, path)
    if critic is not None:
        if not (path / CRITIC).exists():
            raise ValueError(f"{path} has no value model ({CRITIC}) but this run uses one")
        critic.load_state_dict(load_file(str(path / CRITIC)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    return load_loop_state(path, scheduler)


def check_checkpoint(
    path: Path, model: Any, critic: Any = None, run_info: Mapping[str, Any] | None = None
) -> None:
    """Fail, changing nothing, unless `path` is complete and fits this model, critic and run."""
    if not (path / COMPLETE).exists():
        raise ValueError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    check_signature(path, run_signature(model, critic, run_info))


def load_loop_state(path: Path, scheduler: Any) -> dict[str, Any]:
    """Restore the scheduler and every RNG; return the trainer state."""
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True, map_location="cpu"))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True, map_location="cpu"))
    return json.loads((path / "trainer_state.json").read_text())


def run_signature(
    model: Any, critic: Any = None, run_info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What a resume must match: trainable parameter shapes, vocab size, the value model's
    parameter shapes (None without one) and the loop's run_info."""
    return {
        "parameters": {k: list(p.shape) for k, p in model.named_parameters() if p.requires_grad},
        "vocab_size": getattr(getattr(model, "config", None), "vocab_size", None),
        "critic": None if critic is None else {k: list(p.shape) for k, p in critic.named_parameters()},
        "run": dict(run_info or {}),
    }


def check_signature(path: Path, current: Mapping[str, Any]) -> None:
    """Raise CheckpointError naming every difference between the saved and current signature
    (checkpoints written before signatures existed are not checked)."""
    if not (path / SIGNATURE).exists():
        return
    saved = json.loads((path / SIGNATURE).read_text())
    diffs = [
        f"{k}: {saved['run'].get(k)!r} in the checkpoint, {v!r} now"
        for k, v in current["run"].items()
        if saved["run"].get(k, v) != v
    ]
    if saved["vocab_size"] != current["vocab_size"]:
        diffs.append(f"vocab size: {saved['vocab_size']} in the checkpoint, {current['vocab_size']} now")
    if saved["critic"] is not None and current["critic"] is None:
        diffs.append("the checkpoint has a value model, this run uses none")
    elif saved["critic"] is None and current["critic"] is not None:
        diffs.append("the checkpoint has no value model, this run uses one")
    else:
        diffs += _shape_diffs("value model", saved["critic"] or {}, current["critic"] or {})
    diffs += _shape_diffs("model", saved["parameters"], current["parameters"])
    if diffs:
        raise CheckpointError(
            f"{path} does not fit this run: " + "; ".join(diffs) + ". It was written with another "
            "config: resume with that config, or start a fresh run in a new output_dir"
        )


def _shape_diffs(what: str, saved: Mapping[str, list[int]], now: Mapping[str, list[int]]) -> list[str]:
    """At most three differences of each kind (missing, new, reshaped) between parameter maps."""
    diffs = []
    if missing := [k for k in saved if k not in now]:
        diffs.append(f"{what} parameters only in the checkpoint: {', '.join(missing[:3])}")
    if new := [k for k in now if k not in saved]:
        diffs.append(f"{what} parameters not in the checkpoint: {', '.join(new[:3])}")
    reshaped = [f"{k} {saved[k]} -> {now[k]}" for k in saved if k in now and saved[k] != now[k]]
    if reshaped:
        diffs.append(f"{what} shapes differ: {', '.join(reshaped[:3])}")
    return diffs
