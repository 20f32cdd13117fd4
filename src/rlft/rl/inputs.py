"""What the Python API hands the RL loop besides a config: objects a user already holds (a loaded
model and tokenizer, datasets, reward callables, step callbacks). `rlft rl` passes none of them;
both paths then build the same run (rlft.rl.setup.setup_run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlft.config.loader import ConfigError, build, load_config, merge_overrides, to_dict
from rlft.config.rl import RLConfig
from rlft.rewards.registry import resolve_reward, reward_name


@dataclass
class UserObjects:
    """Objects that replace what the config would load; None / empty = load it from the config."""

    model: Any = None  # a loaded transformers PreTrainedModel or peft PeftModel
    tokenizer: Any = None
    train_dataset: Any = None  # datasets.Dataset / IterableDataset / DatasetDict, or a list of dicts
    eval_dataset: Any = None
    callbacks: Sequence[Any] = ()  # objects with on_step_end(metrics), or callables(metrics)


def rl_config(config: Any = None, overrides: Sequence[str] = ()) -> RLConfig:
    """An RLConfig from an RLConfig, a dict, a YAML path or built-in config name, or None (defaults),
    with dotted `key=value` overrides applied last."""
    if isinstance(config, RLConfig):
        config = to_dict(config)
    if isinstance(config, Mapping):
        return build(RLConfig, merge_overrides(dict(config), list(overrides)))
    if config is None or isinstance(config, str):
        return load_config(RLConfig, config, list(overrides))
    raise ConfigError(f"config must be an RLConfig, a dict, a YAML path or None, got {type(config).__name__}")


def named_rewards(reward_funcs: Any) -> dict[str, Callable] | None:
    """None, a callable, a name, a list of callables / names, or a mapping name -> callable or name,
    as {metric name: function}. Names are built-in rewards, `pkg.mod:fn`, `pkg.mod.fn` or
    `file.py:fn`; a callable is named by its __name__ (a repeated name gets _2, _3 ...)."""
    if reward_funcs is None:
        return None
    if isinstance(reward_funcs, Mapping):
        return {str(k): _callable(v) for k, v in reward_funcs.items()}
    if callable(reward_funcs) or isinstance(reward_funcs, str):
        reward_funcs = [reward_funcs]
    named: dict[str, Callable] = {}
    for i, f in enumerate(reward_funcs):
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


def callback_hooks(callbacks: Sequence[Any]) -> list[Callable[[dict[str, float]], Any]]:
    """Each callback's step-end hook: its `on_step_end` method, or the callable itself."""
    hooks = []
    for cb in callbacks or ():
        hook = getattr(cb, "on_step_end", None) or (cb if callable(cb) else None)
        if hook is None:
            raise ConfigError(f"callback {cb!r} has no on_step_end(metrics) method and is not callable")
        hooks.append(hook)
    return hooks


def run_callbacks(hooks: Sequence[Callable[[dict[str, float]], Any]], step: int, metrics: dict) -> bool:
    """Call every hook with {"step": step, **metrics}; True when one returned a true value (or
    the string "stop"): the run ends after this step, saved and evaluated like a finished run."""
    record = {"step": step, **metrics}
    stop = False
    for hook in hooks:
        stop = bool(hook(dict(record))) or stop
    return stop
