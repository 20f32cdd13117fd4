"""The shapes a reward function may have, told apart by its signature, and how TRL's is called.

- per sample, rlft's own: `fn(prompt, completion, example, **kwargs) -> float | None`;
- rlft's batched shape (`fn.rlft_batched = True`): `fn(prompts, completions, examples, **kwargs)
  -> (values, metrics)`, for reward models;
- TRL's batched shape, recognised by a parameter named `completions`: `fn(prompts=...,
  completions=..., completion_ids=..., **columns) -> list[float | None]`. `prompts` are the
  dataset's own prompts (strings, or message lists for conversational data), `completions` the
  completions in the same format (a string, or `[{"role": "assistant", "content": ...}]`), and
  every other dataset column arrives as a keyword holding one value per completion.

`None` from any shape means "does not apply to this sample": the term leaves that sample out (it
adds nothing to its score and is left out of the term's mean). An `async def` function is awaited.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlft.errors import RunError
from rlft.rewards.parallel import CallOutcome, raised

TRL_ARGUMENTS = ("prompts", "completions", "completion_ids")


class ShapeError(ValueError):
    """A batched reward returned something else than one value per completion."""


class MissingColumns(RunError):
    """A TRL-shaped reward asks for a keyword that no dataset column supplies."""


def is_trl_shaped(fn: Callable) -> bool:
    """TRL's reward-function contract: the completions arrive as the keyword `completions`."""
    try:
        return "completions" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable: rlft's per-sample shape
        return False


def resolved(value: Any) -> Any:
    """`value`, or what it resolves to when an `async def` function returned a coroutine."""
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def call_all_async(fn: Callable, calls: Sequence[tuple], kwargs: Mapping[str, Any]) -> list[CallOutcome]:
    """An `async def` per-sample function over every call, concurrently in one event loop."""

    async def gather() -> list[Any]:
        return await asyncio.gather(*(fn(*args, **kwargs) for args in calls), return_exceptions=True)

    return [
        CallOutcome(error=raised(r), exception=r) if isinstance(r, Exception) else CallOutcome(value=r)
        for r in asyncio.run(gather())
    ]


def dataset_columns(rows: Sequence[Mapping[str, Any]], prompt_field: str) -> dict[str, list[Any]]:
    """Every column of the rows but the prompt (rlft's own `_`-prefixed keys left out): one list
    each, None where a row lacks the column."""
    names = sorted({k for r in rows for k in r if k != prompt_field and not k.startswith("_")})
    return {k: [r.get(k) for r in rows] for k in names}


def missing_columns(fn: Callable, columns: Mapping[str, Any]) -> list[str]:
    """The function's required keywords that neither TRL's arguments nor the dataset supply."""
    missing = []
    for p in inspect.signature(fn).parameters.values():
        required = p.default is inspect.Parameter.empty
        named = p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if required and named and p.name not in TRL_ARGUMENTS and p.name not in columns:
            missing.append(p.name)
    return missing


def trl_arguments(
    prompts: Sequence[str],
    completions: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    prompt_field: str,
    completion_ids: Sequence[Sequence[int]] | None,
) -> dict[str, Any]:
    """The keywords of a TRL-shaped call: the rows' own prompts (the templated text where a row has
    none), the completions in the prompts' format, completion_ids, and every dataset column."""
    raw = [r.get(prompt_field, text) for r, text in zip(rows, prompts, strict=True)]
    conversational = bool(raw) and all(isinstance(p, list) for p in raw)
    shaped: list[Any] = (
        [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
    )
    ids = [list(x) for x in completion_ids] if completion_ids is not None else None
    return {
        "prompts": raw,
        "completions": shaped,
        "completion_ids": ids,
        **dataset_columns(rows, prompt_field),
    }


def per_completion(values: Any, n: int) -> list[Any]:
    """A batched reward's values as a list of one per completion; ShapeError for anything else."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ShapeError(f"returned a {type(values).__name__}, not a list of {n} values")
    if len(values) != n:
        raise ShapeError(f"returned {len(values)} values for {n} completions")
    return list(values)


def call_trl_shaped(fn: Callable, arguments: Mapping[str, Any], kwargs: Mapping[str, Any]) -> list[Any]:
    """One call on the whole batch; a value per completion (ShapeError otherwise)."""
    return per_completion(resolved(fn(**arguments, **kwargs)), len(arguments["completions"]))


def call_trl(
    name: str,
    fn: Callable,
    arguments: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
) -> list[CallOutcome]:
    """One call in TRL's shape (`arguments`: trl_arguments); a keyword the dataset lacks stops the
    run naming the columns, a raise or a wrong-length result fails every completion."""
    n = len(arguments["completions"])
    if n == 0:
        return []
    missing = missing_columns(fn, {**arguments, **kwargs})
    if missing:
        source = str(rows[0].get("_source", "the dataset")).rsplit(":", 1)[0]
        have = sorted(k for k in arguments if k not in TRL_ARGUMENTS)
        raise MissingColumns(
            f"reward '{name}' needs the column(s) {', '.join(map(repr, missing))}, which {source} does "
            f"not have (its columns: {', '.join(have) or 'none but the prompt'})"
        )
    try:
        values = call_trl_shaped(fn, arguments, kwargs)
    except ShapeError as e:
        return [CallOutcome(error=str(e))] * n
    except Exception as e:  # a user reward may raise anything
        return [CallOutcome(error=raised(e), exception=e)] * n
    return [CallOutcome(value=v) for v in values]


def call_rlft_batched(
    fn: Callable,
    prompts: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    kwargs: Mapping[str, Any],
) -> tuple[list[CallOutcome], dict[str, float]]:
    """rlft's batched shape: one call, `(values, metrics)` back; a raise or a wrong-length result
    fails every completion."""
    n = len(completions)
    if n == 0:
        return [], {}
    try:
        values, term_metrics = resolved(fn(list(prompts), list(completions), list(examples), **kwargs))
        values = per_completion(list(values), n)
    except ShapeError as e:
        return [CallOutcome(error=str(e))] * n, {}
    except Exception as e:  # a reward model may run out of memory, a row may lack the prompt, ...
        return [CallOutcome(error=raised(e), exception=e)] * n, {}
    return [CallOutcome(value=v) for v in values], dict(term_metrics)
