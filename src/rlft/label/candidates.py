"""Candidate responses to rank: sample K per prompt with a model, or import them from JSONL.

Prompt ids: a row's `id` (as a string) or, without one, the first 12 hex digits of the prompt's
SHA-256, so re-running `serve` with the same file finds the prompts already in the db and
generates nothing new.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlft.data.rows import DataError, read_rows
from rlft.label.db import RESERVED_KEYS, Item, LabelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    model: str
    k: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 64


def row_id(row: Mapping[str, Any]) -> str:
    if row.get("id") is not None:
        return str(row["id"])
    return hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()[:12]


def row_extra(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fields carried through to the export under their own keys (e.g. `answer`)."""
    return {k: v for k, v in row.items() if k not in RESERVED_KEYS}


def check_rows(rows: Sequence[Mapping[str, Any]], need_responses: bool) -> None:
    """Every row has a string prompt (and >= 2 string responses); ids are unique."""
    seen: dict[str, str] = {}
    for row in rows:
        where = row.get("_source", "?")
        if not isinstance(row.get("prompt"), str):
            raise DataError(f"{where}: field 'prompt' must be a string")
        if need_responses:
            responses = row.get("responses")
            if not isinstance(responses, list) or len(responses) < 2:
                raise DataError(f"{where}: field 'responses' must be a list of >= 2 strings")
            if not all(isinstance(r, str) for r in responses):
                raise DataError(f"{where}: field 'responses' must hold strings only")
        rid = row_id(row)
        if rid in seen:
            raise DataError(f"{where}: prompt id {rid!r} repeats {seen[rid]} (give rows distinct ids)")
        seen[rid] = where


def import_responses(store: LabelStore, path: str) -> int:
    """Add rows ``{"prompt", "responses": [...], "id"?, extra...}``; return how many were new."""
    rows = read_rows(path)
    check_rows(rows, need_responses=True)
    items = [Item(row_id(r), r["prompt"], list(r["responses"]), row_extra(r)) for r in rows]
    return store.add_items(items)


def sample_responses(prompts: Sequence[str], settings: GenerationSettings) -> list[list[str]]:
    """K sampled completions per prompt (decoded, special tokens dropped), prompt-major."""
    import torch

    from rlft.data.prompts import chat_text
    from rlft.models.load import load_causal_lm, load_tokenizer, resolve_model_path
    from rlft.rollout.base import SamplingParams
    from rlft.rollout.factory import make_generator

    torch.manual_seed(settings.seed)
    path = resolve_model_path(settings.model)
    tok, model = load_tokenizer(path), load_causal_lm(path).eval()
    texts = [chat_text(tok, p) for p in prompts]
    prompt_ids = tok(texts, add_special_tokens=False)["input_ids"]
    gen = make_generator("hf", model, tok, batch_size=settings.batch_size)
    params = SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
    with torch.no_grad():
        out = gen.generate(prompt_ids, params, samples_per_prompt=settings.k)
    decoded = [tok.decode(ids, skip_special_tokens=True) for ids in out.response_ids]
    k = settings.k
    return [decoded[i * k : (i + 1) * k] for i in range(len(prompts))]


def generate_missing(store: LabelStore, prompts_path: str, settings: GenerationSettings) -> int:
    """Sample K responses for each prompt of the file not yet in the db; return how many were added."""
    if settings.k < 2:
        raise ValueError(f"--k must be >= 2 to rank responses, got {settings.k}")
    rows = read_rows(prompts_path)
    check_rows(rows, need_responses=False)
    known = store.prompt_ids()
    todo = [r for r in rows if row_id(r) not in known]
    if not todo:
        return 0
    log.info("sampling %d responses for each of %d prompts with %s", settings.k, len(todo), settings.model)
    responses = sample_responses([r["prompt"] for r in todo], settings)
    pairs = zip(todo, responses, strict=True)
    items = [Item(row_id(r), r["prompt"], resp, row_extra(r)) for r, resp in pairs]
    return store.add_items(items)
