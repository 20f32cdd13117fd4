"""rlft.data.sources and `read_rows` over every source: local JSONL / Parquet / save_to_disk dir,
in-memory Dataset / DatasetDict / IterableDataset / list of dicts, and hub ids (no hub is reachable
here: `datasets.load_dataset` is replaced by a stand-in, or the real one runs offline with every
socket connection refused and recorded). Also `check_source` and `load_train_rows` with `rows=`."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from rlft.config.common import DataConfig
from rlft.data.prompts import load_train_rows
from rlft.data.quarantine import DataReport
from rlft.data.rows import DataError, read_rows
from rlft.data.sources import check_source, is_hub_id, is_streaming

ROWS = [
    {"prompt": "1+1?", "answer": "2", "tags": ["a", "b"]},
    {"prompt": "2+3?", "answer": "5", "tags": ["c"]},
    {"prompt": "9-4?", "answer": "5", "tags": []},
]


def _bare(rows):
    return [{k: v for k, v in r.items() if k != "_source"} for r in rows]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup and socket connection is refused and recorded: the test asserts none was
    tried."""
    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset replaced: records its arguments, returns ROWS as a DatasetDict (or its
    split, or an IterableDataset when streaming), like the hub would."""
    calls = []

    def load_dataset(path, name=None, split=None, streaming=False, **kwargs):
        calls.append({"path": path, "name": name, "split": split, "streaming": streaming})
        dd = datasets.DatasetDict(
            {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
        )
        if streaming:
            dd = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in dd.items()})
        return dd[split] if split else dd

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


# ------------------------------------------------------------------ every source, the same rows


def test_every_local_and_in_memory_source_gives_the_same_rows(tmp_path):
    ds = datasets.Dataset.from_list(ROWS)
    jsonl = _jsonl(tmp_path / "d.jsonl", ROWS)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    sources = {
        "jsonl": str(jsonl),
        "parquet": str(tmp_path / "d.parquet"),
        "saved dir": str(tmp_path / "dd"),
        "Dataset": ds,
        "DatasetDict": datasets.DatasetDict({"train": ds, "test": ds.select([0])}),
        "IterableDataset": ds.to_iterable_dataset(),
        "list": ROWS,
        "tuple": tuple(ROWS),
    }
    for name, source in sources.items():
        got = read_rows(source, "train", limit=10 if is_streaming(source) else 0)
        assert _bare(got) == ROWS, name
    # the row tags name the source and the (1-based) row
    assert [r["_source"] for r in read_rows(ds)] == [f"dataset[train]:row {i}" for i in (1, 2, 3)]
    assert read_rows(ROWS)[1]["_source"] == "list:row 2"
    assert read_rows(str(jsonl))[2]["_source"] == f"{jsonl}:3"
    assert read_rows(str(tmp_path / "dd"))[0]["_source"] == f"{tmp_path / 'dd'}[train]:row 1"
    assert "_source" not in ROWS[0]  # the caller's dicts are copied, not tagged


def test_split_limit_and_report(tmp_path):
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[2:])}
    )
    assert _bare(read_rows(dd, "test")) == ROWS[2:]
    with pytest.raises(DataError, match=r"dataset: split 'validation' not found \(available: train, test\)"):
        read_rows(dd, "validation")
    # limit: at most that many rows, from every kind of source
    jsonl = _jsonl(tmp_path / "d.jsonl", ROWS)
    for source in (str(jsonl), dd["train"], ROWS, dd["train"].to_iterable_dataset()):
        assert _bare(read_rows(source, limit=2)) == ROWS[:2]
    report = DataReport()
    read_rows(ROWS, report=report)
    read_rows(dd, "test", report)
    assert report.rows == 3 + 1


def test_streamed_sources_need_a_limit():
    it = datasets.Dataset.from_list(ROWS).to_iterable_dataset()
    with pytest.raises(DataError, match=r"dataset\[train\]: a streaming dataset needs a row limit"):
        read_rows(it)
    assert is_streaming(it) and not is_streaming(ROWS) and not is_streaming("x.jsonl")


def test_bad_objects_are_named():
    with pytest.raises(DataError, match=r"list:row 2: each row must be a dict, got str"):
        read_rows([{"prompt": "a"}, "b"])
    with pytest.raises(DataError, match=r"unsupported dataset object int"):
        read_rows(42)


# ------------------------------------------------------------------ hub ids


@pytest.mark.parametrize(
    "path,hub",
    [
        ("gsm8k", True),
        ("openai/gsm8k", True),
        ("HuggingFaceH4/ultrafeedback_binarized", True),
        ("trl-lib/tldr.v2", True),
        ("data.jsonl", False),
        ("./gsm8k", False),
        ("/abs/owner/name", False),
        ("a/b/c", False),
        ("owner/name.parquet", False),
        ("", False),
        ("has space", False),
    ],
)
def test_what_counts_as_a_hub_id(path, hub):
    assert is_hub_id(path) is hub


def test_hub_id_passes_config_split_and_streaming(fake_hub):
    rows = read_rows("owner/name", "test", config="main")
    assert fake_hub == [{"path": "owner/name", "name": "main", "split": "test", "streaming": False}]
    assert _bare(rows) == ROWS[:1]
    assert rows[0]["_source"] == "hub:owner/name:main[test]:row 1"
    # no config -> None (the dataset's default); streaming reads `limit` rows
    rows = read_rows("owner/name", "train", streaming=True, limit=2)
    assert fake_hub[-1] == {"path": "owner/name", "name": None, "split": "train", "streaming": True}
    assert _bare(rows) == ROWS[:2]
    assert [r["_source"] for r in rows] == ["hub:owner/name[train]:row 1", "hub:owner/name[train]:row 2"]


def test_streaming_hub_id_without_limit_fails_before_loading(fake_hub):
    with pytest.raises(DataError, match=r"hub dataset 'owner/name': streaming needs a row limit"):
        read_rows("owner/name", streaming=True)
    assert fake_hub == []


def test_unreachable_hub_id_is_a_data_error_naming_id_config_split(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'owner/name' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(DataError) as e:
        read_rows("owner/name", "test", config="main")
    msg = str(e.value)
    assert msg.startswith("hub dataset 'owner/name' (config 'main', split 'test') could not be loaded")
    assert "ConnectionError: Couldn't reach 'owner/name' on the Hub" in msg
    assert "\n" not in msg
    # offline mode is named as the reason to expect
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        DataError, match=r"config 'default', split 'train'\) could not be loaded.*offline mode is on"
    ):
        read_rows("owner/name")


def test_local_looking_paths_never_reach_the_hub(fake_hub, tmp_path):
    for path in (str(tmp_path / "none.jsonl"), "./missing", "missing.parquet", "a/b/c"):
        with pytest.raises(DataError, match=f"^dataset not found: {path}$"):
            read_rows(path)
    assert fake_hub == []


def test_existing_local_dir_wins_over_a_hub_id(fake_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datasets.Dataset.from_list(ROWS).save_to_disk("gsm8k")
    assert _bare(read_rows("gsm8k")) == ROWS
    assert fake_hub == []


def test_real_load_dataset_offline_tries_no_network(monkeypatch, tmp_path, no_network):
    """The real `datasets.load_dataset`, offline mode set after `datasets` was imported: still no
    connection is attempted, and the error names the dataset and says it is offline."""
    from huggingface_hub import constants

    # as if the libraries were imported before the variable was set (they read it once, at import)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"^hub dataset 'rlft-test/no-such-set' \(config 'default'.*offline"):
        read_rows("rlft-test/no-such-set")
    assert "offline mode is on" in check_source("rlft-test/no-such-set", "", "train")
    assert no_network == []
    assert datasets.config.HF_HUB_OFFLINE is False and constants.HF_HUB_OFFLINE is False  # restored


# ------------------------------------------------------------------ check_source


def test_check_source_local(tmp_path):
    assert check_source("") is None  # the built-in task
    assert check_source(str(_jsonl(tmp_path / "d.jsonl", ROWS))) is None
    assert check_source(str(tmp_path / "none.jsonl")) == f"dataset not found: {tmp_path / 'none.jsonl'}"
    (tmp_path / "d.csv").write_text("prompt\nx\n")
    assert "unsupported dataset format" in check_source(str(tmp_path / "d.csv"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    assert check_source(str(tmp_path / "dd"), split="train") is None
    assert check_source(str(tmp_path / "dd"), split="test") == (
        f"{tmp_path / 'dd'}: split 'test' not found (available: train)"
    )


def test_check_source_hub(monkeypatch):
    calls = []

    def builder(path, name=None, **kwargs):
        calls.append((path, name))
        if path == "owner/gone":
            raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        return SimpleNamespace(info=SimpleNamespace(splits={"train": None, "test": None}))

    monkeypatch.setattr(datasets, "load_dataset_builder", builder)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert check_source("owner/name", "main", "test") is None
    assert check_source("owner/name", "", "train[:100]") is None  # a split expression: its first split
    assert calls[:2] == [("owner/name", "main"), ("owner/name", None)]
    assert check_source("owner/name", "main", "validation") == (
        "hub dataset 'owner/name' (config 'main') has no split 'validation' (available: train, test)"
    )
    msg = check_source("owner/gone", "", "train")
    assert msg.startswith("hub dataset 'owner/gone' (config 'default', split 'train') could not be loaded")
    assert "DatasetNotFoundError" in msg


# ------------------------------------------------------------------ load_train_rows


def test_load_train_rows_takes_rows_given_in_python():
    cfg = DataConfig()  # path empty: without rows it would be the built-in task
    for rows in (
        ROWS,
        datasets.Dataset.from_list(ROWS),
        datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}),
    ):
        assert _bare(load_train_rows(cfg, 0, rows=rows)) == ROWS
    # an iterable dataset is read for `needed` rows
    it = datasets.Dataset.from_list(ROWS).to_iterable_dataset()
    assert _bare(load_train_rows(cfg, 0, needed=2, rows=it)) == ROWS[:2]
    # with a report, bad rows are left out and counted as for a file
    report = DataReport(max_bad_fraction=0.5)
    kept = load_train_rows(cfg, 0, report=report, rows=[*ROWS, {"answer": "1"}])
    assert len(kept) == 3 and report.rows == 4
    assert report.bad == [{"where": "list:row 4", "problem": "missing field 'prompt'"}]


def test_load_train_rows_passes_config_and_streaming_to_the_hub(fake_hub):
    cfg = DataConfig(path="owner/name", config="main", split="test")
    assert _bare(load_train_rows(cfg, 0, needed=5)) == ROWS[:1]
    assert fake_hub[-1] == {"path": "owner/name", "name": "main", "split": "test", "streaming": False}
    streamed = DataConfig(path="owner/name", streaming=True)
    assert _bare(load_train_rows(streamed, 0, needed=2)) == ROWS[:2]  # streaming: `needed` rows
    assert fake_hub[-1] == {"path": "owner/name", "name": None, "split": "train", "streaming": True}
