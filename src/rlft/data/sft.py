"""Supervised data: chat or prompt/completion rows -> token ids with an assistant-only loss mask,
and their layout as right-padded or packed batches.

Accepted rows (any source `read_rows` reads: a file, a `datasets` dir, a hub id, a Dataset, a list):
- chat: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...]}``; every
  assistant turn is a target
- prompt-completion (TRL's standard and conversational forms): ``{"prompt": str or chat messages,
  "completion": str or chat messages}``; a string completion is one assistant turn, and only the
  completion's assistant turns are targets (not assistant turns inside the prompt)

The mask is found by rendering the conversation prefix by prefix through the chat template, so it
needs no `{% generation %}` support: assistant turn i owns the tokens between
render(messages[:i], add_generation_prompt=True) and render(messages[:i+1]), less the separator
whitespace after its end-of-turn token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jinja2 import TemplateError

from rlft.data.preferences import chat_messages, common_prefix_len, prompt_key, response_messages
from rlft.data.prompts import to_messages
from rlft.data.quarantine import DataReport
from rlft.data.rows import DataError, keep_valid_rows, read_rows
from rlft.data.sources import source_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, Any]]
    source: str = "?"  # file:line
    train_from: int = 0  # assistant turns from this message index on are targets (the completion)


@dataclass(frozen=True)
class SFTExample:
    ids: tuple[int, ...]  # the whole conversation's token ids
    loss_mask: tuple[bool, ...]  # True = an assistant token (a training target); never the first
    source: str = "?"

    @property
    def n_targets(self) -> int:
        return sum(self.loss_mask)


@dataclass(frozen=True)
class SFTBatch:
    input_ids: torch.Tensor  # [B, L] long, right-padded
    attention_mask: torch.Tensor  # [B, L] long 1 = token; packed: [B, 1, L, L] float 0 / -inf
    position_ids: torch.Tensor  # [B, L] long, restarting at 0 for each example
    loss_mask: torch.Tensor  # [B, L] bool: True where the token is an assistant target

    @property
    def n_targets(self) -> int:
        return int(self.loss_mask.sum())


def row_conversation(row: Mapping[str, Any], cfg: Any) -> Conversation:
    """A row's messages (system_prompt prepended when it has no system message); errors name
    file:line and field."""
    where = row.get("_source", "?")
    start = 0
    if cfg.messages_field in row:
        field, msgs = cfg.messages_field, chat_messages(row[cfg.messages_field], where, cfg.messages_field)
    elif cfg.prompt_field in row:
        field = cfg.completion_field
        completion = row.get(field)
        if isinstance(completion, list):
            completion = chat_messages(completion, where, field)
        elif isinstance(completion, str):
            completion = response_messages(completion)
        else:
            kind = type(completion).__name__  # (a list of chat messages is the other accepted form)
            raise DataError(f"{where}: field '{field}' must be a string, got {kind}")
        try:
            prompt = to_messages(row[cfg.prompt_field], None)
        except DataError as e:
            raise DataError(f"{where}: field '{cfg.prompt_field}': {e}") from None
        msgs, start = prompt + completion, len(prompt)
    else:
        raise DataError(
            f"{where}: missing field '{cfg.messages_field}' "
            f"(or '{cfg.prompt_field}' and '{cfg.completion_field}')"
        )
    if not any(m["role"] == "assistant" for m in msgs[start:]):
        raise DataError(f"{where}: field '{field}': no assistant message to learn from")
    if cfg.system_prompt and msgs[0]["role"] != "system":
        msgs, start = [{"role": "system", "content": cfg.system_prompt}, *msgs], start + 1
    return Conversation(msgs, where, start)


def read_conversations(source: Any, cfg: Any, report: DataReport | None = None) -> list[Conversation]:
    """A source's conversations (a path or hub id read with cfg.split / cfg.config, or a Dataset /
    list of dicts); with a report, bad lines and rows (unreadable, malformed, repeated id) are
    recorded there and left out instead of raising."""
    rows = read_rows(source, cfg.split, report, config=getattr(cfg, "config", ""))
    if not rows and report is None:
        raise DataError(f"{source_name(source)}: no rows")
    if report is None:
        return [row_conversation(r, cfg) for r in rows]
    convs = []
    for row in keep_valid_rows(rows, [], report, cfg.id_field):
        try:
            convs.append(row_conversation(row, cfg))
        except DataError as e:
            where = row.get("_source", "?")
            report.reject(where, str(e).removeprefix(f"{where}: "))
    return convs


def load_conversations(
    cfg: Any, report: DataReport | None = None, rows: Any = None
) -> tuple[list[Conversation], list[Conversation]]:
    """Training and held-out conversations: a separate file, or a split of `path` (or of `rows`, a
    Dataset / list of dicts given in Python) by a hash of each conversation's prompt (the messages
    before its first assistant turn). A report is finished (written; an error when too many rows
    are bad) once both files are read."""
    if rows is None and not cfg.path:
        raise DataError("data.path is empty: give a JSONL of chat `messages` or prompt/completion rows")
    convs = read_conversations(cfg.path if rows is None else rows, cfg, report)
    held_file = read_conversations(cfg.heldout_path, cfg, report) if cfg.heldout_path else []
    if report is not None:
        report.finish()
    if not convs:
        raise DataError(f"{source_name(cfg.path if rows is None else rows)}: no usable rows")
    if cfg.heldout_path:
        return convs, held_file
    train, held = [], []
    for c in convs:
        first = next(i for i, m in enumerate(c.messages) if m["role"] == "assistant")
        u = int(prompt_key(c.messages[:first])[:8], 16) / 0xFFFFFFFF
        (held if u < cfg.heldout_fraction else train).append(c)
    if not train:
        raise DataError(f"{cfg.path}: every row fell into the held-out split; lower heldout_fraction")
    return train, held


def _ids(tok: Any, messages: Sequence[Mapping[str, Any]], generation_prompt: bool = False) -> list[int]:
    text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    return tok(text, add_special_tokens=False)["input_ids"]


def assistant_mask(
    tok: Any, messages: Sequence[Mapping[str, Any]], train_from: int = 0
) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation and a mask that is True on exactly the tokens of the assistant
    turns from message `train_from` on: their content and end-of-turn token, not the role header
    or the separator after it."""
    full = _ids(tok, messages)
    mask = [False] * len(full)
    special = set(tok.all_special_ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < train_from:
            continue
        start = common_prefix_len(_ids(tok, messages[:i], generation_prompt=True), full)
        end = common_prefix_len(_ids(tok, messages[: i + 1]), full)
        while end > start and full[end - 1] not in special and not tok.decode([full[end - 1]]).strip():
            end -= 1  # "\n" after <|im_end|>: the model stops at the end-of-turn token
        mask[start:end] = [True] * (end - start)
    if mask:
        mask[0] = False  # nothing predicts the first token
    return full, mask


def encode_conversations(
    tok: Any, convs: Sequence[Conversation], max_length: int, overlong: str
) -> tuple[list[SFTExample], dict[str, int]]:
    """Examples and counts: over-long ones truncated (first max_length tokens kept), skipped or an
    error; examples left with no assistant token are dropped (counted as no_targets)."""
    examples, counts, too_long = [], {"truncated": 0, "skipped": 0, "no_targets": 0}, []
    for c in convs:
        try:
            ids, mask = assistant_mask(tok, c.messages, c.train_from)
        except (TemplateError, TypeError, ValueError) as e:
            raise DataError(f"{c.source}: the chat template rejects this conversation: {e}") from None
        if len(ids) > max_length:
            too_long.append(f"{c.source} ({len(ids)} tokens)")
            if overlong == "skip":
                counts["skipped"] += 1
                continue
            counts["truncated"] += 1
            ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            counts["no_targets"] += 1
            continue
        examples.append(SFTExample(tuple(ids), tuple(mask), c.source))
    if too_long and overlong == "error":
        raise DataError(
            f"{len(too_long)} example(s) longer than data.max_length={max_length}: "
            + ", ".join(too_long[:5])
            + " (set data.overlong=truncate or skip)"
        )
    if too_long:
        log.warning("%d example(s) over %d tokens: %s", len(too_long), max_length, counts)
    return examples, counts


def pack(examples: Sequence[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """First fit: each example goes into the first row with room left (rows of <= max_length
    tokens; a longer example is a row of its own)."""
    rows: list[list[SFTExample]] = []
    room: list[int] = []
    for ex in examples:
        n = len(ex.ids)
        i = next((i for i, r in enumerate(room) if n <= r), None)
        if i is None:
            rows.append([ex])
            room.append(max_length - n)
        else:
            rows[i].append(ex)
            room[i] -= n
    return rows


def padded_batch(examples: Sequence[SFTExample], pad_id: int) -> SFTBatch:
    """One example per row, right-padded, with a 2D attention mask."""
    width = max(len(ex.ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    loss = torch.zeros((len(examples), width), dtype=torch.bool)
    for b, ex in enumerate(examples):
        n = len(ex.ids)
        ids[b, :n] = torch.tensor(ex.ids)
        attn[b, :n] = 1
        loss[b, :n] = torch.tensor(ex.loss_mask)
    positions = torch.arange(width).expand(len(examples), width).clone()
    return SFTBatch(ids, attn, positions, loss)


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] float mask from segment ids [B, L]: 0 where query q may attend key k (same
    segment and k <= q), -inf elsewhere."""
    length = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = same & causal
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, None]


def packed_batch(rows: Sequence[Sequence[SFTExample]], pad_id: int) -> SFTBatch:
    """Examples laid end to end in each row; positions restart at 0 per example and the 4D mask
    is block-diagonal causal, so no token attends across examples (each pad token attends only
    to itself, so no query row is all -inf)."""
    width = max(sum(len(ex.ids) for ex in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.zeros((len(rows), width), dtype=torch.long)
    loss = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        offset = 0
        for k, ex in enumerate(row):
            span = slice(offset, offset + len(ex.ids))
            ids[b, span] = torch.tensor(ex.ids)
            positions[b, span] = torch.arange(len(ex.ids))
            segments[b, span] = k
            loss[b, span] = torch.tensor(ex.loss_mask)
            offset += len(ex.ids)
        segments[b, offset:] = torch.arange(len(row), len(row) + width - offset)
    return SFTBatch(ids, block_causal_mask(segments), positions, loss)


def sft_batches(
    examples: Sequence[SFTExample], pad_id: int, microbatch_size: int, packing: bool, max_length: int
) -> list[SFTBatch]:
    """The forward passes for `examples`: microbatch_size padded examples each, or (packing)
    microbatch_size packed rows each."""
    mb = microbatch_size
    if packing:
        rows = pack(examples, max_length)
        return [packed_batch(rows[i : i + mb], pad_id) for i in range(0, len(rows), mb)]
    return [padded_batch(examples[i : i + mb], pad_id) for i in range(0, len(examples), mb)]
