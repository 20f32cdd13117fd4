"""TRL's dataset formats (https://huggingface.co/docs/trl/dataset_formats), standard and
conversational, across the trainers: RL prompts (prompt-only, prompt-completion), SFT (messages,
prompt-completion), reward model / DPO (explicit and implicit-prompt preference rows) and logit
distillation (prompt-completion).

The tiny tokenizer is character level with a ChatML template: every character is one token and
`<|im_start|>`, `<|im_end|>` are one token each, so token counts below are character counts.
"""

from __future__ import annotations

import datasets
import pytest
from test_sft_data import _spans as sft_spans

from rlft.config.distill import DistillDataConfig
from rlft.config.preference import PreferenceDataConfig
from rlft.config.sft import SFTDataConfig
from rlft.data.preferences import (
    conversation_text,
    encode_conversation,
    implicit_prompt,
    parse_preference_row,
    read_preferences,
)
from rlft.data.prompts import PromptFormat, encode_prompts, prompt_text
from rlft.data.rows import DataError
from rlft.data.sft import encode_conversations, load_conversations, read_conversations, row_conversation
from rlft.train.distill_logits import encode_completion_rows
from rlft.train.preference_data import load_split


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def _spans(mask) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of True (test_sft_data's helper)."""
    return sft_spans([], mask)


# ------------------------------------------------------------------ RL prompts


def test_rl_uses_the_prompt_of_prompt_only_and_prompt_completion_rows(tiny_tok):
    rows = [
        {"prompt": "The sky is", "_source": "standard prompt-only"},
        {"prompt": [user("What color is the sky?")], "_source": "conversational prompt-only"},
        {"prompt": "The sky is", "completion": " blue.", "_source": "standard prompt-completion"},
        {
            "prompt": [user("What color is the sky?")],
            "completion": [assistant("It is blue.")],
            "_source": "conversational prompt-completion",
        },
    ]
    examples, _ = encode_prompts(rows, tiny_tok, "prompt", PromptFormat(), 512, "error")
    assert [ex.text for ex in examples] == [prompt_text(tiny_tok, r["prompt"]) for r in rows]
    assert (
        examples[0].text
        == examples[2].text
        == "<|im_start|>user\nThe sky is<|im_end|>\n<|im_start|>assistant\n"
    )
    assert examples[1].text == examples[3].text
    assert examples[3].row["completion"] == [assistant("It is blue.")]  # the row travels to the rewards


# ------------------------------------------------------------------ SFT

CHAT = [user("hi"), assistant("yo there"), user("2+2?"), assistant("4")]


def test_sft_conversational_prompt_completion_trains_only_the_completion(tiny_tok):
    cfg = SFTDataConfig()
    messages = row_conversation({"messages": CHAT}, cfg)
    prompt_completion = row_conversation({"prompt": CHAT[:3], "completion": CHAT[3:]}, cfg)
    assert messages.messages == prompt_completion.messages == CHAT
    assert (messages.train_from, prompt_completion.train_from) == (0, 3)
    (ex_messages, ex_pc), _ = encode_conversations(tiny_tok, [messages, prompt_completion], 512, "error")
    assert ex_messages.ids == ex_pc.ids and len(ex_pc.ids) == 57
    # "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" = 21 tokens, "yo there<|im_end|>"
    # [21, 30), "\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n" 24 -> "4<|im_end|>"
    # [54, 56). A messages row trains every assistant turn; a prompt-completion row only the
    # completion, the earlier assistant turn being part of its prompt.
    assert _spans(ex_messages.loss_mask) == [(21, 30), (54, 56)]
    assert _spans(ex_pc.loss_mask) == [(54, 56)]
    assert tiny_tok.decode([t for t, m in zip(ex_pc.ids, ex_pc.loss_mask, strict=True) if m]) == "4<|im_end|>"


def test_sft_standard_and_conversational_prompt_completion_agree(tiny_tok):
    cfg = SFTDataConfig(system_prompt="Be brief.")
    rows = [
        {"messages": [user("hi"), assistant("yo there")]},
        {"prompt": "hi", "completion": "yo there"},
        {"prompt": [user("hi")], "completion": [assistant("yo there")]},
        {"prompt": [user("hi")], "completion": "yo there"},
    ]
    convs = [row_conversation(r, cfg) for r in rows]
    expected = [{"role": "system", "content": "Be brief."}, user("hi"), assistant("yo there")]
    assert all(c.messages == expected for c in convs)
    assert [c.train_from for c in convs] == [1, 2, 2, 2]  # after the system message; the user's prompt
    examples, _ = encode_conversations(tiny_tok, convs, 512, "error")
    assert len({ex.ids for ex in examples}) == 1 and len({ex.loss_mask for ex in examples}) == 1
    assert examples[0].n_targets == len("yo there") + 1  # + <|im_end|>


def test_sft_multi_message_completion_and_errors():
    cfg = SFTDataConfig()
    conv = row_conversation(
        {"prompt": [user("a")], "completion": [assistant("b"), user("c"), assistant("d")]}, cfg
    )
    assert conv.train_from == 1 and len(conv.messages) == 4
    bad = [
        ({"prompt": [user("a")], "completion": [user("b")]}, "field 'completion': no assistant message"),
        ({"prompt": [user("a")], "completion": []}, "field 'completion' must be a non-empty list"),
        (
            {"prompt": [user("a")], "completion": [{"role": "assistant"}]},
            "message 0 needs a string 'content'",
        ),
        # an assistant turn inside the prompt is not a completion
        (
            {"prompt": [user("a"), assistant("b"), user("c")], "completion": [user("d")]},
            "no assistant message",
        ),
    ]
    for row, message in bad:
        with pytest.raises(DataError, match=f"^f.jsonl:3: .*{message}"):
            row_conversation({**row, "_source": "f.jsonl:3"}, cfg)


def test_sft_reads_a_dataset_object_with_its_split(tiny_tok):
    rows = [{"id": i, "messages": [user(f"q{i}"), assistant(f"a{i}")]} for i in range(20)]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:2])}
    )
    convs = read_conversations(dd, SFTDataConfig(split="test"))
    assert [c.messages for c in convs] == [r["messages"] for r in rows[:2]]
    assert convs[0].source == "dataset[test]:row 1"
    train, held = load_conversations(SFTDataConfig(heldout_fraction=0.2), rows=rows)
    assert len(train) + len(held) == 20 and train


