"""Loading an RLConfig through a TRL GRPOConfig file (`rlft rl --trl-config`), and the block of
mapped keys and notes printed before a run (the mapping itself: rlft.config.trl)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlft.config.loader import ConfigError, build, deep_merge, load_yaml, merge_overrides
from rlft.config.rl import RLConfig
from rlft.config.trl import dotted, from_trl_grpo


def load_rl_config_with_trl(
    trl_path: str | Path, base: str | None = None, overrides: Sequence[str] = (), world_size: int = 1
) -> tuple[RLConfig, dict[str, Any], list[str]]:
    """(RLConfig, the TRL file's mapping, notes). Precedence, lowest first: rlft's defaults, the
    rlft `base` config, the TRL file's mapping, the dotted `overrides`. When the TRL file weights
    rewards (`reward_weights`) without naming them, the weights go to the base config's list."""
    trl = load_yaml(trl_path)
    base_data = load_yaml(base) if base else {}
    funcs = None
    if "reward_weights" in trl and not {"reward_funcs", "reward_model_name_or_path"} & trl.keys():
        funcs = base_data.get("rewards") or [dataclasses.asdict(r) for r in RLConfig().rewards]
    mapping, notes = from_trl_grpo(trl, reward_funcs=funcs, world_size=world_size)
    data = merge_overrides(deep_merge(base_data, mapping), overrides)
    try:
        return build(RLConfig, data), mapping, notes
    except ConfigError as e:
        raise ConfigError(f"{trl_path} (mapped from TRL){' + ' + str(base) if base else ''}: {e}") from None


def notes_block(source: str, mapping: Mapping[str, Any], notes: Sequence[str], prefix: str = "# ") -> str:
    """The translation as one block of lines: the rlft keys the TRL file set, then the notes."""
    lines = [f"TRL config {source} -> rlft keys (precedence: --config < TRL file < key=value overrides):"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in dotted(mapping).items()]
    lines += ["notes:"] + [f"  - {n}" for n in notes]
    return "\n".join(prefix + line for line in lines)
