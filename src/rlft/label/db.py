"""SQLite store for the ranking app: prompts, their K responses, and per-annotator decisions.

WAL journal, synchronous=FULL, foreign keys on, parameterised queries only. Each decision (a
ranking or a skip) is one transaction; it is durable once `submit` returns. A (prompt, annotator)
pair is decided at most once: a second decision raises `AlreadyDecided` (the app answers 409).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESERVED_KEYS = ("id", "prompt", "responses", "ranking", "annotator", "created_at", "_source")

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS responses (
    prompt_id TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (prompt_id, idx)
);
CREATE TABLE IF NOT EXISTS rankings (
    prompt_id TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
    annotator TEXT NOT NULL,
    ranking TEXT,
    skipped INTEGER NOT NULL CHECK (skipped IN (0, 1)),
    created_at TEXT NOT NULL,
    PRIMARY KEY (prompt_id, annotator),
    CHECK ((skipped = 1) = (ranking IS NULL))
);
"""


class AlreadyDecided(Exception):
    """This annotator already ranked or skipped this prompt."""


class UnknownPrompt(KeyError):
    """No prompt with this id."""


@dataclass(frozen=True)
class Item:
    """One prompt with its responses (original order) and extra row fields (e.g. `answer`)."""

    id: str
    prompt: str
    responses: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class LabelStore:
    """Opens a short-lived connection per operation, so it is safe to share across threads."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            row = con.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                con.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise ValueError(f"{self.path}: schema version {row[0]}, this rlft expects {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def prompt_ids(self) -> set[str]:
        with self._connect() as con:
            return {r[0] for r in con.execute("SELECT id FROM prompts")}

    def add_items(self, items: Iterable[Item]) -> int:
        """Insert items whose id is new (one transaction); return how many were added."""
        added = 0
        with self._transaction() as con:
            pos = con.execute("SELECT COALESCE(MAX(position), -1) FROM prompts").fetchone()[0]
            for item in items:
                if con.execute("SELECT 1 FROM prompts WHERE id = ?", (item.id,)).fetchone():
                    continue
                pos += 1
                con.execute(
                    "INSERT INTO prompts (id, position, prompt, extra) VALUES (?, ?, ?, ?)",
                    (item.id, pos, item.prompt, json.dumps(item.extra, ensure_ascii=False)),
                )
                con.executemany(
                    "INSERT INTO responses (prompt_id, idx, text) VALUES (?, ?, ?)",
                    [(item.id, i, text) for i, text in enumerate(item.responses)],
                )
                added += 1
        return added

    def _item(self, con: sqlite3.Connection, prompt_id: str) -> Item | None:
        row = con.execute("SELECT prompt, extra FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        if row is None:
            return None
        texts = con.execute(
            "SELECT text FROM responses WHERE prompt_id = ? ORDER BY idx", (prompt_id,)
        ).fetchall()
        return Item(prompt_id, row[0], [t[0] for t in texts], json.loads(row[1]))

    def get_item(self, prompt_id: str) -> Item | None:
        with self._connect() as con:
            return self._item(con, prompt_id)

    def next_item(self, annotator: str) -> Item | None:
        """The first prompt (in insertion order) this annotator has neither ranked nor skipped."""
        with self._connect() as con:
            row = con.execute(
                "SELECT id FROM prompts p WHERE NOT EXISTS (SELECT 1 FROM rankings r "
                "WHERE r.prompt_id = p.id AND r.annotator = ?) ORDER BY position LIMIT 1",
                (annotator,),
            ).fetchone()
            return None if row is None else self._item(con, row[0])

    def progress(self, annotator: str) -> dict[str, int]:
        with self._connect() as con:
            total = con.execute("SELECT COUNT(*) FROM prompts").fetchone()[0]
            ranked, skipped = con.execute(
                "SELECT COALESCE(SUM(skipped = 0), 0), COALESCE(SUM(skipped = 1), 0) "
                "FROM rankings WHERE annotator = ?",
                (annotator,),
            ).fetchone()
        return {"ranked": ranked, "skipped": skipped, "total": total}

    def submit(self, prompt_id: str, annotator: str, ranking: Sequence[Any] | None) -> str:
        """Record a ranking (or a skip when `ranking` is None) in one committed transaction;
        return its created_at. Raises UnknownPrompt / AlreadyDecided."""
        created_at = utc_now()
        encoded = None if ranking is None else json.dumps(list(ranking))
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM prompts WHERE id = ?", (prompt_id,)).fetchone() is None:
                raise UnknownPrompt(prompt_id)
            try:
                con.execute(
                    "INSERT INTO rankings (prompt_id, annotator, ranking, skipped, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (prompt_id, annotator, encoded, int(ranking is None), created_at),
                )
            except sqlite3.IntegrityError as e:
                raise AlreadyDecided(f"{annotator!r} already ranked or skipped prompt {prompt_id!r}") from e
        return created_at

    def ranked_rows(self) -> Iterator[tuple[Item, str, list[Any], str]]:
        """(item, annotator, ranking, created_at) for every ranking (skips excluded), in prompt
        order, then time, then annotator."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT r.prompt_id, r.annotator, r.ranking, r.created_at FROM rankings r "
                "JOIN prompts p ON p.id = r.prompt_id WHERE r.skipped = 0 "
                "ORDER BY p.position, r.created_at, r.annotator"
            ).fetchall()
            items: dict[str, Item | None] = {}
            for pid, annotator, ranking, created_at in rows:
                if pid not in items:
                    items[pid] = self._item(con, pid)
                item = items[pid]
                assert item is not None  # the foreign key guarantees it
                yield item, annotator, json.loads(ranking), created_at


def export_rows(store: LabelStore) -> list[dict[str, Any]]:
    """One K-way ranking row per (prompt, annotator) ranking, in the format the reward-model
    reader takes (rlft.data.preferences): id, prompt, responses, ranking, annotator, created_at,
    then the prompt row's extra fields under their own keys."""
    out = []
    for item, annotator, ranking, created_at in store.ranked_rows():
        row = {
            "id": item.id,
            "prompt": item.prompt,
            "responses": item.responses,
            "ranking": ranking,
            "annotator": annotator,
            "created_at": created_at,
        }
        row.update({k: v for k, v in item.extra.items() if k not in row})
        out.append(row)
    return out


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL to a temp file beside `path`, fsync, then os.replace; return the count."""
    import os
    import tempfile

    from rlft.runtime.atomic_fs import fsync_dir

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
