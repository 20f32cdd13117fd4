"""`rlft check-config` says when a dataset the run would read cannot be read: before any run."""

from __future__ import annotations

import json

from rlft.cli.main import main


def test_an_unreachable_hub_dataset_is_named(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code = main(["check-config", "data.path=someone/no-such-dataset", "data.config=main"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'data.path'" in err and "someone/no-such-dataset" in err and "main" in err


def test_a_missing_eval_file_and_a_missing_split_are_named(tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    saved = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list([{"prompt": "hi"}])}).save_to_disk(str(saved))
    code = main(["check-config", f"data.path={saved}", "data.split=test", f"eval.path={tmp_path}/gone.jsonl"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'data.path'" in err and "test" in err
    assert "'eval.path'" in err and "gone.jsonl" in err


def test_readable_datasets_pass(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "solution": "1"}) + "\n")
    assert main(["check-config", f"data.path={data}", f"eval.path={data}"]) == 0
    assert "batch arithmetic" in capsys.readouterr().out
