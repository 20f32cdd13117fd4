"""Impossible batch arithmetic of the supervised trainers (sft, rm, dpo, distill) is a ConfigError
naming the key, raised before any model work (the RL loop's own checks: test_config.py)."""

from __future__ import annotations

import pytest

from rlft.config.common import check_step_sizes
from rlft.config.distill import DistillTrainConfig
from rlft.config.loader import ConfigError
from rlft.config.preference import PreferenceTrainConfig
from rlft.config.sft import SFTTrainConfig


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (SFTTrainConfig(examples_per_step=0), "'train.examples_per_step' must be >= 1, got 0"),
        (SFTTrainConfig(microbatch_size=-2), "'train.microbatch_size' must be >= 1, got -2"),
        (PreferenceTrainConfig(rankings_per_step=0), "'train.rankings_per_step' must be >= 1, got 0"),
        (DistillTrainConfig(prompts_per_step=0), "'train.prompts_per_step' must be >= 1, got 0"),
        (SFTTrainConfig(steps=-1), "'train.steps' must be >= 0"),
        (SFTTrainConfig(steps=0, epochs=0.0), "'train.epochs' must be > 0 when train.steps = 0, got 0.0"),
    ],
)
def test_impossible_sizes_name_the_key(train, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_step_sizes(train)


def test_possible_sizes_pass():
    # steps = 0 with epochs > 0 means "from epochs"; microbatch larger than a step is allowed
    for train in (SFTTrainConfig(steps=0, epochs=0.5, microbatch_size=64), DistillTrainConfig()):
        check_step_sizes(train)
