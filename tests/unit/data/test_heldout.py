"""The held-out split of a user's dataset: seeded by a hash of each prompt, so deterministic across
calls and processes, disjoint, covering every row, independent of row order, at least one prompt
on each side; and training never sees the held-out rows."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rlft.config.common import DataConfig
from rlft.data.heldout import prompt_unit, split_heldout
from rlft.data.prompts import load_prompt_examples, train_and_heldout_rows
from rlft.errors import DataError

ROWS = [{"prompt": f"task {i}", "solution": str(i)} for i in range(200)]


def _prompts(rows: list[dict]) -> list[str]:
    return [r["prompt"] for r in rows]


def test_split_is_disjoint_covers_every_row_and_keeps_order():
    train, held = split_heldout(ROWS, 0.1, seed=0)
    assert set(_prompts(train)).isdisjoint(_prompts(held))
    assert sorted(_prompts(train) + _prompts(held)) == sorted(_prompts(ROWS))
    assert len(train) + len(held) == len(ROWS)
    order = _prompts(ROWS)
    assert _prompts(held) == sorted(_prompts(held), key=order.index)  # rows keep their order
    # a hash below 0.1 for each of 200 prompts: about 20 (binomial sd 4.2), here a fixed number
    assert 8 <= len(held) <= 32


def test_split_is_the_same_on_a_second_call_and_in_another_process():
    first = _prompts(split_heldout(ROWS, 0.1, seed=7)[1])
    assert _prompts(split_heldout(ROWS, 0.1, seed=7)[1]) == first
    code = (
        "import json; from rlft.data.heldout import split_heldout\n"
        "rows = [{'prompt': f'task {i}'} for i in range(200)]\n"
        "print(json.dumps([r['prompt'] for r in split_heldout(rows, 0.1, seed=7)[1]]))"
    )
    # another interpreter with a different str-hash seed: SHA-256 does not depend on it
    env = {"PYTHONHASHSEED": "12345", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == first
    assert _prompts(split_heldout(ROWS, 0.1, seed=8)[1]) != first  # the seed moves it


def test_the_side_of_a_prompt_is_its_hash_of_seed_and_prompt():
    # worked independently of the module: SHA-256 of "<seed>\n<prompt as JSON>", first 8 bytes
    # big-endian over 2**64; a prompt is held out when that is below the fraction
    digest = hashlib.sha256(b'3\n"task 5"').digest()
    assert prompt_unit("task 5", 3) == int.from_bytes(digest[:8], "big") / 2**64
    chat = [{"role": "user", "content": "hi"}]
    digest = hashlib.sha256(b'3\n[{"content": "hi", "role": "user"}]').digest()  # keys sorted
    assert prompt_unit(chat, 3) == int.from_bytes(digest[:8], "big") / 2**64
    train, held = split_heldout(ROWS, 0.25, seed=3)
    assert all(prompt_unit(r["prompt"], 3) < 0.25 for r in held)
    assert all(prompt_unit(r["prompt"], 3) >= 0.25 for r in train)


def test_row_order_and_other_rows_do_not_move_a_row():
    _, held = split_heldout(ROWS, 0.1, seed=1)
    _, held_reversed = split_heldout(ROWS[::-1], 0.1, seed=1)
    assert sorted(_prompts(held)) == sorted(_prompts(held_reversed))
    _, held_half = split_heldout(ROWS[:100], 0.1, seed=1)  # e.g. bad rows left out, a streamed prefix
    assert set(_prompts(held_half)) == set(_prompts(held)) & set(_prompts(ROWS[:100]))


def test_a_repeated_prompt_lands_on_one_side():
    rows = [{"prompt": f"p{i % 30}", "i": i} for i in range(90)]  # each prompt three times
    train, held = split_heldout(rows, 0.3, seed=0)
    assert set(_prompts(train)).isdisjoint(_prompts(held))
    assert len(held) % 3 == 0 and held


def test_small_datasets_keep_one_prompt_on_each_side():
    rows = [{"prompt": p} for p in ("a", "b", "c")]
    train, held = split_heldout(rows, 0.001, seed=0)  # no hash below 0.001: the lowest is held out
    lowest = min(rows, key=lambda r: prompt_unit(r["prompt"], 0))
    assert held == [lowest] and len(train) == 2
    train, held = split_heldout(rows, 0.999, seed=0)  # every hash below: the highest trains
    highest = max(rows, key=lambda r: prompt_unit(r["prompt"], 0))
    assert train == [highest] and len(held) == 2
    assert split_heldout(rows, 0.0, seed=0) == (rows, [])  # 0: nothing held out
    with pytest.raises(DataError, match="1 distinct prompt"):
        split_heldout([{"prompt": "a"}, {"prompt": "a"}], 0.5, seed=0)
    with pytest.raises(DataError, match=r"must be in \[0, 1\), got 1.0"):
        split_heldout(rows, 1.0, seed=0)


def test_training_never_sees_the_heldout_rows(tmp_path, tiny_tok):
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:60]))
    cfg = DataConfig(path=str(data))
    ev = SimpleNamespace(path="", heldout_fraction=0.2, before=False, after=True, every=0)
    train, held = train_and_heldout_rows(cfg, ev, seed=0)
    assert held and len(train) + len(held) == 60
    examples, _ = load_prompt_examples(cfg, tiny_tok, 512, 0, 0, tmp_path / "run", eval_cfg=ev)
    trained = {ex.row["prompt"] for ex in examples}
    assert trained == set(_prompts(train)) and trained.isdisjoint(_prompts(held))
    # without the eval section (other loops) or with an eval.path, nothing is held out
    assert len(load_prompt_examples(cfg, tiny_tok, 512, 0, 0, tmp_path / "r2")[0]) == 60
    with_path = SimpleNamespace(**{**vars(ev), "path": "x.jsonl"})
    assert train_and_heldout_rows(cfg, with_path, 0)[1] == []
    # nor with held-out evaluation off: every row is trained on
    off = SimpleNamespace(**{**vars(ev), "after": False})
    assert train_and_heldout_rows(cfg, off, 0) == (train_and_heldout_rows(cfg, None, 0)[0], [])
    # rows given in Python are split the same way as the same rows read from a file
    _, held_given = train_and_heldout_rows(DataConfig(), ev, 0, rows=ROWS[:60])
    assert _prompts(held_given) == _prompts(held)
