"""What several processes refuse, by name, and what fsdp2 turns off (rl_setup.check_distributed),
checked with the world size set to 2 (no process group needed: the check runs before any
collective)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from rlft.algorithms import get_algorithm
from rlft.config.loader import ConfigError
from rlft.rl import setup as rl_setup


@pytest.fixture
def two_ranks(monkeypatch):
    monkeypatch.setattr(rl_setup, "world_size", lambda: 2)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("rollout.backend=vllm", "rollout.backend=vllm"),
        ("algo.name=trpo", "algo.name=trpo"),
        ("algo.name=dapo", "algo.dynamic_sampling=true"),
        ("rollout.prompts_per_step=3", "'rollout.prompts_per_step'=3 must be a multiple of the 2"),
    ],
)
def test_refused_on_two_processes_by_name(two_ranks, make_rl_config, override, named):
    cfg = make_rl_config(override)
    algo = get_algorithm(cfg.algo.name)
    cfg = dataclasses.replace(cfg, algo=algo.resolve(cfg.algo))  # the defaults, as setup_run fills them
    with pytest.raises(ConfigError, match=re.escape(named)):
        rl_setup.check_distributed(cfg, algo)


def test_fsdp2_turns_off_the_passes_that_vary_by_rank(two_ranks, make_rl_config):
    cfg = make_rl_config("dist.strategy=fsdp2", "train.length_buckets=4", "train.share_prompt_forward=true")
    checked = rl_setup.check_distributed(cfg, get_algorithm("grpo"))
    assert (checked.train.length_buckets, checked.train.share_prompt_forward) == (1, False)
    ddp = rl_setup.check_distributed(make_rl_config("train.length_buckets=4"), get_algorithm("grpo"))
    assert ddp.train.length_buckets == 4  # ddp keeps them: each rank runs its own passes
