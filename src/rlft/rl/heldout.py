"""What an RL run's held-out evaluation reads and scores with: the rows (eval.path, the held-out
share of the user's dataset, or the built-in task's held-out split), the scoring (eval.reward:
answer matching or reward terms), and the `--reward` arguments that hand those terms to a fresh
`rlft eval` process when each can be named on a command line."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from rlft.config.loader import ConfigError, to_dict
from rlft.config.rl import RewardSpec, RLConfig
from rlft.data.prompts import load_eval_rows, train_and_heldout_rows
from rlft.data.quarantine import DataReport
from rlft.rewards.builtin import BUILTIN_REWARDS
from rlft.rewards.registry import resolve_reward
from rlft.rewards.scoring import RewardTerm, build_terms, spec_name

ANSWER, RUN, AUTO = "answer", "run", "auto"


def prompts_needed(cfg: RLConfig) -> int:
    """Prompts a run may draw: what a streamed dataset is read for (the same in setup and here)."""
    rounds = cfg.algo.max_sampling_rounds if cfg.algo.dynamic_sampling else 1
    return cfg.train.steps * cfg.rollout.prompts_per_step * (rounds or 1)


def is_user_task(cfg: RLConfig, rows: Any = None) -> bool:
    """Rows of the user's: given in Python, eval.path, or data.path (not the built-in task)."""
    return rows is not None or bool(cfg.eval.path) or bool(cfg.data.path)


def scoring_of(cfg: RLConfig, user_task: bool) -> str:
    """eval.reward with auto resolved: `run` on a user task, `answer` on the built-in one."""
    mode = cfg.eval.reward.strip()
    if mode == AUTO:
        return RUN if user_task else ANSWER
    return mode


def eval_terms(cfg: RLConfig, user_task: bool, terms: Sequence[RewardTerm] | None = None) -> list[RewardTerm]:
    """The reward terms evaluation scores with ([] = answer matching). `terms`: the run's own
    (training's, with any Python callables); without them the config's rewards are built. One
    reward name: that term of the run (its kwargs kept), else the reward of that name, weight 1."""
    mode = scoring_of(cfg, user_task)
    if mode == ANSWER:
        return []
    if mode == RUN:
        return list(terms) if terms else build_terms(cfg.rewards, None, cfg.data)
    for term in terms or ():
        if term.name == mode:
            return [dataclasses.replace(term, weight=1.0)]
    for spec in cfg.rewards:
        if spec_name(spec) == mode:
            return build_terms([dataclasses.replace(spec, weight=1.0)], None, cfg.data)
    try:
        return build_terms([RewardSpec(fn=mode)], None, cfg.data)
    except ValueError as e:
        raise ConfigError(f"'eval.reward'={mode}: not auto, answer or run, nor a reward: {e}") from None


def heldout_rows(
    cfg: RLConfig, rows: Any = None, train_rows: Any = None, limit: int = 0
) -> list[dict[str, Any]]:
    """The rows to evaluate, first `limit` (0 = all): `rows` (given in Python), else eval.path
    (eval.split, else data.split), else the held-out share of the user's dataset (data.path, or
    `train_rows` given in Python; the rows training leaves out), else the built-in task's held-out
    split."""
    data = cfg.data
    fields = [data.prompt_field]
    if rows is not None or cfg.eval.path:
        got = load_eval_rows(rows if rows is not None else cfg.eval.path, data, 0, cfg.eval.split, fields)
    elif data.path or train_rows is not None:
        report = DataReport(1.0)  # the bad rows training leaves out, left out here too (not reported)
        _, got = train_and_heldout_rows(data, cfg.eval, cfg.seed, prompts_needed(cfg), report, train_rows)
        if not got:
            raise ConfigError(
                "eval.heldout_fraction=0 holds out none of the training rows: set eval.path or "
                "eval.heldout_fraction > 0, or turn held-out evaluation off (eval.before, eval.after, "
                "eval.every)"
            )
    else:
        got = load_eval_rows("", data)
    return got[:limit] if limit else got


def given_heldout_rows(cfg: RLConfig, eval_dataset: Any = None, train_dataset: Any = None) -> list | None:
    """The rows to evaluate when the Python API hands datasets over: `eval_dataset`, else the
    held-out share of `train_dataset` (the rows training leaves out). None when it hands neither
    (the config says where the rows are) or when no held-out evaluation runs."""
    e = cfg.eval
    if (eval_dataset is None and train_dataset is None) or not (e.before or e.after or e.every):
        return None
    return heldout_rows(cfg, eval_dataset, train_dataset)


def reward_arguments(cfg: RLConfig, terms: Sequence[RewardTerm]) -> tuple[list[str], str]:
    """(`--reward JSON` arguments naming every term, "") or ([], why not) when a term cannot be
    named on a command line (a Python callable handed to the API, a lambda, ...)."""
    specs = {spec_name(s): s for s in cfg.rewards}
    args = []
    for term in terms:
        spec = specs.get(term.name)
        if spec is not None and spec.model and term.batched:  # a reward model: its config entry
            entry = {**to_dict(spec), "name": term.name, "weight": term.weight}
        else:
            fn = cli_name(term, spec)
            if fn is None:
                return [], f"reward '{term.name}' is a Python callable that cannot be named on a command line"
            entry = {
                "fn": fn,
                "name": term.name,
                "weight": term.weight,
                "on_error": term.on_error,
                "kwargs": dict(term.kwargs or {}),
                "timeout_s": term.timeout_s,
                "workers": term.workers,
            }
        args += ["--reward", json.dumps(entry)]
    return args, ""


def cli_name(term: RewardTerm, spec: RewardSpec | None) -> str | None:
    """How `rlft eval --reward` names the term's function: a built-in name, the config entry's
    `fn` when it resolves to this very function, or `file.py:fn` of a reward loaded from a file;
    None otherwise."""
    for name, fn in BUILTIN_REWARDS.items():
        if fn is term.fn:
            return name
    module = getattr(term.fn, "__module__", "") or ""
    code = getattr(term.fn, "__code__", None)
    qualname = getattr(term.fn, "__qualname__", "")
    if module.startswith("rlft_user_reward_") and code is not None and "<" not in qualname:
        return f"{code.co_filename}:{qualname}"  # registry._load_file: a `file.py:fn` reward
    if spec is not None and not spec.model and not spec.fn.split(":")[0].endswith(".py"):
        try:
            if resolve_reward(spec.fn) is term.fn:
                return spec.fn
        except ValueError:
            return None
    return None
