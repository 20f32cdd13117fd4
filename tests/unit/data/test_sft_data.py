"""SFT data: the assistant-only loss mask, prompt/completion rows vs chat rows, truncation,
packing layout and the block-diagonal causal mask, the held-out split, and errors naming
file:line and field.

The tiny tokenizer is character level: every character is one token, and `<|im_start|>`,
`<|im_end|>` are one token each, so token counts below are character counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlft.config.sft import SFTDataConfig
from rlft.data.rows import DataError
from rlft.data.sft import (
    SFTExample,
    assistant_mask,
    encode_conversations,
    load_conversations,
    pack,
    packed_batch,
    row_conversation,
)

CHAT = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo there"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def _spans(ids: list[int], mask: list[bool]) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of True."""
    runs, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_assistant_mask_covers_exactly_the_assistant_turns(tiny_tok):
    ids, mask = assistant_mask(tiny_tok, CHAT)
    # ChatML: "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" = 1 + 5 + 2 + 1 + 1 + 1 + 10
    # = 21 tokens before "yo there" (8) + <|im_end|> (1) -> [21, 30); then "\n" (1),
    # "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n" = 1 + 5 + 4 + 1 + 1 + 1 + 10 = 23
    # -> "4" starts at 30 + 1 + 23 = 54: [54, 56) with its <|im_end|>; then one final "\n" -> 57 tokens
    assert len(ids) == 57
    assert _spans(ids, mask) == [(21, 30), (54, 56)]
    assert sum(mask) == 11
    decoded = [tiny_tok.decode(ids[a:b]) for a, b in _spans(ids, mask)]
    assert decoded == ["yo there<|im_end|>", "4<|im_end|>"]
    # everything else is prompt, role header or separator
    rest = tiny_tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "yo" not in rest and "4" not in rest and rest.count("<|im_end|>") == 2


def test_prompt_completion_rows_equal_the_chat_rows(tiny_tok):
    cfg = SFTDataConfig(system_prompt="Be brief.")
    msgs = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    chat_prompt = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "completion": "yo",
    }
    convs = [row_conversation(r, cfg) for r in (msgs, {"prompt": "hi", "completion": "yo"}, chat_prompt)]
    # system_prompt is prepended to the two rows without a system message; the third has one
    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    assert all(c.messages == expected for c in convs)
    examples, _ = encode_conversations(tiny_tok, convs, 512, "truncate")
    assert examples[0].ids == examples[1].ids == examples[2].ids
    assert examples[0].loss_mask == examples[1].loss_mask == examples[2].loss_mask
    # "yo" + <|im_end|>: 3 target tokens
    assert examples[0].n_targets == 3
    # configurable field names map the same way
    renamed = SFTDataConfig(prompt_field="q", completion_field="a", system_prompt="Be brief.")
    assert row_conversation({"q": "hi", "a": "yo"}, renamed).messages == expected


@pytest.mark.parametrize(
    "overlong,max_length,expected_targets,counts",
    [
        # 31 tokens: 21 before "yo there", 9 targets, 1 "\n"; the first 25 keep "yo t" -> 4 targets
        ("truncate", 25, [4], {"truncated": 1, "skipped": 0, "no_targets": 0}),
        # the first 21 tokens hold no assistant token: dropped and counted
        ("truncate", 21, [], {"truncated": 1, "skipped": 0, "no_targets": 1}),
        ("skip", 30, [], {"truncated": 0, "skipped": 1, "no_targets": 0}),
        ("truncate", 31, [9], {"truncated": 0, "skipped": 0, "no_targets": 0}),  # fits exactly
    ],
)
def test_overlong_examples_are_truncated_or_skipped_and_counted(
    tiny_tok, overlong, max_length, expected_targets, counts
):
    conv = row_conversation({"messages": CHAT[:2], "_source": "f.jsonl:7"}, SFTDataConfig())
    examples, got = encode_conversations(tiny_tok, [conv], max_length, overlong)
    assert [ex.n_targets for ex in examples] == expected_targets
    assert all(len(ex.ids) <= max_length for ex in examples)
    assert got == counts


def test_overlong_error_names_the_row(tiny_tok):
    conv = row_conversation({"messages": CHAT[:2], "_source": "f.jsonl:7"}, SFTDataConfig())
    with pytest.raises(DataError, match=r"data\.max_length=25: f\.jsonl:7 \(31 tokens\)"):
        encode_conversations(tiny_tok, [conv], 25, "error")