# ------------------------------------------------------------------ preference rows (RM, DPO)


def test_explicit_prompt_pairs_standard_and_conversational():
    standard = parse_preference_row({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."})
    assert (standard.prompt, standard.responses, standard.levels) == (
        "The sky is",
        (" blue.", " green."),
        (0, 1),
    )
    conversational = parse_preference_row(
        {
            "prompt": [user("What color is the sky?")],
            "chosen": [assistant("It is blue.")],
            "rejected": [assistant("It is green.")],
        }
    )
    assert conversational.prompt == [user("What color is the sky?")]
    assert conversational.responses == ("It is blue.", "It is green.")  # one assistant turn -> its text


def test_implicit_prompt_conversational_pair():
    q = [{"role": "system", "content": "Be kind."}, user("Hi"), assistant("Hello!"), user("Sky color?")]
    row = {"chosen": [*q, assistant("Blue.")], "rejected": [*q, assistant("Green.")], "_source": "p.jsonl:4"}
    r = parse_preference_row(row)
    # the prompt is every message before the first that differs: all but the last assistant turn
    assert r.prompt == q
    assert r.responses == ("Blue.", "Green.")
    assert r.levels == (0, 1) and r.source == "p.jsonl:4"
    # a string `prompt` next to whole conversations (UltraFeedback-binarized) changes nothing
    assert parse_preference_row({**row, "prompt": "Sky color?"}).prompt == q


def test_implicit_prompt_conversations_that_part_before_the_last_turn():
    chosen = [user("a"), assistant("b"), user("c"), assistant("d")]
    rejected = [user("a"), assistant("x")]
    prompt, c, r = implicit_prompt(chosen, rejected)
    assert prompt == [user("a")]
    assert c == [assistant("b"), user("c"), assistant("d")]  # several turns stay messages
    assert r == "x"


@pytest.mark.parametrize(
    "chosen,rejected,expected",
    [
        # common start "The sky is " ends at a space: prompt "The sky is", responses after it
        ("The sky is blue.", "The sky is green.", ("The sky is", "blue.", "green.")),
        # "It is gr|eat" vs "It is gr|een": cut back to the space, no word is split
        ("It is great", "It is green", ("It is", "great", "green")),
        # one is the start of the other: cut back so both keep some text
        ("Sky: blue", "Sky: blue, surely", ("Sky:", "blue", "blue, surely")),
        # no whitespace in the shared start: the character-wise common prefix
        ("2+2=4", "2+2=5", ("2+2=", "4", "5")),
        (
            "\n\nHuman: hi\n\nAssistant: hello",
            "\n\nHuman: hi\n\nAssistant: go away",
            ("\n\nHuman: hi\n\nAssistant:", "hello", "go away"),
        ),
    ],
)
def test_implicit_prompt_text_pairs(chosen, rejected, expected):
    r = parse_preference_row({"chosen": chosen, "rejected": rejected})
    assert (r.prompt, *r.responses) == expected


@pytest.mark.parametrize(
    "row,message",
    [
        ({"chosen": "a", "rejected": "b"}, "missing field 'prompt', and 'chosen' and 'rejected' must share"),
        ({"chosen": "same", "rejected": "same"}, "must share a prompt and then differ"),
        (
            {"chosen": [user("q"), assistant("a")], "rejected": [user("r"), assistant("a")]},
            "must share a prompt",
        ),
        ({"chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("a")]}, "then differ"),
        ({"prompt": "q", "chosen": "a", "rejected": [assistant("b")]}, "must both be strings or both lists"),
        ({"chosen": [assistant("a")], "rejected": [assistant("b")]}, "missing field 'prompt' \\('chosen'"),
        (
            {"prompt": "q", "chosen": [], "rejected": [assistant("b")]},
            "field 'chosen' must be a non-empty list",
        ),
        (
            {"prompt": "q", "chosen": [{"role": "assistant"}], "rejected": [assistant("b")]},
            "field 'chosen': message 0",
        ),
        ({"prompt": "q", "chosen": None, "rejected": "b"}, "field 'chosen' must be a string or a list"),
    ],
)
def test_preference_row_errors_name_the_row_and_field(row, message):
    with pytest.raises(DataError, match=f"^p.jsonl:9: .*{message}"):
        parse_preference_row({**row, "_source": "p.jsonl:9"})


def test_conversational_response_encodes_as_the_same_conversation(tiny_tok):
    prompt = [user("a")]
    # a one-turn response as text or as a message list is the same conversation
    assert conversation_text(tiny_tok, prompt, "b") == conversation_text(tiny_tok, prompt, [assistant("b")])
    ids, n = encode_conversation(tiny_tok, prompt, [assistant("b"), user("c"), assistant("d")], 512)
    # prompt "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n" = 1+5+1+1+1+1+10 = 20 tokens
    assert n == 20
    assert (
        tiny_tok.decode(ids[n:])
        == "b<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\nd<|im_end|>\n"
    )


def test_rm_and_dpo_read_trl_rows_from_a_dataset_and_kway_rows_still_work():
    q = [user(f"question {i}") for i in range(30)]
    rows = [{"chosen": [q[i], assistant("good")], "rejected": [q[i], assistant("bad")]} for i in range(30)]
    rows.append({"prompt": "k-way", "responses": ["r0", "r1", "r2"], "ranking": [2, [0, 1]]})
    dd = datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(rows[:30])})
    ranked = read_preferences(dd, split="train_prefs")
    assert [r.prompt for r in ranked] == [[q[i]] for i in range(30)]
    assert {r.responses for r in ranked} == {("good", "bad")}
    train, held = load_split(PreferenceDataConfig(heldout_fraction=0.2), rows=rows)
    assert len(train) + len(held) == 31 and train and held
    kway = next(r for r in train + held if r.prompt == "k-way")
    assert kway.levels == (1, 1, 0)


# ------------------------------------------------------------------ distillation


def test_distill_offline_takes_conversational_completions(tiny_tok):
    data = DistillDataConfig()
    rows = [
        {"prompt": "hi", "completion": "yo there"},
        {"prompt": [user("hi")], "completion": [assistant("yo there")]},
    ]
    standard, conversational = encode_completion_rows(tiny_tok, rows, data)
    assert standard == conversational
    assert tiny_tok.decode(list(standard.response_ids)) == "yo there<|im_end|>"
    with pytest.raises(DataError, match="d.jsonl:2: field 'completion': message 0 needs a string 'role'"):
        encode_completion_rows(tiny_tok, [{"prompt": "q", "completion": [{}], "_source": "d.jsonl:2"}], data)
