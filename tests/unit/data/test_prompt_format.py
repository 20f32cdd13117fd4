"""Prompts as the user means them: chat template (auto) or the string exactly as written (none),
a system prompt either way, and chat-template variables."""

from __future__ import annotations

import pytest

from rlft.config.common import DataConfig
from rlft.data.prompts import PromptFormat, encode_prompts, prompt_text
from rlft.errors import DataError

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it."
    " User: What is 2 + 3? Assistant: <think>"
)


def test_none_tokenises_exactly_the_string(tiny_tok):
    fmt = PromptFormat.of(DataConfig(chat_template="none"))
    [ex], _ = encode_prompts([{"prompt": R1_ZERO}], tiny_tok, "prompt", fmt, 512, "error")
    assert ex.text == R1_ZERO
    assert ex.ids == tiny_tok(R1_ZERO, add_special_tokens=False)["input_ids"]


def test_none_puts_the_system_prompt_first_as_a_paragraph(tiny_tok):
    fmt = PromptFormat(system_prompt="Be brief.", chat_template="none")
    assert prompt_text(tiny_tok, "Q: 1+1?", fmt) == "Be brief.\n\nQ: 1+1?"


def test_auto_wraps_the_string_as_a_user_message_with_the_system_prompt(tiny_tok):
    text = prompt_text(tiny_tok, "Q: 1+1?", PromptFormat(system_prompt="Be brief."))
    # the tiny tokenizer's ChatML template (rlft.models.chat_template)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nQ: 1+1?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_kwargs_reach_the_template(tiny_tok):
    tok = type(tiny_tok).from_pretrained(tiny_tok.name_or_path)
    tok.chat_template = "{% if enable_thinking is false %}NO-THINK {% endif %}{{ messages[-1]['content'] }}"
    off = PromptFormat(chat_template_kwargs={"enable_thinking": False})
    assert prompt_text(tok, "hi", off) == "NO-THINK hi"
    assert prompt_text(tok, "hi", PromptFormat()) == "hi"


def test_none_refuses_chat_messages_and_names_the_row(tiny_tok):
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "_source": "d.jsonl:3"}]
    with pytest.raises(DataError, match=r"d\.jsonl:3.*chat_template=none needs string prompts"):
        encode_prompts(rows, tiny_tok, "prompt", PromptFormat(chat_template="none"), 512, "error")
