"""Built-in task: arithmetic questions ("What is 58 + 16?", or worded a dozen ways: `phrasing`)
with integer answers.

The train / held-out split is a pure function of the problem (a hash of its unordered operand pair
and operation), so a held-out problem is never trained on, whatever the seed, and `a + b` and
`b + a` always land on the same side.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from rlft.data import phrasings

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def is_heldout(a: int, op: str, b: int, fraction: float) -> bool:
    key = f"{min(a, b)}{op}{max(a, b)}" if op in "+*" else f"{a}{op}{b}"
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def all_problems(op: str, cfg: Any) -> list[tuple[int, int]]:
    hi = cfg.mul_max if op == "*" else cfg.add_max
    pairs = [(a, b) for a in range(cfg.min_operand, hi + 1) for b in range(cfg.min_operand, hi + 1)]
    if op == "-":
        pairs = [(a, b) for a, b in pairs if a >= b]  # non-negative results
    return pairs


def make_row(a: int, op: str, b: int, template: str | None = None) -> dict[str, Any]:
    """The row of problem `a op b`, worded by `template` ({a}, {b}; default "What is a op b?")."""
    if op not in OPS:
        raise ValueError(f"unknown arithmetic op '{op}' (use {', '.join(OPS)})")
    prompt = (template or phrasings.FIXED[op]).format(a=a, b=b)
    return {"prompt": prompt, "answer": str(OPS[op](a, b))}


def split_pool(cfg: Any, heldout: bool) -> dict[str, list[tuple[int, int]]]:
    return {
        op: [
            (a, b) for a, b in all_problems(op, cfg) if is_heldout(a, op, b, cfg.heldout_fraction) == heldout
        ]
        for op in cfg.ops
    }


def train_rows(cfg: Any, seed: int) -> Iterator[dict[str, Any]]:
    """Endless stream of training problems, ops in turn, each drawn uniformly from its train pool
    (cfg.draw = "train_pool"), or as in workload W (cfg.draw = "randint", see `randint_rows`)."""
    if cfg.draw == "randint":
        yield from randint_rows(cfg, seed)
        return
    pools = split_pool(cfg, heldout=False)
    seen = {op: phrasings.templates(op, False, cfg.unseen_phrasings) for op in cfg.ops}
    rng = random.Random(seed)
    while True:
        for op in cfg.ops:
            a, b = rng.choice(pools[op])
            yield make_row(a, op, b, rng.choice(seen[op]) if cfg.phrasing == "varied" else None)


def randint_rows(cfg: Any, seed: int) -> Iterator[dict[str, Any]]:
    """Workload W's prompt stream (configs/bench_w.yaml; the TRL benchmark's recipe, described in
    docs/performance.md): random.Random(seed), ops in turn, operand A then
    B each drawn with rng.randint(min_operand, add_max or mul_max); no held-out split."""
    rng = random.Random(seed)
    while True:
        for op in cfg.ops:
            hi = cfg.mul_max if op == "*" else cfg.add_max
            a = rng.randint(cfg.min_operand, hi)
            b = rng.randint(cfg.min_operand, hi)
            yield make_row(a, op, b)


def heldout_rows(cfg: Any) -> list[dict[str, Any]]:
    """`heldout_size` distinct held-out problems, ops in turn (an exhausted op is skipped). With
    varied phrasing, rows alternate between a training template and an unseen one, and say which
    in their `phrasing` field ("seen" / "unseen")."""
    rng = random.Random(cfg.seed)
    pools = {op: rng.sample(p, len(p)) for op, p in split_pool(cfg, heldout=True).items()}
    rows: list[dict[str, Any]] = []
    while len(rows) < cfg.heldout_size and any(pools.values()):
        for op in cfg.ops:
            if pools[op] and len(rows) < cfg.heldout_size:
                a, b = pools[op].pop()
                rows.append(_heldout_row(a, op, b, len(rows), cfg, rng))
    return rows


def _heldout_row(a: int, op: str, b: int, index: int, cfg: Any, rng: random.Random) -> dict[str, Any]:
    if cfg.phrasing != "varied":
        return make_row(a, op, b)
    unseen = index % 2 == 1
    template = rng.choice(phrasings.templates(op, unseen, cfg.unseen_phrasings))
    return {**make_row(a, op, b, template), "phrasing": "unseen" if unseen else "seen"}
