"""Resolve reward names: built-ins, `pkg.mod:fn` and `path/file.py:fn` (the one place a string
becomes an object; docs/design.md)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from rlft.rewards.builtin import BUILTIN_REWARDS


def resolve_reward(name: str, extra: dict[str, Callable] | None = None) -> Callable:
    if extra and name in extra:
        return extra[name]
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    if name.endswith(".py"):
        raise ValueError(f"reward '{name}': name the function in the file, e.g. {name}:my_reward")
    if ":" not in name and "." not in name:
        raise ValueError(
            f"unknown reward '{name}': not a built-in ({', '.join(BUILTIN_REWARDS)}) "
            "and not of the form pkg.mod:fn, pkg.mod.fn or path/file.py:fn"
        )
    target, attr = name.rsplit(":" if ":" in name else ".", 1)
    if target.endswith(".py"):
        module = _load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"reward '{name}': cannot import module '{target}': {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward '{name}': '{attr}' is not a callable in {target}")
    return fn


def _load_file(path: Path):
    if not path.exists():
        raise ValueError(f"reward file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"rlft_user_reward_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load reward file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reward_name(fn_spec: str) -> str:
    """Metric name for a reward spec: the function name without module or path."""
    if ":" in fn_spec:
        return fn_spec.rsplit(":", 1)[-1]
    return fn_spec.rsplit(".", 1)[-1] if "/" not in fn_spec else fn_spec
