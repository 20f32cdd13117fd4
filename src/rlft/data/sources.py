"""Where dataset rows come from besides a local file: a hub dataset id (read through
`datasets.load_dataset`) and objects handed over in Python (`datasets.Dataset`, `DatasetDict`,
`IterableDataset`, a list of dicts). Each row gets a ``_source`` tag for error messages
("hub:owner/name[train]:row 7", "dataset[train]:row 3", "list:row 2"; rows count from 1).

`check_source` says, before any model loads, whether a configured path or hub id can be read.
With HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set no network is attempted: only a cached copy of a hub
dataset can be used.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlft.errors import DataError

LOCAL_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv", ".tsv", ".txt", ".arrow")
READABLE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".parquet")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def looks_local(path: str) -> bool:
    """A path meant as a local file or folder: it starts with ./ ../ / ~, has a data-file suffix, or
    has more than one '/' (a hub id is `name` or `owner/name`)."""
    return (
        path.startswith((".", "/", "~", "\\"))
        or path.lower().endswith(LOCAL_SUFFIXES)
        or path.count("/") > 1
        or "\\" in path
    )


def is_hub_id(path: str) -> bool:
    """`name` or `owner/name` that is not an existing local path and does not look like one."""
    return (
        bool(path)
        and not Path(path).exists()
        and not looks_local(path)
        and HUB_ID.fullmatch(path) is not None
    )


def _datasets_class(source: Any, *names: str) -> bool:
    """Whether `source` is one of the named `datasets` classes (without importing `datasets` for
    objects that cannot be one)."""
    if not type(source).__module__.startswith("datasets"):
        return False
    import datasets

    return isinstance(source, tuple(getattr(datasets, n) for n in names))


def is_streaming(source: Any) -> bool:
    """An iterable (streamed) dataset object: its rows can be read only up to a limit."""
    return _datasets_class(source, "IterableDataset", "IterableDatasetDict")


def source_name(source: Any) -> str:
    """How errors name a source: the path or hub id, else the object's kind."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "list" if isinstance(source, Sequence) else type(source).__name__


def dataset_rows(ds: Any, split: str, name: str, limit: int = 0) -> list[dict[str, Any]]:
    """Rows of a `datasets` object (a DatasetDict or IterableDatasetDict gives `split`), tagged
    "name[split]:row i"; a streamed dataset needs `limit` (rows to read), others read all when 0."""
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in ds:
            raise DataError(f"{name}: split '{split}' not found (available: {', '.join(ds)})")
        ds = ds[split]
    if isinstance(ds, datasets.IterableDataset):
        if limit <= 0:
            raise DataError(
                f"{name}[{split}]: a streaming dataset needs a row limit (how many rows to read); "
                "load it whole (streaming off) or give the number of rows wanted"
            )
        rows = [dict(r) for r in itertools.islice(ds, limit)]
    elif isinstance(ds, datasets.Dataset):
        rows = (ds.select(range(min(limit, len(ds)))) if limit else ds).to_list()
    else:
        raise DataError(f"{name}: expected a datasets Dataset or DatasetDict, got {type(ds).__name__}")
    for i, row in enumerate(rows, start=1):
        row["_source"] = f"{name}[{split}]:row {i}"
    return rows


def object_rows(source: Any, split: str = "train", limit: int = 0) -> list[dict[str, Any]]:
    """Rows of an object given in Python: a `datasets` Dataset / DatasetDict / IterableDataset /
    IterableDatasetDict, or a list of dicts (copied; the caller's dicts are not changed)."""
    if _datasets_class(source, "Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict"):
        return dataset_rows(source, split, "dataset", limit)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        rows = []
        for i, row in enumerate(source[:limit] if limit else source, start=1):
            if not isinstance(row, Mapping):
                raise DataError(f"list:row {i}: each row must be a dict, got {type(row).__name__}")
            rows.append({**row, "_source": f"list:row {i}"})
        return rows
    raise DataError(
        f"unsupported dataset object {type(source).__name__}: give a path, a hub dataset id, a "
        "datasets.Dataset / DatasetDict / IterableDataset or a list of dicts"
    )


