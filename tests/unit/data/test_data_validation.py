"""Up-front dataset validation: every kind of bad row is named by file:line in data_report.json,
the load fails with the first problems quoted unless data.max_bad_fraction allows them, and then
only the good rows are used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlft.config.common import DataConfig
from rlft.config.loader import ConfigError
from rlft.config.sft import SFTDataConfig
from rlft.data.prompts import encode_prompts, load_prompt_examples
from rlft.data.quarantine import REPORT_FILE, DataReport
from rlft.data.rows import DataError
from rlft.data.sft import load_conversations


def _write(tmp_path: Path, lines: list[bytes | str], name: str = "d.jsonl") -> Path:
    p = tmp_path / name
    p.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return p


def _good(i: int) -> str:
    return json.dumps({"id": i, "prompt": f"what is {i}+1?", "answer": str(i + 1)})


def _load(tmp_path: Path, path: Path, tok, max_bad: float = 0.0, max_tokens: int = 100):
    cfg = DataConfig(path=str(path), max_bad_fraction=max_bad)
    return load_prompt_examples(cfg, tok, max_tokens, seed=0, needed=0, out_dir=tmp_path / "run")


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / REPORT_FILE).read_text())


# one bad line among 9 good ones; the problem each is reported with
BAD_LINES = [
    # '{"prompt": "caf' is 15 bytes, so the Latin-1 e-acute is byte 15 (0-based)
    (b'{"prompt": "caf\xe9"}', "line is not valid UTF-8 (invalid continuation byte at byte 15)"),
    # the line ends after 15 characters: the missing name is expected at column 16
    ('{"prompt": "x",', "invalid JSON (Expecting property name enclosed in double quotes at column 16)"),
    ('["prompt", "x"]', "each line must be a JSON object, got list"),
    ('{"question": "x"}', "missing field 'prompt'"),
    ('{"prompt": ""}', "field 'prompt' is empty"),
    ('{"prompt": null}', "field 'prompt' is empty"),
    ('{"prompt": 42}', "field 'prompt': prompt must be a string or a list of chat messages"),
    ('{"prompt": [{"role": "user"}]}', "field 'prompt': prompt must be a string or a list of chat"),
    ('{"prompt": [{"role": "user", "content": "  "}]}', "field 'prompt' has no text"),
    ('{"id": 3, "prompt": "again"}', "duplicate id 3 (first at {p}:4)"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES)
def test_a_bad_row_fails_the_load_naming_file_line_and_problem(tmp_path, tiny_tok, line, problem):
    p = _write(tmp_path, [*(_good(i) for i in range(9)), line])  # the bad row is line 10
    problem = problem.format(p=p)
    with pytest.raises(DataError) as e:
        _load(tmp_path, p, tiny_tok)
    msg = str(e.value)
    # 1 bad of 10 rows = 10%, above the default 0; the fix names the fraction that would pass
    assert "1 of 10 dataset rows are bad (10.0%), above data.max_bad_fraction=0" in msg
    assert f"{p}:10: {problem}" in msg
    assert "set data.max_bad_fraction=0.1 to train without them" in msg
    report = _report(tmp_path)  # written before failing, so the full list is there
    assert report["rows"] == 10 and report["bad_rows"] == 1
    assert report["problems"][0]["where"] == f"{p}:10"
    assert report["problems"][0]["problem"].startswith(problem)


def test_allowed_bad_rows_are_left_out_and_the_rest_trains(tmp_path, tiny_tok):
    lines = [_good(0), b'{"prompt": "\xff"}', _good(1), _good(2), '{"id": 0, "prompt": "dup"}']
    p = _write(tmp_path, lines)
    # 2 bad of 5 = 40%: fails at 0.39, passes at 0.4
    with pytest.raises(DataError, match=r"2 of 5 dataset rows are bad \(40.0%\)"):
        _load(tmp_path, p, tiny_tok, max_bad=0.39)
    examples, _ = _load(tmp_path, p, tiny_tok, max_bad=0.4)
    assert [ex.row["_source"] for ex in examples] == [f"{p}:1", f"{p}:3", f"{p}:4"]
    report = _report(tmp_path)
    assert (report["rows"], report["bad_rows"], report["bad_fraction"]) == (5, 2, 0.4)
    assert [b["where"] for b in report["problems"]] == [f"{p}:2", f"{p}:5"]
    assert report["prompts"] == 3


def test_overlong_prompts_are_listed_in_the_report(tmp_path, tiny_tok):
    # ChatML adds 19 tokens to a prompt of n chars (test_data.py): "what is 1+1?" = 12 -> 31 tokens
    p = _write(tmp_path, [_good(1), json.dumps({"prompt": "x" * 40})])
    examples, counts = _load(tmp_path, p, tiny_tok, max_tokens=31)
    assert counts == {"truncated": 1, "skipped": 0} and len(examples[1].ids) == 31
    assert _report(tmp_path)["overlong_prompts"] == {
        "policy": "truncate",
        "max_tokens": 31,
        "rows": [f"{p}:2 (59 tokens)"],  # 40 + 19
    }
    assert _report(tmp_path)["bad_rows"] == 0


def test_prompt_that_renders_to_no_tokens_is_a_bad_row(tiny_tok):
    tok = type(tiny_tok).from_pretrained(tiny_tok.name_or_path)
    tok.chat_template = "{% for m in messages %}{% endfor %}"  # renders nothing at all
    rows = [{"prompt": "hello", "_source": "f:1"}]
    with pytest.raises(DataError, match="f:1: prompt is empty after the chat template"):
        encode_prompts(rows, tok, "prompt", None, 100, "error")
    report = DataReport(1.0)
    assert encode_prompts(rows, tok, "prompt", None, 100, "error", report) == (
        [],
        {"truncated": 0, "skipped": 0},
    )
    assert report.bad == [{"where": "f:1", "problem": "prompt is empty after the chat template"}]


def test_every_row_bad_but_allowed_still_fails_clearly(tmp_path, tiny_tok):
    p = _write(tmp_path, ['{"prompt": ""}', '{"prompt": 7}'])
    with pytest.raises(DataError, match="no usable prompts left after filtering"):
        _load(tmp_path, p, tiny_tok, max_bad=1.0)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_max_bad_fraction_outside_0_1_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=rf"'data.max_bad_fraction' must be in \[0, 1\], got {bad}"):
        DataReport(bad)


def test_sft_rows_are_quarantined_the_same_way(tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    lines = [
        json.dumps({"id": "a", **chat}),
        b"\xfe",
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"id": "a", **chat}),
        json.dumps({"prompt": "p", "completion": 3}),
    ]
    p = _write(tmp_path, lines)
    out = tmp_path / "run" / REPORT_FILE
    with pytest.raises(DataError, match="4 of 5 dataset rows are bad"):
        load_conversations(SFTDataConfig(path=str(p), heldout_fraction=0.0), DataReport(0.5, out))
    train, _ = load_conversations(SFTDataConfig(path=str(p), heldout_fraction=0.0), DataReport(0.8, out))
    assert [c.source for c in train] == [f"{p}:1"]
    problems = {b["where"]: b["problem"] for b in json.loads(out.read_text())["problems"]}
    assert problems == {
        f"{p}:2": "line is not valid UTF-8 (invalid start byte at byte 0)",
        f"{p}:3": "field 'messages': no assistant message to learn from",
        f"{p}:4": f"duplicate id 'a' (first at {p}:1)",
        f"{p}:5": "field 'completion' must be a string, got int",
    }
