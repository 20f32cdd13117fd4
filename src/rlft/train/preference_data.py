"""What the preference trainers (`rlft rm`, `rlft dpo`) share besides the step loop
(`rlft.train.supervised.run_supervised_loop`, one item = one ranking): encoded rankings, the
train / held-out split and microbatches that never split a ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlft.data.preferences import Ranked, encode_conversation, read_preferences, split_by_prompt
from rlft.data.rows import DataError
from rlft.data.sources import source_name
from rlft.train.supervised import planned_steps

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


def load_split(data_cfg: Any, rows: Any = None) -> tuple[list[Ranked], list[Ranked]]:
    """Training and held-out rankings: a separate file, or a split of `path` (or of `rows`, a
    Dataset / list of dicts given in Python) by prompt hash. A hub id is read with data.config and
    data.split."""
    if rows is None and not data_cfg.path:
        raise DataError("data.path is empty: give a preference JSONL (pairwise or K-way rows)")
    source = data_cfg.path if rows is None else rows
    read = dict(prompt_field=data_cfg.prompt_field, split=data_cfg.split, config=data_cfg.config)
    train_rows = _with_pairs(read_preferences(source, **read), source_name(source))
    if data_cfg.heldout_path:
        held = read_preferences(data_cfg.heldout_path, **read)
        return train_rows, _with_pairs(held, data_cfg.heldout_path)
    train, held = split_by_prompt(train_rows, data_cfg.heldout_fraction)
    if not train:
        raise DataError(
            f"{source_name(source)}: every prompt fell into the held-out split; lower heldout_fraction"
        )
    return train, held


def _with_pairs(rows: list[Ranked], path: str) -> list[Ranked]:
    """The rankings that order at least two responses (all-tied ones teach nothing)."""
    kept = [r for r in rows if len(set(r.levels)) > 1]
    if not kept:
        raise DataError(f"{path}: every ranking ties all its responses; there is no preference to learn")
    if len(kept) < len(rows):
        log.warning("%s: %d rankings tie all their responses; skipped", path, len(rows) - len(kept))
    return kept


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
    """Optimizer steps of a preference run (train.steps, or epochs over the rankings)."""
    return planned_steps(train_cfg.steps, train_cfg.epochs, n_rankings, train_cfg.rankings_per_step)
