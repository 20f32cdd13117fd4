"""Hold out a seeded share of a user's dataset for evaluation; training never sees those rows.

A row's side is decided by a hash of its prompt and the seed alone (SHA-256, so the same on every
machine, process and Python version, and independent of the rows' order or of the other rows): a
prompt whose hash, read as a number in [0, 1), is below `fraction` is held out. Every row of a
prompt lands on the same side, so a prompt repeated in the data cannot leak from training into the
held-out set. When the hash leaves no prompt held out (a small dataset), the prompt with the
lowest hash is; when it leaves none for training, the one with the highest hash trains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from rlft.errors import DataError


def prompt_unit(prompt: Any, seed: int) -> float:
    """The prompt's place in [0, 1): the first 64 bits of SHA-256 over the seed and the prompt
    (strings, or chat messages written as canonical JSON)."""
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(f"{seed}\n{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_heldout(
    rows: Sequence[dict[str, Any]], fraction: float, seed: int, prompt_field: str = "prompt"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-out rows), each in the rows' own order. fraction 0 holds nothing out;
    otherwise at least one prompt is held out and at least one is left to train on."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"'eval.heldout_fraction' must be in [0, 1), got {fraction}")
    if fraction == 0.0 or not rows:
        return list(rows), []
    units = [prompt_unit(row.get(prompt_field), seed) for row in rows]
    held = {u for u in units if u < fraction}
    distinct = sorted(set(units))
    if len(distinct) < 2:
        raise DataError(
            f"eval.heldout_fraction={fraction}: the dataset has {len(distinct)} distinct prompt(s), "
            "too few to hold one out and train on the rest (set eval.path)"
        )
    if not held:
        held = {distinct[0]}
    elif len(held) == len(distinct):
        held.discard(distinct[-1])
    train = [row for row, u in zip(rows, units, strict=True) if u not in held]
    heldout = [row for row, u in zip(rows, units, strict=True) if u in held]
    return train, heldout
