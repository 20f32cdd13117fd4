"""Preference data: pairwise rows and K-way rankings, read into one form (`Ranked`), and the
conversion of a ranking into its ordered pairs.

Accepted rows (any source `read_rows` reads: a file, a `datasets` dir, a hub id, a Dataset, a list):
- pairwise, explicit prompt: ``{"prompt", "chosen", "rejected", "margin"?}``, chosen / rejected
  being strings or lists of chat messages (the assistant's turn(s), TRL's conversational format)
- pairwise, implicit prompt (TRL): ``{"chosen", "rejected"}``, each the whole text or the whole
  conversation; the prompt is their shared start (`implicit_prompt`). Conversations that begin
  with a user or system message are read this way even when the row has a string `prompt`
  (as in UltraFeedback-binarized)
- K-way: ``{"prompt", "responses": [r0, ..., rK-1], "ranking": [2, [0, 3], 1]}`` where `ranking`
  lists response indices best to worst and a nested list is a group of tied responses
  (the format `rlft label export` writes). A `ties` field ``[[0, 3]]`` may instead name tied
  indices of a flat ranking.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlft.data.prompts import chat_text, to_messages
from rlft.data.rows import DataError, read_rows
from rlft.data.sources import source_name

Response = str | list[dict[str, Any]]  # an assistant reply, or several messages (a chat remainder)


@dataclass(frozen=True)
class Ranked:
    """One prompt's responses with their rank levels: levels[i] = 0 for the best group, 1 next..."""

    prompt: Any  # string or chat messages
    responses: tuple[Response, ...]
    levels: tuple[int, ...]
    margin: float = 0.0  # pairwise rows only: required score gap chosen - rejected
    source: str = "?"
    extra: Mapping[str, Any] = field(default_factory=dict)


def ranking_levels(ranking: Sequence[Any], k: int, where: str = "?") -> tuple[int, ...]:
    """Rank level of each of k responses from a best-to-worst ranking with nested tie groups.

    [2, [0, 3], 1] with k=4 -> response 2 level 0; 0 and 3 level 1; 1 level 2 -> (1, 2, 0, 1).
    """
    levels: dict[int, int] = {}
    for level, item in enumerate(ranking):
        group = item if isinstance(item, (list, tuple)) else [item]
        if not group:
            raise DataError(f"{where}: field 'ranking': empty tie group at position {level}")
        for idx in group:
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < k:
                raise DataError(f"{where}: field 'ranking': {idx!r} is not a response index 0..{k - 1}")
            if idx in levels:
                raise DataError(f"{where}: field 'ranking': response {idx} appears twice")
            levels[idx] = level
    if len(levels) != k:
        missing = sorted(set(range(k)) - set(levels))
        raise DataError(f"{where}: field 'ranking': responses {missing} are not ranked")
    return tuple(levels[i] for i in range(k))


def _apply_ties(ranking: list[Any], ties: Any, where: str) -> list[Any]:
    """Flat ranking + tie groups -> nested ranking (each group placed where its best member is)."""
    groups_ok = isinstance(ties, list) and all(
        isinstance(g, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in g) for g in ties
    )
    if not groups_ok:
        raise DataError(f"{where}: field 'ties' must be a list of lists of response indices, e.g. [[0, 3]]")
    if any(isinstance(i, (list, tuple)) for i in ranking):
        raise DataError(f"{where}: give ties either as nested lists in 'ranking' or in 'ties', not both")
    if len(set(ranking)) != len(ranking):
        dup = next(i for i in ranking if ranking.count(i) > 1)
        raise DataError(f"{where}: field 'ranking': response {dup} appears twice")
    group_of = {i: tuple(g) for g in ties for i in g}
    out, seen = [], set()
    for idx in ranking:
        group = group_of.get(idx, (idx,))
        if group in seen:
            continue
        seen.add(group)
        out.append(list(group) if len(group) > 1 else idx)
    return out


