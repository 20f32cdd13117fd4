"""Helpers the integration tests share: a run's logged metrics and a saved model's tensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def read_metrics(out: Path) -> list[dict]:
    """Every line of out/metrics.jsonl, in order."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def saved_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of the *.safetensors files in `directory` (sharded or not)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(directory.glob("*.safetensors")):
        state.update(load_file(f))
    return state
