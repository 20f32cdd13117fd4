"""Helpers shared by the preference-loop tests: JSONL writing, a mixed K-way data set, metrics."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mixed_rows() -> list[dict]:
    """Pairwise rows (one with a margin) and K-way rankings, one with a tie group."""
    return [
        {"prompt": "Name a colour.", "chosen": "red", "rejected": "table", "margin": 0.5},
        {"prompt": "2 + 2?", "chosen": "4", "rejected": "five"},
        {"prompt": "Greet me.", "responses": ["hi", "go away", "hello!"], "ranking": [2, 0, 1]},
        {"prompt": "Pick a number.", "responses": ["7", "x", "3", "?"], "ranking": [[0, 2], 3, 1]},
        {"prompt": "Say yes.", "chosen": "yes", "rejected": "no"},
        {"prompt": "Spell cat.", "responses": ["cat", "kat", "dog"], "ranking": [0, 1, 2]},
    ]
