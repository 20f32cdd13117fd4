"""NonFiniteGuard (skip / abort after K in a row) and tokenizer preparation."""

from __future__ import annotations

import math

import pytest

from rlft.models.load import DEFAULT_CHAT_TEMPLATE, prepare_tokenizer
from rlft.models.tiny import build_tokenizer
from rlft.runtime.guard import NonFiniteError, NonFiniteGuard


def test_guard_skips_non_finite_and_resets_on_finite():
    g = NonFiniteGuard(limit=3)
    assert g.check(0.5, 1.0) is True
    assert g.check(math.nan, 1.0) is False  # NaN loss -> skip, 1 in a row
    assert g.check(0.5, math.inf) is False  # inf grad norm -> skip, 2 in a row
    assert g.check(0.5, 2.0) is True  # finite -> run resets to 0
    assert g.state_dict() == {"consecutive": 0, "skipped": 2}
    assert g.check(-math.inf, 1.0) is False
    assert g.state_dict() == {"consecutive": 1, "skipped": 3}


def test_guard_aborts_after_limit_in_a_row_with_message():
    g = NonFiniteGuard(limit=3)
    assert g.check(math.nan, math.nan) is False  # 1
    assert g.check(math.nan, 1.0) is False  # 2
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps with non-finite loss/grad norm") as e:
        g.check(1.0, math.nan)  # 3 = limit
    assert "lower the LR or check the rewards" in str(e.value)
    assert "grad_norm=nan" in str(e.value)


def test_guard_state_round_trip_keeps_the_run_going():
    g = NonFiniteGuard(limit=2)
    g.check(math.nan, 1.0)
    h = NonFiniteGuard(limit=2)
    h.load_state_dict(g.state_dict())
    # restored consecutive=1, so one more non-finite step reaches the limit of 2
    with pytest.raises(NonFiniteError, match="2 consecutive"):
        h.check(math.nan, 1.0)


def test_prepare_tokenizer_adds_pad_and_chatml_template():
    tok = build_tokenizer()
    tok.pad_token = None
    tok.chat_template = None
    assert tok.pad_token is None and not tok.chat_template
    out = prepare_tokenizer(tok)
    assert out is tok
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id == tok.eos_token_id
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    assert tok.padding_side == "left"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"


def test_prepare_tokenizer_keeps_existing_pad_and_template():
    tok = build_tokenizer()
    tok.chat_template = "{{ messages[0]['content'] }}"
    prepare_tokenizer(tok, padding_side="right")
    assert tok.pad_token == "<pad>" and tok.chat_template == "{{ messages[0]['content'] }}"
    assert tok.padding_side == "right"


def test_prepare_tokenizer_without_pad_or_eos_fails():
    tok = build_tokenizer()
    tok.pad_token = None
    tok.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        prepare_tokenizer(tok)
