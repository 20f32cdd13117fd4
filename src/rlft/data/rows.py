"""Read dataset rows from JSONL, Parquet, a saved `datasets` directory, a hub dataset id or an
object given in Python (rlft.data.sources), with errors that name the file, line and field. Given a
`DataReport` (rlft.data.quarantine), bad lines and rows are recorded there and left out instead of
failing the load."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlft.data.sources import dataset_rows, hub_rows, is_hub_id, object_rows
from rlft.errors import DataError

if TYPE_CHECKING:
    from rlft.data.quarantine import DataReport


def reject(report: DataReport | None, where: str, problem: str) -> None:
    """Record a bad row in `report`, or raise DataError naming it when there is none."""
    if report is None:
        raise DataError(f"{where}: {problem}")
    report.reject(where, problem)


def read_rows(
    source: Any,
    split: str = "train",
    report: DataReport | None = None,
    *,
    config: str = "",
    streaming: bool = False,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Rows as dicts, each tagged with ``_source`` = "file:line" (1-based) for error messages.

    `source`: a local JSONL (.jsonl, .json, .jsonl.gz) / Parquet file or `save_to_disk` directory
    (`split` picks from a DatasetDict); a hub dataset id `name` or `owner/name` (not an existing
    path), loaded with `config`, `split` and `streaming`; or a `datasets` Dataset / DatasetDict /
    IterableDataset or a list of dicts. `limit` > 0 reads at most that many rows; a streamed
    source needs it. With a report, unreadable JSONL lines are recorded there and skipped, and
    every row read (good or not) is counted in report.rows."""
    if not isinstance(source, (str, os.PathLike)):
        rows = object_rows(source, split, limit)
    else:
        path = str(source)
        p = Path(path)
        if not p.exists() and is_hub_id(path):
            rows = hub_rows(path, split, config, streaming, limit)
        elif not p.exists():
            raise DataError(f"dataset not found: {path}")
        elif p.is_dir():
            rows = _read_datasets_dir(p, split, limit)
        elif p.suffix in (".jsonl", ".json") or p.name.endswith(".jsonl.gz"):
            return _read_jsonl(p, report, limit)
        elif p.suffix == ".parquet":
            rows = _read_parquet(p)
        else:
            raise DataError(f"{path}: unsupported dataset format (use .jsonl, .parquet or a `datasets` dir)")
    rows = rows[:limit] if limit else rows
    if report is not None:
        report.rows += len(rows)
    return rows


def _read_jsonl(p: Path, report: DataReport | None, limit: int = 0) -> list[dict[str, Any]]:
    rows = []
    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if limit and len(rows) >= limit:
                break
            if not raw.strip():
                continue
            if report is not None:
                report.rows += 1
            where = f"{p}:{lineno}"
            try:
                row = json.loads(raw.rstrip().decode("utf-8"))
            except UnicodeDecodeError as e:
                reject(report, where, f"line is not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            except json.JSONDecodeError as e:
                reject(report, where, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                reject(report, where, f"each line must be a JSON object, got {type(row).__name__}")
                continue
            row["_source"] = where
            rows.append(row)
    return rows


def _read_parquet(p: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    rows = table.to_pylist()
    for i, row in enumerate(rows, start=1):
        row["_source"] = f"{p}:row {i}"
    return rows


def _read_datasets_dir(p: Path, split: str, limit: int = 0) -> list[dict[str, Any]]:
    from datasets import load_from_disk

    return dataset_rows(load_from_disk(str(p)), split, str(p), limit)


def field_problems(row: dict[str, Any], fields: Sequence[str]) -> list[str]:
    """What is wrong with a row's required fields: missing, or empty (None, blank, [])."""
    problems = []
    for name in fields:
        value = row.get(name)
        if name not in row:
            problems.append(f"missing field '{name}'")
        elif value is None or (isinstance(value, str) and not value.strip()) or value == []:
            problems.append(f"field '{name}' is empty")
    return problems


def require_fields(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """Raise naming the first rows (file:line) that lack a field or have it empty."""
    problems = [f"{row.get('_source', '?')}: {p}" for row in rows for p in field_problems(row, fields)]
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError("bad dataset rows:\n  " + "\n  ".join(problems[:10]) + more)


def keep_valid_rows(
    rows: Sequence[dict[str, Any]], fields: Sequence[str], report: DataReport, id_field: str = ""
) -> list[dict[str, Any]]:
    """Rows whose required fields are present and non-empty and whose `id_field` value (when the
    row has one) was not seen before; the others are recorded in `report`."""
    kept, first_seen = [], {}
    for row in rows:
        where = row.get("_source", "?")
        problems = field_problems(row, fields)
        if not problems and id_field and row.get(id_field) is not None:
            key = json.dumps(row[id_field], sort_keys=True)
            if key in first_seen:
                problems.append(f"duplicate {id_field} {row[id_field]!r} (first at {first_seen[key]})")
            first_seen.setdefault(key, where)
        if problems:
            report.reject(where, "; ".join(problems))
        else:
            kept.append(row)
    return kept
