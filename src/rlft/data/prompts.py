"""Turn dataset rows into chat-formatted, tokenized prompts, and stream them with a resumable cursor."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.data import arithmetic, coding
from rlft.data.heldout import split_heldout
from rlft.data.quarantine import REPORT_FILE, DataReport
from rlft.data.rows import DataError, keep_valid_rows, read_rows, reject, require_fields
from rlft.data.sources import is_streaming
from rlft.rewards.countdown import countdown_rows

log = logging.getLogger(__name__)
BUILTIN_TRAIN_ROWS = 50_000


@dataclass(frozen=True)
class PromptExample:
    text: str  # prompt after the chat template
    ids: list[int]  # its tokens
    row: Mapping[str, Any]  # the dataset row (answer, tests, ...)


@dataclass(frozen=True)
class PromptFormat:
    """How a row's prompt becomes text: with the chat template ("auto") or exactly as written
    ("none"), a system prompt, and extra chat-template variables."""

    system_prompt: str | None = None
    chat_template: str = "auto"
    chat_template_kwargs: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, data_cfg: Any) -> PromptFormat:
        """The format a data config asks for (any config with some of these three fields)."""
        return cls(
            getattr(data_cfg, "system_prompt", None),
            getattr(data_cfg, "chat_template", "auto"),
            dict(getattr(data_cfg, "chat_template_kwargs", None) or {}),
        )

    def __post_init__(self) -> None:
        if self.chat_template not in ("auto", "none"):
            raise DataError(f"chat_template must be 'auto' or 'none', got {self.chat_template!r}")


PromptFormatLike = PromptFormat | str | None  # a bare string (or None) is a system prompt


def as_format(fmt: PromptFormatLike) -> PromptFormat:
    return fmt if isinstance(fmt, PromptFormat) else PromptFormat(system_prompt=fmt)


def prompt_text(tok: Any, prompt: Any, fmt: PromptFormatLike = None) -> str:
    """The text generation starts from: the chat template applied with the generation prompt, or
    (chat_template=none) the string itself, after the system prompt's paragraph when there is one."""
    fmt = as_format(fmt)
    if fmt.chat_template == "none":
        if not isinstance(prompt, str):
            raise DataError(
                "data.chat_template=none needs string prompts (got chat messages): "
                "use chat_template=auto for conversational rows"
            )
        return f"{fmt.system_prompt}\n\n{prompt}" if fmt.system_prompt else prompt
    msgs = to_messages(prompt, fmt.system_prompt)
    kwargs = dict(fmt.chat_template_kwargs or {})
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kwargs)


def to_messages(prompt: Any, system_prompt: str | None) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
        return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + msgs
    if isinstance(prompt, list) and all(_is_message(m) for m in prompt):
        return [dict(m) for m in prompt]
    raise DataError(
        f"prompt must be a string or a list of chat messages ({{role, content}} strings), "
        f"got {type(prompt).__name__}"
    )


def _is_message(m: Any) -> bool:
    return isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def chat_text(tok: Any, prompt: Any, fmt: PromptFormatLike = None) -> str:
    """Alias of prompt_text (the name older callers use)."""
    return prompt_text(tok, prompt, fmt)


def encode_prompts(
    rows: Sequence[Mapping[str, Any]],
    tok: Any,
    prompt_field: str,
    fmt: PromptFormatLike,
    max_tokens: int,
    overlong: str,
    report: DataReport | None = None,
) -> tuple[list[PromptExample], dict[str, int]]:
    """Format (`fmt`: PromptFormat, or a system prompt) and tokenize rows; apply the over-long
    policy; return examples and counts.
    A prompt of the wrong type or with no text is an error naming its row, or, given a report,
    recorded there and left out (then an empty result is the caller's to judge)."""
    texts, kept = [], []
    for row in rows:
        where = str(row.get("_source", "?"))
        prompt = row.get(prompt_field)
        try:
            msgs = to_messages(prompt, None)
            text = prompt_text(tok, prompt, fmt)
        except DataError as e:
            reject(report, where, f"field '{prompt_field}': {e}")
            continue
        if not any(m["content"].strip() for m in msgs if m["role"] != "system"):
            reject(report, where, f"field '{prompt_field}' has no text")
            continue
        texts.append(text)
        kept.append(row)
    ids_list = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    examples, counts, too_long = [], {"truncated": 0, "skipped": 0}, []
    for row, text, ids in zip(kept, texts, ids_list, strict=True):
        if not ids:  # generation needs at least one prompt token
            reject(report, str(row.get("_source", "?")), "prompt is empty after the chat template")
            continue
        if len(ids) > max_tokens:
            too_long.append(f"{row.get('_source', '?')} ({len(ids)} tokens)")
            if overlong == "skip":
                counts["skipped"] += 1
                continue
            if overlong == "truncate":
                counts["truncated"] += 1
                ids = ids[-max_tokens:]  # keep the end: the question and the assistant turn
                text = tok.decode(ids)
        examples.append(PromptExample(text=text, ids=list(ids), row=row))
    _report_overlong(too_long, max_tokens, overlong, report)
    if not examples and report is None:
        raise DataError("no usable prompts left after filtering")
    return examples, counts


def _report_overlong(too_long: list[str], max_tokens: int, overlong: str, report: DataReport | None) -> None:
    """Fail on over-long prompts (policy error), else warn and note them in the report."""
    if too_long and overlong == "error":
        raise DataError(
            f"{len(too_long)} prompt(s) longer than data.max_prompt_tokens={max_tokens}: "
            + ", ".join(too_long[:5])
            + " (set data.overlong_prompts=truncate or skip)"
        )
    if report is not None:
        report.notes["overlong_prompts"] = {"policy": overlong, "max_tokens": max_tokens, "rows": too_long}
    if too_long:
        log.warning(
            "%d prompt(s) over %d tokens were %s",
            len(too_long),
            max_tokens,
            "truncated" if overlong == "truncate" else "skipped",
        )