def chat_messages(value: Any, where: str, field: str) -> list[dict[str, Any]]:
    """A field's non-empty list of chat messages ({role, content} strings), copied; errors name the
    row and field."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of chat messages")
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise DataError(f"{where}: field '{field}': message {i} needs a string 'role'")
        if not isinstance(m.get("content"), str):
            raise DataError(f"{where}: field '{field}': message {i} needs a string 'content'")
    return [dict(m) for m in value]


def as_response(messages: Sequence[Mapping[str, Any]]) -> Response:
    """One assistant message -> its text (the common case); anything else stays a message list."""
    if len(messages) == 1 and messages[0]["role"] == "assistant":
        return messages[0]["content"]
    return [dict(m) for m in messages]


def response_messages(response: Response) -> list[dict[str, Any]]:
    """The messages a response adds after the prompt: a string is one assistant turn."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return [dict(m) for m in response]


def implicit_prompt(chosen: Any, rejected: Any, where: str = "?") -> tuple[Any, Response, Response]:
    """(prompt, chosen, rejected) of an implicit-prompt pair (TRL's format). Conversations: the
    prompt is the messages before the first that differs (normally all but the last assistant
    turn). Texts: their common start, cut back to the last whitespace before the first difference
    where that leaves both responses some text (so no word is split), stripped at the seam."""
    n = common_prefix_len(chosen, rejected)
    if isinstance(chosen, str):
        cut = next(
            (
                c
                for c in range(n, 0, -1)
                if chosen[c - 1].isspace() and chosen[c:].strip() and rejected[c:].strip()
            ),
            n,
        )
        prompt, chosen, rejected = chosen[:cut].rstrip(), chosen[cut:].lstrip(), rejected[cut:].lstrip()
        ok = bool(prompt.strip()) and bool(chosen.strip()) and bool(rejected.strip())
    else:
        ok = 0 < n < min(len(chosen), len(rejected))
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    if not ok:
        raise DataError(
            f"{where}: 'chosen' and 'rejected' must share a prompt and then differ (implicit prompt); "
            "or give the prompt in its own field"
        )
    if isinstance(prompt, str):
        return prompt, chosen, rejected
    return prompt, as_response(chosen), as_response(rejected)


def _pair(row: Mapping[str, Any], prompt_field: str, where: str) -> tuple[Any, Response, Response]:
    """(prompt, chosen, rejected) of a pairwise row, explicit or implicit prompt."""
    for key in ("chosen", "rejected"):
        if not isinstance(row.get(key), (str, list)):
            raise DataError(f"{where}: field '{key}' must be a string or a list of chat messages")
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise DataError(
            f"{where}: 'chosen' and 'rejected' must both be strings or both lists of chat messages"
        )
    if isinstance(chosen, list):
        chosen, rejected = chat_messages(chosen, where, "chosen"), chat_messages(rejected, where, "rejected")
        if chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
            return implicit_prompt(chosen, rejected, where)  # whole conversations
        if prompt_field not in row:
            raise DataError(
                f"{where}: missing field '{prompt_field}' ('chosen' / 'rejected' hold only assistant turns)"
            )
        return row[prompt_field], as_response(chosen), as_response(rejected)
    if prompt_field in row:
        return row[prompt_field], chosen, rejected
    try:
        return implicit_prompt(chosen, rejected, where)
    except DataError as e:
        raise DataError(f"{where}: missing field '{prompt_field}', and {str(e)[len(where) + 2 :]}") from None


