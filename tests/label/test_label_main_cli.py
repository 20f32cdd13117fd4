"""`rlft label export` through the main CLI feeds `rlft rm` end to end: a ranking submitted to the
store becomes a training ranking with the same levels."""

from __future__ import annotations

import json
from pathlib import Path

from rlft.data.preferences import read_preferences
from rlft.label.db import Item, LabelStore


def test_main_cli_export_round_trips_into_the_rm_reader(tmp_path: Path, cli):
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    store.add_items([Item("p1", "What is 2+2?", ["4", "5", "four", "22"], {"answer": "4"})])
    store.submit("p1", "alice", [0, [2, 1], 3])
    out = tmp_path / "rankings.jsonl"
    res = cli("label", "export", "--db", str(db), "--out", str(out))
    assert res.returncode == 0, res.stderr
    row = json.loads(out.read_text())
    assert (row["ranking"], row["annotator"], row["answer"]) == ([0, [2, 1], 3], "alice", "4")
    # levels: response 0 best (0); 1 and 2 tied (1); 3 last (2)
    (ranked,) = read_preferences(str(out))
    assert ranked.levels == (0, 1, 1, 2)
    assert ranked.responses == ("4", "5", "four", "22")
