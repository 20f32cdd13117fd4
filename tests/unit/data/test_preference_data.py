"""rlft.data.preferences: ranking levels, row parsing (pairwise, K-way, nested ties, `ties`),
errors naming file:line and field, the prompt-hash split and conversation encoding."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from rlft.data.preferences import (
    Ranked,
    common_prefix_len,
    conversation_text,
    encode_conversation,
    parse_preference_row,
    ranking_levels,
    read_preferences,
    split_by_prompt,
)
from rlft.data.prompts import chat_text
from rlft.data.rows import DataError

SRC = "prefs.jsonl:7"


def _kway(responses, ranking, **more):
    return {"prompt": "q", "responses": responses, "ranking": ranking, "_source": SRC, **more}


# ---------------------------------------------------------------- ranking_levels


def test_ranking_levels_nested_tie_group():
    # [2, [0, 3], 1]: response 2 at level 0; 0 and 3 tied at level 1; 1 at level 2
    assert ranking_levels([2, [0, 3], 1], 4) == (1, 2, 0, 1)


def test_ranking_levels_flat_and_all_tied():
    assert ranking_levels([1, 0], 2) == (1, 0)  # response 1 best
    assert ranking_levels([[0, 1, 2]], 3) == (0, 0, 0)
    assert ranking_levels([(1, 2), 0], 3) == (1, 0, 0)  # a tuple is a tie group too


@pytest.mark.parametrize(
    "ranking,k,message",
    [
        ([0, [1, 0]], 2, "response 0 appears twice"),
        ([0, 0], 2, "response 0 appears twice"),
        ([0, 2], 2, "2 is not a response index 0..1"),
        ([0, -1], 2, "-1 is not a response index 0..1"),
        ([0, True], 2, "True is not a response index 0..1"),  # a bool is not an index
        ([0, "1"], 2, "'1' is not a response index 0..1"),
        ([0, 1.0], 2, "1.0 is not a response index 0..1"),
        ([0], 3, r"responses \[1, 2\] are not ranked"),
        ([0, [], 1], 2, "empty tie group at position 1"),
    ],
)
def test_ranking_levels_errors_name_where_and_field(ranking, k, message):
    with pytest.raises(DataError, match=rf"^{re.escape(SRC)}: field 'ranking': {message}"):
        ranking_levels(ranking, k, SRC)


# ---------------------------------------------------------------- parse_preference_row


def test_pairwise_row_is_chosen_then_rejected_with_margin():
    row = {"prompt": "q", "chosen": "good", "rejected": "bad", "margin": 2, "_source": SRC, "id": 5}
    r = parse_preference_row(row)
    assert r.responses == ("good", "bad")
    assert r.levels == (0, 1)
    assert r.margin == 2.0 and isinstance(r.margin, float)
    assert r.source == SRC
    assert r.extra["id"] == 5 and "_source" not in r.extra


def test_pairwise_row_margin_defaults_to_zero():
    assert parse_preference_row({"prompt": "q", "chosen": "a", "rejected": "b"}).margin == 0.0


def test_kway_row_levels_and_zero_margin():
    r = parse_preference_row(_kway(["a", "b", "c", "d"], [2, [0, 3], 1]))
    assert r.responses == ("a", "b", "c", "d")
    assert r.levels == (1, 2, 0, 1)
    assert r.margin == 0.0
    assert "responses" not in r.extra and "ranking" not in r.extra


@pytest.mark.parametrize("flat", [[2, 0, 3, 1], [2, 3, 0, 1]])
def test_ties_field_gives_the_same_levels_as_nested_form(flat):
    # ties [[0, 3]] puts the group where its best member is: both flat orders -> [2, [0, 3], 1]
    nested = parse_preference_row(_kway(["a", "b", "c", "d"], [2, [0, 3], 1]))
    with_ties = parse_preference_row(_kway(["a", "b", "c", "d"], flat, ties=[[0, 3]]))
    assert with_ties.levels == nested.levels == (1, 2, 0, 1)
    assert "ties" not in with_ties.extra


def test_empty_ties_field_keeps_the_flat_ranking():
    assert parse_preference_row(_kway(["a", "b", "c"], [2, 0, 1], ties=[])).levels == (1, 2, 0)


@pytest.mark.parametrize(
    "row,message",
    [
        ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
        ({"prompt": "q", "rejected": "b"}, "field 'chosen' must be a string"),
        ({"prompt": "q", "chosen": "a"}, "field 'rejected' must be a string"),
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, "field 'chosen' must be a string"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}, "field 'margin' must be a number"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": True}, "field 'margin' must be a number"),
        (
            {"prompt": "q", "responses": ["a", 3], "ranking": [0, 1]},
            "'responses' \\(a list of >= 2 strings\\)",
        ),
        ({"prompt": "q", "responses": ["a"], "ranking": [0]}, "'responses' \\(a list of >= 2 strings\\)"),
        ({"prompt": "q", "responses": "ab", "ranking": [0, 1]}, "'responses' \\(a list of >= 2 strings\\)"),
        ({"prompt": "q", "responses": ["a", "b"]}, "field 'ranking' must be a list"),
        ({"prompt": "q", "responses": ["a", "b"], "ranking": "0,1"}, "field 'ranking' must be a list"),
        (
            {"prompt": "q", "responses": ["a", "b"], "ranking": [0, 0]},
            "field 'ranking': response 0 appears twice",
        ),
        (
            {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 1]},
            "field 'ranking': responses \\[2\\]",
        ),
    ],
)
def test_bad_rows_name_source_and_field(row, message):
    with pytest.raises(DataError, match=rf"^{re.escape(SRC)}: .*{message}"):
        parse_preference_row({**row, "_source": SRC})


@pytest.mark.parametrize(
    "ranking,ties",
    [([[0, 1], 2], [[0, 1]]), ([0, 1, 2], [0, 1]), ([0, 1, 2], "01")],
)
def test_malformed_ties_field_is_a_data_error(ranking, ties):
    try:
        parse_preference_row(_kway(["a", "b", "c"], ranking, ties=ties))
    except DataError as e:
        assert SRC in str(e) and "ties" in str(e)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{type(e).__name__}: {e}") from None
    else:
        raise AssertionError("accepted")


def test_duplicate_in_flat_ranking_is_rejected_with_ties_too():
    with pytest.raises(DataError, match="field 'ranking': response 0 appears twice"):
        parse_preference_row(_kway(["a", "b", "c"], [0, 1, 0, 2]))  # without ties: rejected (passes)
    with pytest.raises(DataError, match="field 'ranking': response 0 appears twice"):
        parse_preference_row(_kway(["a", "b", "c"], [0, 1, 0, 2], ties=[[1, 2]]))


@pytest.mark.parametrize("margin", [math.nan, math.inf])
def test_non_finite_margin_is_a_data_error(margin):
    with pytest.raises(DataError, match="margin"):
        parse_preference_row(
            {"prompt": "q", "chosen": "a", "rejected": "b", "margin": margin, "_source": SRC}
        )


# ---------------------------------------------------------------- read_preferences


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_preferences_mixed_rows_with_file_line_sources(tmp_path):
    p = _write(
        tmp_path / "prefs.jsonl",
        [
            json.dumps({"prompt": "a", "chosen": "x", "rejected": "y", "margin": 0.5}),
            "",
            json.dumps({"prompt": "b", "responses": ["r0", "r1", "r2"], "ranking": [1, [0, 2]]}),
        ],
    )
    rows = read_preferences(str(p))
    # the blank line 2 is skipped, so the K-way row is line 3
    assert [r.source for r in rows] == [f"{p}:1", f"{p}:3"]
    assert rows[0].levels == (0, 1) and rows[0].margin == 0.5
    assert rows[1].levels == (1, 0, 1) and rows[1].responses == ("r0", "r1", "r2")


def test_read_preferences_error_names_file_line_and_field(tmp_path):
    p = _write(
        tmp_path / "prefs.jsonl",
        [
            json.dumps({"prompt": "a", "chosen": "x", "rejected": "y"}),
            json.dumps({"prompt": "b", "responses": ["r0", "r1"], "ranking": [0, 5]}),
        ],
    )
    with pytest.raises(DataError, match=rf"^{re.escape(str(p))}:2: field 'ranking': 5 is not"):
        read_preferences(str(p))


def test_read_preferences_custom_prompt_field_and_empty_file(tmp_path):
    p = _write(tmp_path / "q.jsonl", [json.dumps({"question": "a", "chosen": "x", "rejected": "y"})])
    assert read_preferences(str(p), prompt_field="question")[0].prompt == "a"
    with pytest.raises(DataError, match=rf"{re.escape(str(p))}:1: missing field 'prompt'"):
        read_preferences(str(p))
    empty = _write(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no preference rows"):
        read_preferences(str(empty))


# ---------------------------------------------------------------- split_by_prompt


def _rows(prompts, per_prompt=1):
    return [Ranked(p, (f"a{j}", f"b{j}"), (0, 1)) for p in prompts for j in range(per_prompt)]


def test_split_by_prompt_keeps_every_ranking_of_a_prompt_on_one_side():
    rows = _rows([f"prompt {i}" for i in range(60)], per_prompt=3)
    train, held = split_by_prompt(rows, 0.3)
    train_p, held_p = {r.prompt for r in train}, {r.prompt for r in held}
    assert train_p.isdisjoint(held_p)
    assert len(train) + len(held) == 180
    assert 0 < len(held_p) < 60  # both sides non-empty at 0.3 over 60 prompts
    # every prompt keeps all 3 of its rankings, in their original order
    for side in (train, held):
        for p in {r.prompt for r in side}:
            assert [r.responses[0] for r in side if r.prompt == p] == ["a0", "a1", "a2"]


def test_split_by_prompt_is_deterministic_and_independent_of_row_order():
    rows = _rows([f"q{i}" for i in range(20)])
    _, held = split_by_prompt(rows, 0.5)
    _, held_rev = split_by_prompt(rows[::-1], 0.5)
    assert {r.prompt for r in held} == {r.prompt for r in held_rev}
    # pinned (sha256 of the prompt, so no PYTHONHASHSEED dependence): a change here silently
    # reshuffles every user's held-out set
    assert [r.prompt for r in held] == ["q0", "q1", "q2", "q3", "q9", "q10", "q12", "q15", "q17", "q19"]


def test_split_by_prompt_fraction_bounds_and_chat_prompts():
    rows = _rows([f"q{i}" for i in range(20)])
    assert split_by_prompt(rows, 0.0) == (rows, [])
    # a larger fraction only moves prompts into held-out (thresholding the same hash)
    held_small = {r.prompt for r in split_by_prompt(rows, 0.2)[1]}
    held_big = {r.prompt for r in split_by_prompt(rows, 0.6)[1]}
    assert held_small <= held_big
    assert (len(held_small), len(held_big)) == (3, 13)
    chat = [{"role": "user", "content": "hi"}]
    train, held = split_by_prompt(_rows([chat, [dict(chat[0])]]), 0.5)
    assert len(train) in (0, 2) and len(held) in (0, 2)  # equal message lists land together


# ---------------------------------------------------------------- conversation encoding


def test_conversation_text_is_prompt_template_plus_response_turn(tiny_tok):
    text = conversation_text(tiny_tok, "hi", "yes")
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
    # the prompt part is exactly what the RL loop's chat_text builds for the same prompt
    assert text.startswith(chat_text(tiny_tok, "hi"))


def test_encode_conversation_prompt_len_and_response_tokens(tiny_tok):
    ids, prompt_len = encode_conversation(tiny_tok, "hi", "yes", max_length=512)
    head = tiny_tok(chat_text(tiny_tok, "hi"), add_special_tokens=False)["input_ids"]
    # "<|im_start|>" "user" "\n" "hi" "<|im_end|>" "\n" "<|im_start|>" "assistant" "\n"
    # with a char tokenizer: 1 + 4 + 1 + 2 + 1 + 1 + 1 + 9 + 1 = 21
    assert prompt_len == len(head) == 21
    assert ids[:prompt_len] == head
    assert tiny_tok.decode(ids[prompt_len:]) == "yes<|im_end|>\n"
    assert len(ids) == 21 + 3 + 2


def test_encode_conversation_system_prompt_and_chat_messages(tiny_tok):
    ids, n = encode_conversation(tiny_tok, "hi", "ok", 512, system_prompt="S")
    assert tiny_tok.decode(ids[:n]).startswith("<|im_start|>system\nS<|im_end|>")
    assert tiny_tok.decode(ids[n:]) == "ok<|im_end|>\n"
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert encode_conversation(tiny_tok, msgs, "ok", 512) == (ids, n)


def test_encode_conversation_truncation_keeps_the_end(tiny_tok):
    full, n = encode_conversation(tiny_tok, "hi", "yes", max_length=512)  # 26 ids, 21 prompt
    ids, prompt_len = encode_conversation(tiny_tok, "hi", "yes", max_length=10)
    # 26 - 10 = 16 first tokens dropped: 21 - 16 = 5 prompt tokens ("tant\n") remain
    assert ids == full[-10:]
    assert prompt_len == 5
    assert tiny_tok.decode(ids[prompt_len:]) == "yes<|im_end|>\n"
    # shorter than the response: no prompt left, only the response's end
    ids, prompt_len = encode_conversation(tiny_tok, "hi", "yes", max_length=3)
    assert prompt_len == 0 and tiny_tok.decode(ids) == "s<|im_end|>\n"


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2  # one is a prefix of the other
    assert common_prefix_len([7], [1]) == 0
    assert common_prefix_len([], [1]) == 0
