"""Score completions with weighted reward functions, guarding against raises and non-finite values.

A failure (raise, None, NaN, inf, non-number, timeout) is counted per function and, by that
function's `on_error`, either scores 0 or stops the run. A term that fails on *every* completion of
a step stops the run whatever its `on_error` (a wrong field name, a signature rlft cannot call, a
reward model out of memory: training on its zeros would be training on nothing); the first
failure's traceback is logged and chained to the RewardError. A non-finite value never reaches the
loss.
Slow rewards (a term with `timeout_s > 0`) run in a thread pool, each call bounded by that timeout;
their timeouts are also counted on their own (`reward/<fn>_timeouts`).
Batched terms (reward models: a config entry with `model`, or any callable with a true
`rlft_batched` attribute) are called once per batch, `fn(prompts, completions, examples, **kwargs)
-> (values [B], metrics)`; their metrics join the output and their values are checked like any other.
Functions in TRL's shape (a `completions` parameter) are called once per batch with the dataset's
own prompts and columns (rlft.rewards.shapes). `None` means "does not apply to this sample": not a
failure; the sample gets nothing from that term, and the term's mean leaves it out.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlft.config.loader import ConfigError
from rlft.errors import RunError
from rlft.rewards.parallel import CallOutcome, call_all, raised
from rlft.rewards.registry import resolve_reward, reward_name
from rlft.rewards.shapes import call_all_async, call_rlft_batched, call_trl, is_trl_shaped, trl_arguments

log = logging.getLogger(__name__)


class RewardError(RunError):
    """A reward function failed and its on_error is 'error'."""


@dataclass(frozen=True)
class RewardTerm:
    name: str
    fn: Callable[..., Any]
    weight: float = 1.0
    on_error: str = "zero"
    kwargs: Mapping[str, Any] | None = None
    timeout_s: float = 0.0  # > 0: run in a thread pool with this per-call timeout
    workers: int = 0  # pool threads (0 = one per CPU)
    batched: bool = False  # fn(prompts, completions, examples) -> (values [B], metrics), called inline
    trl: bool = False  # TRL's shape: fn(prompts=, completions=, completion_ids=, **columns) -> list
    prompt_field: str = "prompt"  # the rows' prompt column (TRL-shaped terms get it as `prompts`)


def _pool_settings(spec: Any, fn: Callable) -> tuple[float, int]:
    """(timeout_s, workers) from the config entry when it has them, else from the function's
    `slow_reward` marks, else (0, 0) = called inline."""
    timeout = getattr(spec, "timeout_s", None) or getattr(fn, "rlft_timeout_s", 0.0)
    workers = getattr(spec, "workers", None) or getattr(fn, "rlft_workers", 0)
    return float(timeout), int(workers)


def _is_batched(fn: Callable) -> bool:
    return bool(getattr(fn, "rlft_batched", False))


def spec_name(spec: Any) -> str:
    """Metric name of a config entry: its `name`, else "rm" for a reward model, else the fn's name."""
    return spec.name or ("rm" if getattr(spec, "model", None) else reward_name(spec.fn))


def build_terms(
    specs: Sequence[Any], extra: Mapping[str, Callable] | None = None, data: Any = None
) -> list[RewardTerm]:
    """Reward terms from config specs; `extra` (name -> fn) replaces the config's list when given:
    each extra fn takes its weight/on_error from a config entry of the same name, else defaults.
    `data` (the run's DataConfig: prompt_field, system_prompt) tells reward models which row field
    holds the raw prompt; None = "prompt", no system prompt."""
    field = getattr(data, "prompt_field", "prompt")
    if extra:
        by_name = {spec_name(s): s for s in specs}
        return [_term(name, fn, by_name.get(name), field) for name, fn in extra.items()]
    terms = []
    for s in specs:
        if getattr(s, "model", None):
            terms.append(_model_term(s, data))
        else:
            terms.append(_term(spec_name(s), resolve_reward(s.fn), s, field))
    return terms


def _term(name: str, fn: Callable, spec: Any, prompt_field: str) -> RewardTerm:
    """The term of function `fn`: its shape from its signature, weight / on_error / kwargs / pool
    from its config entry `spec` (None: the defaults)."""
    batched, trl = _is_batched(fn), is_trl_shaped(fn)
    pool = (0.0, 0) if batched or trl else _pool_settings(spec, fn)
    weight, on_error = (spec.weight, spec.on_error) if spec else (1.0, "zero")
    kwargs = dict(spec.kwargs) if spec else {}
    return RewardTerm(
        name, fn, weight, on_error, kwargs, *pool, batched=batched, trl=trl, prompt_field=prompt_field
    )


def _model_term(spec: Any, data: Any) -> RewardTerm:
    """A batched term scoring with the reward model(s) of `spec.model` (loaded once, here)."""
    from rlft.rewards.model import ModelReward

    name = spec_name(spec)
    fn = ModelReward(
        spec.model,
        name,
        getattr(data, "prompt_field", "prompt"),
        getattr(data, "system_prompt", None),
        spec.batch_size,
        spec.max_length,
    )
    return RewardTerm(name, fn, spec.weight, spec.on_error, {}, batched=True)


