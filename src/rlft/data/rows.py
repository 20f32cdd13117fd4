"""Read dataset rows from JSONL, Parquet or a saved `datasets` directory, with errors that name the
file, line and field."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A dataset problem; the message names file, line and field."""


def read_rows(path: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows as dicts, each tagged with ``_source`` = "file:line" (1-based) for error messages."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset not found: {path}")
    if p.is_dir():
        return _read_datasets_dir(p, split)
    if p.suffix in (".jsonl", ".json") or p.name.endswith(".jsonl.gz"):
        return _read_jsonl(p)
    if p.suffix == ".parquet":
        return _read_parquet(p)
    raise DataError(f"{path}: unsupported dataset format (use .jsonl, .parquet or a `datasets` dir)")


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    rows = []
    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{lineno}: line is not valid UTF-8 ({e.reason})") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: each line must be a JSON object, got {type(row).__name__}")
            row["_source"] = f"{p}:{lineno}"
            rows.append(row)
    return rows


def _read_parquet(p: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    rows = table.to_pylist()
    for i, row in enumerate(rows, start=1):
        row["_source"] = f"{p}:row {i}"
    return rows


def _read_datasets_dir(p: Path, split: str) -> list[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(p))
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(f"{p}: split '{split}' not found (available: {', '.join(ds)})")
        ds = ds[split]
    rows = [dict(r) for r in ds]
    for i, row in enumerate(rows, start=1):
        row["_source"] = f"{p}[{split}]:row {i}"
    return rows


def require_fields(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """Raise naming the first rows (file:line) that lack a field or have it empty."""
    problems = []
    for row in rows:
        for name in fields:
            value = row.get(name)
            if name not in row:
                problems.append(f"{row.get('_source', '?')}: missing field '{name}'")
            elif value is None or (isinstance(value, str) and not value.strip()) or value == []:
                problems.append(f"{row.get('_source', '?')}: field '{name}' is empty")
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError("bad dataset rows:\n  " + "\n  ".join(problems[:10]) + more)
