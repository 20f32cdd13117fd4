"""rlft: reinforcement-learning fine-tuning of language models.

Python API: ``rlft.train_rl(config, reward_fns=...)``; configs from ``rlft.load_rl_config``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def train_rl(config: Any, reward_fns: Any = None) -> dict[str, Any]:
    """Run RL (see rlft.rl.loop.train_rl). `config` is an RLConfig, a YAML path or a dict."""
    from rlft.config.loader import build
    from rlft.config.rl import RLConfig
    from rlft.rl.loop import train_rl as _train_rl

    if isinstance(config, str):
        config = load_rl_config(config)
    elif isinstance(config, dict):
        config = build(RLConfig, config)
    return _train_rl(config, reward_fns=reward_fns)


def load_rl_config(path: str | None = None, overrides: list[str] | None = None) -> Any:
    from rlft.config.loader import load_config
    from rlft.config.rl import RLConfig

    return load_config(RLConfig, path, overrides or [])


__all__ = ["train_rl", "load_rl_config", "__version__"]