def as_named(reward_fns: Any) -> dict[str, Callable] | None:
    """None, a callable, a name, a list of callables / names, or a mapping name -> callable or name,
    as {metric name: function}. Names are built-in rewards, `pkg.mod:fn`, `pkg.mod.fn` or
    `file.py:fn`; a callable is named by its __name__ (a repeated name gets _2, _3 ...)."""
    if reward_fns is None:
        return None
    if isinstance(reward_fns, Mapping):
        return {str(k): _callable(v) for k, v in reward_fns.items()}
    if callable(reward_fns) or isinstance(reward_fns, str):
        reward_fns = [reward_fns]
    named: dict[str, Callable] = {}
    for i, f in enumerate(reward_fns):
        base = reward_name(f) if isinstance(f, str) else getattr(f, "__name__", f"reward_{i}")
        name, n = base, 1
        while name in named:
            n += 1
            name = f"{base}_{n}"
        named[name] = _callable(f)
    return named


def _callable(f: Any) -> Callable:
    if isinstance(f, str):
        return resolve_reward(f)
    if not callable(f):
        raise ConfigError(f"a reward must be a callable or a reward name, got {type(f).__name__}")
    return f


def _checked(value: Any) -> float | None:
    if isinstance(value, (str, bytes)):
        return None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def score_completions(
    terms: Sequence[RewardTerm],
    prompts: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of reward terms per completion -> scores [B], metrics. A term's `None` for a
    completion adds nothing to it and is left out of `reward/<term>` (the mean where it applies)."""
    total = torch.zeros(len(completions))
    metrics: dict[str, float] = {}
    for term in terms:
        outcomes, term_metrics = _call_term(term, prompts, completions, examples, completion_ids)
        metrics.update(term_metrics)
        values, failures = _term_values(term, outcomes)
        t = torch.tensor([0.0 if v is None else v for v in values], dtype=torch.float32)
        total += term.weight * t
        applied = [v for v in values if v is not None]
        metrics[f"reward/{term.name}"] = sum(applied) / len(applied) if applied else 0.0
        metrics[f"reward/{term.name}_failures"] = float(len(failures))
        if term.timeout_s > 0:
            metrics[f"reward/{term.name}_timeouts"] = float(sum(o.timed_out for o in outcomes))
    metrics["reward/mean"] = float(total.mean()) if len(completions) else 0.0
    metrics["reward/std"] = float(total.std()) if len(completions) > 1 else 0.0
    return total, metrics


def _failure(outcome: CallOutcome) -> tuple[float | None, str | None]:
    """(checked value, None) for a usable outcome (None: the reward does not apply to this
    sample), else (None, what went wrong)."""
    if outcome.error is None and outcome.value is None:
        return None, None
    v = _checked(outcome.value) if outcome.error is None else None
    if v is not None:
        return v, None
    return None, outcome.error or "returned a non-finite or non-numeric value"


def _term_values(term: RewardTerm, outcomes: Sequence[CallOutcome]) -> tuple[list[float | None], list[str]]:
    """The term's value per completion (0 where it failed, None where it does not apply) and its
    failures' messages. Raises RewardError when it failed everywhere, or anywhere with on_error
    'error'."""
    values, failures, first = [], [], None
    for outcome in outcomes:
        v, err = _failure(outcome)
        if err is not None:
            failures.append(err)
            first = first or outcome
            if term.on_error == "error":
                raise RewardError(f"reward '{term.name}' {err} (set on_error: zero to score it 0)") from (
                    outcome.exception
                )
        values.append(0.0 if err is not None else v)
    if failures and len(failures) == len(outcomes):
        if first is not None and first.exception is not None:
            log.error("reward '%s': the first failure", term.name, exc_info=first.exception)
        raise RewardError(
            f"reward '{term.name}' failed on all {len(outcomes)} completions of this step, so it gives "
            f"no signal; the first: {failures[0]}"
        ) from (first.exception if first else None)
    if failures:
        log.warning(
            "reward '%s' failed on %d of %d completions (first: %s); scored 0",
            term.name,
            len(failures),
            len(values),
            failures[0],
        )
    return values, failures


def _call_term(
    term: RewardTerm,
    prompts: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[Mapping[str, Any]],
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[list[CallOutcome], dict[str, float]]:
    """Call the term's function on every completion (inline, in a pool when it is slow, awaited
    together when it is `async def`), or once on the whole batch when it is batched (rlft's or
    TRL's shape). Returns one outcome per completion and the term's own metrics (rlft-batched
    terms only)."""
    calls = list(zip(prompts, completions, examples, strict=True))
    kwargs = dict(term.kwargs or {})
    if term.batched:
        return call_rlft_batched(term.fn, prompts, completions, examples, kwargs)
    if term.trl:
        arguments = trl_arguments(prompts, completions, examples, term.prompt_field, completion_ids)
        return call_trl(term.name, term.fn, arguments, kwargs, examples), {}
    if term.timeout_s > 0:
        return call_all(term.fn, calls, kwargs, term.workers, term.timeout_s), {}
    if inspect.iscoroutinefunction(term.fn):
        return call_all_async(term.fn, calls, kwargs), {}
    outcomes = []
    for args in calls:
        try:
            outcomes.append(CallOutcome(value=term.fn(*args, **kwargs)))
        except Exception as e:  # a user reward may raise anything
            outcomes.append(CallOutcome(error=raised(e), exception=e))
    return outcomes, {}