def _ex(n: int, first_id: int = 10) -> SFTExample:
    """n tokens first_id, first_id+1, ...; all but the first are targets."""
    return SFTExample(tuple(range(first_id, first_id + n)), (False,) + (True,) * (n - 1))


def test_pack_is_first_fit():
    rows = pack([_ex(5), _ex(3), _ex(4), _ex(2), _ex(6), _ex(9)], max_length=8)
    # 5 -> row 0 (room 3); 3 fits row 0 (room 0); 4 -> row 1 (room 4); 2 fits row 1 (room 2);
    # 6 fits nowhere -> row 2; 9 is longer than 8 -> a row of its own
    assert [[len(e.ids) for e in r] for r in rows] == [[5, 3], [4, 2], [6], [9]]


def test_packed_batch_positions_and_block_diagonal_causal_mask():
    a, b, c = _ex(3, 10), _ex(2, 20), _ex(4, 30)
    batch = packed_batch([[a, b], [c]], pad_id=0)
    # width = max(3 + 2, 4) = 5; row 1 gets one pad token (id 0) at the end
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21], [30, 31, 32, 33, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch.loss_mask.tolist() == [[False, True, True, False, True], [False, True, True, True, False]]
    assert batch.attention_mask.shape == (2, 1, 5, 5) and batch.attention_mask.dtype == torch.float32
    allowed = (batch.attention_mask[:, 0] == 0).int().tolist()
    # row 0: example a = tokens 0-2 (causal among themselves), b = tokens 3-4 (causal, never a)
    assert allowed[0] == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    # row 1: c = tokens 0-3; the pad token attends only to itself (no all -inf row)
    assert allowed[1] == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert set(batch.attention_mask.unique().tolist()) == {0.0, float("-inf")}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"prompt": "q", "completion": "a"}


@pytest.mark.parametrize(
    "bad,overrides,message",
    [
        ({"messages": "hi"}, {}, "field 'messages' must be a non-empty list"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
            {},
            "field 'messages': message 1 needs a string 'content'",
        ),
        ({"messages": [{"content": "q"}]}, {}, "field 'messages': message 0 needs a string 'role'"),
        ({"messages": [{"role": "user", "content": "q"}]}, {}, "field 'messages': no assistant message"),
        ({"prompt": "q", "completion": 3}, {}, "field 'completion' must be a string, got int"),
        ({"prompt": 5, "completion": "a"}, {}, "field 'prompt': prompt must be a string or"),
        ({"question": "q"}, {}, "missing field 'messages' \\(or 'prompt' and 'completion'\\)"),
        ({"prompt": "q", "completion": "a"}, {"completion_field": "answer"}, "field 'answer' must be"),
        ('{"prompt": "q", ', {}, "invalid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, bad, overrides, message):
    path = _write(tmp_path / "sft.jsonl", [GOOD, GOOD, bad])
    if overrides:  # with a renamed field the good rows are bad too: line 1
        path = _write(tmp_path / "sft.jsonl", [bad])
    line = 1 if overrides else 3
    with pytest.raises(DataError, match=f"{path}:{line}: {message}"):
        load_conversations(SFTDataConfig(path=str(path), **overrides))


def test_heldout_split_keeps_each_prompt_on_one_side(tmp_path):
    rows = [{"prompt": f"question {i % 6}", "completion": f"answer {i}"} for i in range(30)]
    path = _write(tmp_path / "sft.jsonl", rows)
    train, held = load_conversations(SFTDataConfig(path=str(path), heldout_fraction=0.5))
    # 6 distinct prompts x 5 completions each: a prompt's 5 rows land on one side together
    prompts = [{c.messages[0]["content"] for c in side} for side in (train, held)]
    assert not prompts[0] & prompts[1]
    assert len(train) % 5 == 0 and len(held) % 5 == 0 and len(train) + len(held) == 30
    # fraction 0 holds nothing out; a heldout_path is read as is
    train, held = load_conversations(SFTDataConfig(path=str(path), heldout_fraction=0.0))
    assert (len(train), len(held)) == (30, 0)
    other = _write(tmp_path / "held.jsonl", [GOOD])
    train, held = load_conversations(SFTDataConfig(path=str(path), heldout_path=str(other)))
    assert (len(train), [c.source for c in held]) == (30, [f"{other}:1"])
