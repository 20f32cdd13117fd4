"""SQLite store, candidates import / generation, export format and the label CLI commands."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from label_support import REPO_ROOT, write_jsonl

from rlft.data.rows import DataError
from rlft.label import candidates
from rlft.label.candidates import GenerationSettings, generate_missing, import_responses
from rlft.label.cli import add_label_parser, cmd_label
from rlft.label.db import AlreadyDecided, Item, LabelStore, UnknownPrompt, export_rows, write_jsonl_atomic


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rlft")
    add_label_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["label", *argv])


def test_store_settings_and_schema(tmp_path: Path):
    db = tmp_path / "l.sqlite"
    LabelStore(db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"schema_version", "prompts", "responses", "rankings"}
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="schema version 99"):
        LabelStore(db)


def test_round_trip_progress_and_decisions(tmp_path: Path):
    store = LabelStore(tmp_path / "l.sqlite")
    items = [Item("a", "p-a", ["x", "y"], {"answer": "x"}), Item("b", "p-b", ["u", "v", "w"])]
    assert store.add_items(items) == 2
    assert store.add_items([Item("a", "changed", ["z", "z"])]) == 0  # existing ids are kept
    assert store.get_item("a") == items[0]
    assert store.next_item("alice") == items[0]
    assert store.progress("alice") == {"ranked": 0, "skipped": 0, "total": 2}

    store.submit("a", "alice", None)  # skip
    assert store.next_item("alice") == items[1]  # a skipped prompt is not shown again
    store.submit("b", "alice", [2, [0, 1]])
    assert store.next_item("alice") is None
    assert store.next_item("bob") == items[0]  # progress is per annotator
    assert store.progress("alice") == {"ranked": 1, "skipped": 1, "total": 2}

    with pytest.raises(AlreadyDecided):
        store.submit("b", "alice", [0, 1, 2])
    with pytest.raises(AlreadyDecided):
        store.submit("a", "alice", [0, 1])  # skipped counts as decided
    with pytest.raises(UnknownPrompt):
        store.submit("nope", "alice", [0, 1])
    rows = list(store.ranked_rows())
    assert [(i.id, a, r) for i, a, r, _ in rows] == [("b", "alice", [2, [0, 1]])]


def test_export_format_exactly(tmp_path: Path, responses_file: Path):
    store = LabelStore(tmp_path / "l.sqlite")
    import_responses(store, str(responses_file))
    store.submit("q1", "alice", [2, [0, 3], 1])
    store.submit("q2", "alice", None)  # skipped: not exported
    store.submit("q1", "bob", [0, 1, 2, 3])
    out = tmp_path / "out" / "rankings.jsonl"
    assert cmd_label(parse("export", "--db", str(store.path), "--out", str(out))) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    alice = next(r for r in rows if r["annotator"] == "alice")
    assert list(alice) == ["id", "prompt", "responses", "ranking", "annotator", "created_at", "answer"]
    assert alice["id"] == "q1" and alice["prompt"] == "What is 2+2?" and alice["answer"] == "4"
    assert alice["responses"] == json.loads(responses_file.read_text().splitlines()[0])["responses"]
    assert alice["ranking"] == [2, [0, 3], 1]
    assert len(alice["created_at"]) == 20 and alice["created_at"].endswith("Z")
    assert alice["created_at"][10] == "T"
    assert not list(out.parent.glob(".*.tmp"))  # the temp file was renamed away


def test_export_readable_by_reward_model_reader(tmp_path: Path, responses_file: Path):
    from rlft.data.preferences import read_preferences

    store = LabelStore(tmp_path / "l.sqlite")
    import_responses(store, str(responses_file))
    store.submit("q1", "alice", [2, [0, 3], 1])
    out = tmp_path / "rankings.jsonl"
    write_jsonl_atomic(out, export_rows(store))
    (ranked,) = read_preferences(str(out))
    assert ranked.levels == (1, 2, 0, 1)  # response 2 best, 0 and 3 tied, 1 worst
    assert ranked.extra["answer"] == "4" and ranked.extra["annotator"] == "alice"


def test_atomic_export_keeps_old_file_on_error(tmp_path: Path):
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(out, rows())
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_import_ids_extras_and_errors(tmp_path: Path):
    store = LabelStore(tmp_path / "l.sqlite")
    src = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "hi", "responses": ["a", "b"], "meta": {"k": 1}},
            {"id": 7, "prompt": "yo", "responses": ["c", "d"]},
        ],
    )
    assert import_responses(store, str(src)) == 2
    assert import_responses(store, str(src)) == 0  # a restart imports nothing twice
    hashed = candidates.row_id({"prompt": "hi"})
    assert store.prompt_ids() == {hashed, "7"} and len(hashed) == 12
    assert store.get_item(hashed).extra == {"meta": {"k": 1}}
    bad = [
        ([{"prompt": "p", "responses": ["only one"]}], "list of >= 2"),
        ([{"prompt": "p", "responses": ["a", 3]}], "strings only"),
        ([{"prompt": ["chat"], "responses": ["a", "b"]}], "'prompt' must be a string"),
        ([{"id": "x", "prompt": "p", "responses": ["a", "b"]}] * 2, "repeats"),
    ]
    for rows, message in bad:
        with pytest.raises(DataError, match=message):
            import_responses(store, str(write_jsonl(tmp_path / "bad.jsonl", rows)))


def test_generate_k_responses_once(tmp_path: Path, tiny_model_path: str, monkeypatch: pytest.MonkeyPatch):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "1+1?", "answer": "2"}, {"id": "b", "prompt": "2+3?"}]
    )
    settings = GenerationSettings(tiny_model_path, k=3, max_new_tokens=6, temperature=1.0, seed=0)
    stores = [LabelStore(tmp_path / f"{n}.sqlite") for n in ("one", "two")]
    assert [generate_missing(s, str(prompts), settings) for s in stores] == [2, 2]
    item = stores[0].get_item("b")
    assert item.prompt == "2+3?" and len(item.responses) == 3
    assert all(isinstance(r, str) for r in item.responses)
    assert stores[0].get_item(candidates.row_id({"prompt": "1+1?"})).extra == {"answer": "2"}
    # same seed, same samples
    assert [stores[0].get_item(i).responses for i in sorted(stores[0].prompt_ids())] == [
        stores[1].get_item(i).responses for i in sorted(stores[1].prompt_ids())
    ]

    def must_not_run(*a, **k):
        raise AssertionError("a restart must not regenerate")

    monkeypatch.setattr(candidates, "sample_responses", must_not_run)
    assert generate_missing(stores[0], str(prompts), settings) == 0
    with pytest.raises(ValueError, match="--k must be >= 2"):
        generate_missing(stores[0], str(prompts), GenerationSettings(tiny_model_path, k=1))


def test_serve_arguments(tmp_path: Path):
    from rlft.label.cli import prepare_db

    args = parse("serve", "--db", str(tmp_path / "l.sqlite"))
    assert args.host == "127.0.0.1" and args.port == 8765 and args.k == 4
    with pytest.raises(ValueError, match="holds no prompts"):
        prepare_db(args)
    with pytest.raises(ValueError, match="--prompts and --model go together"):
        prepare_db(parse("serve", "--db", str(tmp_path / "l.sqlite"), "--prompts", "p.jsonl"))


def test_agreement_command(tmp_path: Path, responses_file: Path, capsys: pytest.CaptureFixture):
    store = LabelStore(tmp_path / "l.sqlite")
    import_responses(store, str(responses_file))
    # q1: alice [0,1,2,3] vs bob [1,0,2,3] -> tau 4/6; q2 ranked by alice only: no overlap
    store.submit("q1", "alice", [0, 1, 2, 3])
    store.submit("q1", "bob", [1, 0, 2, 3])
    store.submit("q2", "alice", [0, 1, 2])
    assert cmd_label(parse("agreement", "--db", str(store.path), "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mean_tau_b"] == pytest.approx(4 / 6)
    assert res["prompts_overlap"] == 1 and res["pairs"] == 1
    assert cmd_label(parse("agreement", "--db", str(store.path))) == 0
    assert "0.6667 over 1 prompt(s)" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        cmd_label(parse("export", "--db", str(tmp_path / "missing.sqlite"), "--out", "x.jsonl"))


def test_import_rlft_stays_light():
    code = (
        "import sys, rlft, rlft.label, rlft.label.cli, rlft.label.agreement; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'jinja2', 'starlette', 'torch') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(REPO_ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
