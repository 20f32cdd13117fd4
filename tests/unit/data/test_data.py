"""rlft.data: bad JSONL input, over-long prompt policies, the resumable prompt stream."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlft.config.common import ArithmeticConfig, DataConfig
from rlft.data import arithmetic
from rlft.data.prompts import PromptExample, PromptStream, encode_prompts, load_train_rows
from rlft.data.rows import DataError, read_rows


def _jsonl(tmp_path: Path, lines: list[bytes | str]) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return p


def _ok(prompt: str) -> str:
    return json.dumps({"prompt": prompt, "answer": "1"})


# ---------------------------------------------------------------- bad input


def test_rows_are_tagged_with_file_and_line_blank_lines_skipped(tmp_path):
    p = _jsonl(tmp_path, [_ok("a"), "   ", _ok("b")])
    rows = read_rows(str(p))
    # blank line 2 skipped, so the second row is line 3
    assert [r["_source"] for r in rows] == [f"{p}:1", f"{p}:3"]


def test_missing_prompt_field_names_file_line_and_field(tmp_path):
    p = _jsonl(tmp_path, [_ok("a"), json.dumps({"question": "b"})])
    with pytest.raises(DataError, match=rf"{p}:2: missing field 'prompt'"):
        load_train_rows(DataConfig(path=str(p)), seed=0)


@pytest.mark.parametrize("bad", ["", "   \t", None])
def test_empty_prompt_names_the_line(tmp_path, bad):
    p = _jsonl(tmp_path, [_ok("a"), _ok("b"), json.dumps({"prompt": bad})])
    with pytest.raises(DataError, match=rf"{p}:3: field 'prompt' is empty"):
        load_train_rows(DataConfig(path=str(p)), seed=0)


def test_invalid_utf8_names_the_line(tmp_path):
    p = _jsonl(tmp_path, [_ok("a"), b'{"prompt": "caf\xe9"}'])
    with pytest.raises(DataError, match=rf"{p}:2: line is not valid UTF-8"):
        read_rows(str(p))


def test_invalid_json_names_the_line(tmp_path):
    p = _jsonl(tmp_path, [_ok("a"), _ok("b"), '{"prompt": "c",'])
    with pytest.raises(DataError, match=rf"{p}:3: invalid JSON"):
        read_rows(str(p))


def test_non_object_line_names_the_line(tmp_path):
    p = _jsonl(tmp_path, ['["prompt", "x"]'])
    with pytest.raises(DataError, match=rf"{p}:1: each line must be a JSON object, got list"):
        read_rows(str(p))


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        read_rows(str(tmp_path / "none.jsonl"))
    (tmp_path / "d.csv").write_text("prompt\nx\n")
    with pytest.raises(DataError, match="unsupported dataset format"):
        read_rows(str(tmp_path / "d.csv"))


def test_prompt_of_wrong_type_names_row_and_field(tmp_path, tiny_tok):
    p = _jsonl(tmp_path, [json.dumps({"prompt": 42})])
    rows = read_rows(str(p))
    with pytest.raises(DataError, match=rf"{p}:1: field 'prompt': prompt must be a string or a list"):
        encode_prompts(rows, tiny_tok, "prompt", None, 100, "error")


# ---------------------------------------------------------------- over-long prompts

# ChatML around a user prompt of n chars (char-level tokenizer, special tokens are 1 token each):
# "<|im_start|>" "user\n" PROMPT "<|im_end|>" "\n" "<|im_start|>" "assistant\n"
#   1 + 5 + n + 1 + 1 + 1 + 10 = n + 19 tokens
OVERHEAD = 19


def _rows(lengths: list[int]) -> list[dict]:
    return [{"prompt": "x" * n, "_source": f"f.jsonl:{i + 1}"} for i, n in enumerate(lengths)]


def test_chat_overhead_matches_hand_count(tiny_tok):
    ex, counts = encode_prompts(_rows([3]), tiny_tok, "prompt", None, 100, "error")
    assert len(ex[0].ids) == 3 + OVERHEAD  # 22
    assert ex[0].text == "<|im_start|>user\nxxx<|im_end|>\n<|im_start|>assistant\n"
    assert counts == {"truncated": 0, "skipped": 0}


def test_overlong_truncate_keeps_the_end(tiny_tok):
    rows = [{"prompt": "abcdefghij", "_source": "f:1"}, {"prompt": "ab", "_source": "f:2"}]
    full, _ = encode_prompts(rows, tiny_tok, "prompt", None, 1000, "error")
    # lengths 10+19 = 29 and 2+19 = 21; max 25 -> only the first is cut, to its last 25 tokens
    ex, counts = encode_prompts(rows, tiny_tok, "prompt", None, 25, "truncate")
    assert counts == {"truncated": 1, "skipped": 0}
    assert ex[0].ids == full[0].ids[-25:]
    # the 4 dropped tokens are "<|im_start|>", "u", "s", "e": the text keeps 'r\n' + prompt + turn
    assert ex[0].text == "r\nabcdefghij<|im_end|>\n<|im_start|>assistant\n"
    assert ex[1].ids == full[1].ids


def test_overlong_skip_counts(tiny_tok):
    ex, counts = encode_prompts(_rows([1, 30, 2, 40]), tiny_tok, "prompt", None, 25, "skip")
    # lengths 20, 49, 21, 59 vs max 25 -> rows 2 and 4 skipped
    assert counts == {"truncated": 0, "skipped": 2}
    assert [e.row["_source"] for e in ex] == ["f.jsonl:1", "f.jsonl:3"]


def test_overlong_error_names_rows(tiny_tok):
    with pytest.raises(DataError) as e:
        encode_prompts(_rows([1, 30, 2, 40]), tiny_tok, "prompt", None, 25, "error")
    msg = str(e.value)
    # 30+19 = 49 and 40+19 = 59 tokens
    assert "2 prompt(s) longer than data.max_prompt_tokens=25" in msg
    assert "f.jsonl:2 (49 tokens)" in msg and "f.jsonl:4 (59 tokens)" in msg
    assert "f.jsonl:1" not in msg and "f.jsonl:3" not in msg


def test_all_skipped_is_an_error(tiny_tok):
    with pytest.raises(DataError, match="no usable prompts left"):
        encode_prompts(_rows([30]), tiny_tok, "prompt", None, 25, "skip")


def test_system_prompt_and_chat_messages(tiny_tok):
    rows = [{"prompt": "hi"}, {"prompt": [{"role": "user", "content": "yo"}]}]
    ex, _ = encode_prompts(rows, tiny_tok, "prompt", "S", 100, "error")
    assert (
        ex[0].text
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # chat messages are used as given: no system prompt is inserted
    assert ex[1].text == "<|im_start|>user\nyo<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------- prompt stream


def _examples(n: int) -> list[PromptExample]:
    return [PromptExample(text=str(i), ids=[i], row={"i": i}) for i in range(n)]


def _ids(xs: list[PromptExample]) -> list[int]:
    return [x.row["i"] for x in xs]


@pytest.mark.parametrize("first", [3, 5, 7, 12])
def test_stream_resume_gives_exact_same_sequence(first):
    ref = PromptStream(_examples(5), seed=7)
    a = _ids(ref.take(first))
    rest = _ids(ref.take(11))  # crosses at least one more epoch boundary
    s = PromptStream(_examples(5), seed=7)
    assert _ids(s.take(first)) == a
    resumed = PromptStream(_examples(5), seed=7)
    resumed.load_state_dict(json.loads(json.dumps(s.state_dict())))  # as stored in trainer_state.json
    assert _ids(resumed.take(11)) == rest


def test_stream_epochs_are_permutations_reshuffled():
    s = PromptStream(_examples(6), seed=1)
    e0, e1 = _ids(s.take(6)), _ids(s.take(6))
    # each epoch visits every example exactly once
    assert sorted(e0) == sorted(e1) == list(range(6))
    assert s.state_dict() == {"epoch": 1, "index": 6}
    unshuffled = PromptStream(_examples(4), seed=1, shuffle=False)
    assert _ids(unshuffled.take(6)) == [0, 1, 2, 3, 0, 1]


# ---------------------------------------------------------------- built-in arithmetic task


def test_arithmetic_rows_and_split_are_disjoint():
    cfg = ArithmeticConfig(add_max=12, mul_max=6, heldout_size=10)
    row = arithmetic.make_row(58, "+", 16)
    assert row == {"prompt": "What is 58 + 16?", "answer": "74"}  # 58 + 16 = 74
    held = {r["prompt"] for r in arithmetic.heldout_rows(cfg)}
    stream = arithmetic.train_rows(cfg, seed=3)
    train = {next(stream)["prompt"] for _ in range(300)}
    assert len(held) == 10 and not held & train
    # a + b and b + a land on the same side of the split (same unordered pair)
    assert arithmetic.is_heldout(3, "+", 9, 0.25) == arithmetic.is_heldout(9, "+", 3, 0.25)


def test_builtin_unknown_dataset():
    with pytest.raises(DataError, match="unknown built-in dataset 'data.builtin=gsm'"):
        load_train_rows(SimpleNamespace(path="", builtin="gsm"), seed=0)


# ---------------------------------------------------------------- other formats


def test_parquet_rows_are_tagged(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["1", "2"]}), p)
    rows = read_rows(str(p))
    assert [(r["prompt"], r["_source"]) for r in rows] == [("a", f"{p}:row 1"), ("b", f"{p}:row 2")]


def test_gzipped_jsonl_is_read(tmp_path):
    import gzip

    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(_ok("a") + "\n" + _ok("b") + "\n")
    assert [r["prompt"] for r in read_rows(str(p))] == ["a", "b"]
