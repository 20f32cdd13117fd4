"""rlft: reinforcement-learning fine-tuning of language models.

Python API: ``rlft.train_rl(config, model=..., reward_funcs=..., train_dataset=...)``; configs
from ``rlft.load_rl_config``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__version__ = "0.1.0"


def train_rl(
    config: Any = None,
    reward_fns: Any = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    reward_funcs: Any = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    callbacks: Sequence[Any] = (),
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run RL (rlft.rl.loop.train_rl); the same run `rlft rl` builds from the same config.

    config: an RLConfig, a dict, a YAML path or built-in config name, or None (the defaults);
      `overrides` are dotted `key=value` strings applied last.
    model: a hub id / local path (sets model.path), or a loaded transformers / PEFT model, with its
      `tokenizer` (else loaded from the model's name_or_path).
    reward_funcs (or reward_fns): a callable, a reward name, or a list / {name: fn} of them; they
      replace the config's `rewards` list, each taking weight / on_error from an entry of that name.
      rlft's per-sample `fn(prompt, completion, example)` and TRL's batched `fn(prompts,
      completions, **columns)` (also `async def`) are told apart by their signatures.
    train_dataset / eval_dataset: a `datasets.Dataset`, `IterableDataset`, `DatasetDict`, a list of
      dicts, or a path / hub id (they replace data.path / eval.path).
    callbacks: objects with `on_step_end(metrics)` or callables(metrics); metrics holds "step". A
      true return value ends the run after that step (saved and evaluated like a finished run).
    """
    from rlft.rl.inputs import UserObjects, rl_config
    from rlft.rl.loop import train_rl as _train_rl

    extra = list(overrides)
    if isinstance(model, str):
        extra.insert(0, f"model.path={model}")
        model = None
    for key, data in (("data.path", train_dataset), ("eval.path", eval_dataset)):
        if isinstance(data, str):
            extra.insert(0, f"{key}={data}")
    cfg = rl_config(config, extra)
    given = UserObjects(
        model=model,
        tokenizer=tokenizer,
        train_dataset=None if isinstance(train_dataset, str) else train_dataset,
        eval_dataset=None if isinstance(eval_dataset, str) else eval_dataset,
        callbacks=tuple(callbacks or ()),
    )
    if reward_fns is not None and reward_funcs is not None:
        raise ValueError("give reward_funcs or reward_fns, not both (they are the same argument)")
    return _train_rl(cfg, reward_fns=reward_funcs or reward_fns, given=given)


def load_rl_config(path: str | None = None, overrides: list[str] | None = None) -> Any:
    """An RLConfig from a YAML file or built-in config name (None: the defaults) and overrides."""
    from rlft.rl.inputs import rl_config

    return rl_config(path, overrides or [])


__all__ = ["train_rl", "load_rl_config", "__version__"]