def load_prompt_examples(
    cfg: Any,
    tok: Any,
    max_tokens: int,
    seed: int,
    needed: int,
    out_dir: Path,
    eval_cfg: Any = None,
    rows: Any = None,
) -> tuple[list[PromptExample], dict[str, int]]:
    """Training prompts of data config `cfg` (or of `rows` given in Python), validated up front:
    bad rows (unreadable lines, missing / empty / wrongly typed prompts, duplicate ids) are left
    out while their share is at most cfg.max_bad_fraction, else the load fails;
    out_dir/data_report.json lists them all. With `eval_cfg` (an RL run's eval section), the rows
    held out for evaluation are left out too (train_and_heldout_rows)."""
    report = DataReport(cfg.max_bad_fraction, out_dir / REPORT_FILE)
    rows, _ = train_and_heldout_rows(cfg, eval_cfg, seed, needed, report, rows)
    examples, counts = encode_prompts(
        rows, tok, cfg.prompt_field, PromptFormat.of(cfg), max_tokens, cfg.overlong_prompts, report
    )
    report.notes["prompts"] = len(examples)
    report.finish()
    if not examples:
        raise DataError(f"no usable prompts left after filtering (see {report.path})")
    return examples, counts


def load_train_rows(
    cfg: Any,
    seed: int,
    needed: int = BUILTIN_TRAIN_ROWS,
    report: DataReport | None = None,
    rows: Any = None,
) -> list[dict[str, Any]]:
    """Training rows from `rows` (a `datasets` Dataset / DatasetDict / IterableDataset or a list of
    dicts, given in Python), else from data.path (a local file or dir, or a hub id read with
    data.config / data.split / data.streaming), else `needed` rows from the built-in generator.
    A streamed source is read for `needed` rows. With a report, bad rows are recorded there and
    left out (see `keep_valid_rows`)."""
    source = rows if rows is not None else cfg.path
    if rows is not None or cfg.path:
        streaming = bool(getattr(cfg, "streaming", False)) or is_streaming(source)
        got = read_rows(
            source,
            cfg.split,
            report,
            config=getattr(cfg, "config", ""),
            streaming=streaming,
            limit=needed if streaming else 0,
        )
        if report is not None:
            return keep_valid_rows(got, [cfg.prompt_field], report, cfg.id_field)
        require_fields(got, [cfg.prompt_field])
        return got
    if cfg.builtin == "arithmetic":
        stream = arithmetic.train_rows(cfg.arithmetic, seed)
    elif cfg.builtin == "coding":
        stream = coding.train_rows(seed)
    elif cfg.builtin == "countdown":
        stream = countdown_rows(seed)
    else:
        raise DataError(
            f"unknown built-in dataset 'data.builtin={cfg.builtin}' "
            "(available: arithmetic, coding, countdown)"
        )
    return [next(stream) for _ in range(max(needed, 1))]


def load_eval_rows(
    path: Any, data_cfg: Any, limit: int = 0, split: str = "", fields: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Held-out rows from `path` (a file, `datasets` dir, hub id or rows object, read with `split`,
    else data.split; data.config when it is data.path) or the built-in task's held-out split.
    `fields`: those each row must have (default: the prompt and answer fields)."""
    if isinstance(path, str) and not path:
        rows = arithmetic.heldout_rows(data_cfg.arithmetic)
        return rows[:limit] if limit else rows
    split = split or getattr(data_cfg, "split", "train")
    same = isinstance(path, str) and path == getattr(data_cfg, "path", None)
    config = getattr(data_cfg, "config", "") if same else ""
    rows = read_rows(path, split, config=config, limit=limit)
    need = [data_cfg.prompt_field, data_cfg.answer_field] if fields is None else list(fields)
    require_fields(rows, need)
    return rows


def train_and_heldout_rows(
    cfg: Any,
    eval_cfg: Any,
    seed: int,
    needed: int = BUILTIN_TRAIN_ROWS,
    report: DataReport | None = None,
    rows: Any = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-out rows) of data config `cfg`: a user dataset (data.path, or `rows`
    given in Python) with no eval.path loses its held-out share (eval.heldout_fraction, by a seeded
    hash of each prompt: rlft.data.heldout), which training never sees; otherwise nothing is held
    out here. eval_cfg None, or no held-out evaluation at all (eval.before, after and every off):
    nothing is held out, every row is trained on."""
    train = load_train_rows(cfg, seed, needed, report, rows=rows)
    user_data = rows is not None or bool(cfg.path)
    evaluates = eval_cfg is not None and (eval_cfg.before or eval_cfg.after or eval_cfg.every > 0)
    if not evaluates or not user_data or getattr(eval_cfg, "path", ""):
        return train, []
    return split_heldout(train, eval_cfg.heldout_fraction, seed, cfg.prompt_field)


class PromptStream:
    """Endless, seeded, resumable stream of prompts: epoch-wise shuffles, cursor = (epoch, index)."""

    def __init__(self, examples: Sequence[PromptExample], seed: int, shuffle: bool = True):
        self.examples = examples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(len(self.examples)))
        if self.shuffle:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[PromptExample]:
        out = []
        for _ in range(n):
            if self.index >= len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._make_order()
            out.append(self.examples[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._make_order()
