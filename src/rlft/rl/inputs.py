"""What the Python API hands the RL loop besides a config: objects a user already holds (a loaded
model and tokenizer, datasets, reward callables, step callbacks). `rlft rl` passes none of them;
both paths then build the same run (rlft.rl.setup.setup_run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlft.config.loader import ConfigError, build, load_config, merge_overrides, to_dict
from rlft.config.rl import RLConfig


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