def hub_offline() -> bool:
    """Whether offline mode is asked for (by the environment or the hub libraries' settings)."""
    if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in OFFLINE_VARS):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _offline_honoured() -> Iterator[None]:
    """Offline mode as the environment says it now: `datasets` and `huggingface_hub` read the
    variables once, at import, so a variable set later would otherwise not stop the requests."""
    import datasets.config
    from huggingface_hub import constants

    if not hub_offline() or (datasets.config.HF_HUB_OFFLINE and constants.HF_HUB_OFFLINE):
        yield
        return
    before = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = before


def hub_problem(repo_id: str, config: str, split: str, error: BaseException) -> str:
    """What went wrong reading a hub dataset: the id, config, split and the underlying reason."""
    reason = " ".join(str(error).split())[:400] or "no message"
    where = f"hub dataset '{repo_id}' (config {config or 'default'!r}, split '{split}')"
    if hub_offline():
        hint = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so only a cached copy can be read: "
            "download it where the hub is reachable, or give a local JSONL / Parquet / save_to_disk path"
        )
    else:
        hint = "check the id, config and split and that the hub is reachable (or give a local path)"
    return f"{where} could not be loaded: {type(error).__name__}: {reason}; {hint}"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError("reading a hub dataset needs the `datasets` package: pip install datasets") from None
    return datasets


def hub_rows(
    repo_id: str, split: str = "train", config: str = "", streaming: bool = False, limit: int = 0
) -> list[dict[str, Any]]:
    """Rows of a hub dataset via `datasets.load_dataset(repo_id, config, split=, streaming=)`,
    tagged "hub:repo_id[split]:row i" ("hub:repo_id:config[...]" with a config). Streaming needs
    `limit`; any failure to reach or read it is a DataError naming id, config and split."""
    if streaming and limit <= 0:
        raise DataError(
            f"hub dataset '{repo_id}': streaming needs a row limit (how many rows to read); "
            "turn streaming off to load it whole"
        )
    datasets = _datasets()
    name = f"hub:{repo_id}" + (f":{config}" if config else "")
    try:
        with _offline_honoured():
            ds = datasets.load_dataset(repo_id, config or None, split=split, streaming=streaming)
            return dataset_rows(ds, split, name, limit)
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds (connection, not found, bad split / config)
        raise DataError(hub_problem(repo_id, config, split, e)) from e


def _local_problem(p: Path, split: str) -> str | None:
    if p.is_dir():
        meta = p / "dataset_dict.json"
        if meta.exists():
            splits = json.loads(meta.read_text()).get("splits", [])
            if split not in splits:
                return f"{p}: split '{split}' not found (available: {', '.join(splits)})"
        return None
    if not p.name.lower().endswith(READABLE_SUFFIXES):
        return f"{p}: unsupported dataset format (use .jsonl, .parquet or a `datasets` dir)"
    return None


def check_source(path: str, config: str = "", split: str = "train") -> str | None:
    """None when `path` can be read, else what is wrong: a local path missing or of an unreadable
    kind, a saved DatasetDict without `split`, a hub id that cannot be reached or lacks `split`.
    A hub id is checked with `datasets.load_dataset_builder` (metadata only, no rows); offline, only
    the local cache is looked at. An empty path (the built-in task) is fine."""
    if not path:
        return None
    p = Path(path)
    if p.exists():
        return _local_problem(p, split)
    if not is_hub_id(path):
        return f"dataset not found: {path}"
    try:
        datasets = _datasets()
    except DataError as e:
        return str(e)
    try:
        with _offline_honoured():
            builder = datasets.load_dataset_builder(path, config or None)
    except Exception as e:  # connection, not found, unknown config, offline without a cached copy
        return hub_problem(path, config, split, e)
    splits = getattr(builder.info, "splits", None) or {}
    base = re.split(r"[\[+]", split)[0]  # "train[:100]", "train+test": the first split's name
    if splits and base not in splits:
        return (
            f"hub dataset '{path}' (config {config or 'default'!r}) has no split '{base}' "
            f"(available: {', '.join(splits)})"
        )
    return None