def parse_preference_row(row: Mapping[str, Any], prompt_field: str = "prompt") -> Ranked:
    """A pairwise row (explicit or implicit prompt, strings or chat messages) or a K-way ranking
    row as `Ranked`; errors name the row (file:line) and field."""
    where = row.get("_source", "?")
    extra = {k: v for k, v in row.items() if k not in ("responses", "ranking", "ties", "_source")}
    if "chosen" in row or "rejected" in row:
        prompt, chosen, rejected = _pair(row, prompt_field, where)
        margin = row.get("margin", 0.0)
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not math.isfinite(margin):
            raise DataError(f"{where}: field 'margin' must be a number, got {margin!r}")
        return Ranked(prompt, (chosen, rejected), (0, 1), float(margin), where, extra)
    if prompt_field not in row:
        raise DataError(f"{where}: missing field '{prompt_field}'")
    responses = row.get("responses")
    strings = isinstance(responses, list) and all(isinstance(r, str) for r in responses)
    if not strings or len(responses) < 2:
        raise DataError(
            f"{where}: a preference row needs 'chosen'/'rejected' or 'responses' (a list of >= 2 strings)"
        )
    ranking = row.get("ranking")
    if not isinstance(ranking, list):
        raise DataError(f"{where}: field 'ranking' must be a list of response indices, best first")
    if "ties" in row and row["ties"] is not None:
        ranking = _apply_ties(ranking, row["ties"], where)
    levels = ranking_levels(ranking, len(responses), where)
    return Ranked(row[prompt_field], tuple(responses), levels, 0.0, where, extra)


def read_preferences(
    source: Any, prompt_field: str = "prompt", split: str = "train", config: str = ""
) -> list[Ranked]:
    """Every row of a preference source (a path or hub id read with `split` / `config`, or a
    Dataset / list of dicts) as `Ranked`; errors name file:line and field."""
    rows = read_rows(source, split, config=config)
    if not rows:
        raise DataError(f"{source_name(source)}: no preference rows")
    return [parse_preference_row(r, prompt_field) for r in rows]


def ranked_pairs(levels: Sequence[int]) -> list[tuple[int, int]]:
    """All ordered (better, worse) index pairs of a ranking: C(K,2) of them for a strict ranking
    (InstructGPT, Ouyang et al. 2022, sec. 3.5); tied responses form no pair."""
    k = len(levels)
    return [
        (i, j) if levels[i] < levels[j] else (j, i)
        for i in range(k)
        for j in range(i + 1, k)
        if levels[i] != levels[j]
    ]


def prompt_key(prompt: Any) -> str:
    return hashlib.sha256(repr(prompt).encode("utf-8")).hexdigest()


def split_by_prompt(rows: Sequence[Ranked], heldout_fraction: float) -> tuple[list[Ranked], list[Ranked]]:
    """Train / held-out split by a hash of the prompt, so every ranking of a prompt lands on the
    same side (no prompt leaks into the held-out pairs)."""
    train, held = [], []
    for r in rows:
        u = int(prompt_key(r.prompt)[:8], 16) / 0xFFFFFFFF
        (held if u < heldout_fraction else train).append(r)
    return train, held


def conversation_text(tok: Any, prompt: Any, response: Response, system_prompt: str | None = None) -> str:
    """The conversation a reward model reads: the prompt's messages, then the response (a string:
    the assistant turn; a message list: those turns), through the chat template."""
    msgs = to_messages(prompt, system_prompt) + response_messages(response)
    return tok.apply_chat_template(msgs, tokenize=False)


def encode_conversation(
    tok: Any, prompt: Any, response: Response, max_length: int, system_prompt: str | None = None
) -> tuple[list[int], int]:
    """(token ids of the whole conversation, how many of them are prompt). Longer than max_length:
    the first tokens are dropped (the prompt's start goes first; the response end is kept)."""
    full = tok(conversation_text(tok, prompt, response, system_prompt), add_special_tokens=False)["input_ids"]
    head = tok(chat_text(tok, prompt, system_prompt), add_special_tokens=False)["input_ids"]
    prompt_len = len(head) if full[: len(head)] == head else common_prefix_len(full, head)
    cut = max(0, len(full) - max_length)
    return full[cut:], max(0, prompt_len - cut)


def common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items the sequences a and b share: where a chat-template rendering of a
    conversation's prefix stops matching the rendering of the whole (token ids, here and in
    rlft.data.sft), or where an implicit-prompt pair's texts or messages part (`implicit_prompt`)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
