"""Configs of the preference loops: reward-model training (`rlft rm`) and DPO/IPO (`rlft dpo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlft.config.common import DistConfig, HubConfig, LogConfig, ModelConfig, OptimConfig, SaveConfig
from rlft.config.loader import field


@dataclass(frozen=True)
class PreferenceDataConfig:
    path: str = field(
        "", "preference JSONL / Parquet / `datasets` dir / hub id (pairwise or K-way ranking rows)"
    )
    config: str = field("", "hub dataset: its configuration (subset) name")
    split: str = field("train", "split to read from a `datasets` DatasetDict or hub dataset")
    heldout_path: str = field("", "held-out preference file; empty = split `path` by prompt hash")
    heldout_fraction: float = field(0.1, "share of prompts held out when heldout_path is empty")
    prompt_field: str = field("prompt", "row field holding the prompt (string or chat messages)")
    system_prompt: str | None = field(None, "system message prepended to string prompts")
    max_length: int = field(512, "longest (prompt + response) in tokens; longer keeps its end")


@dataclass(frozen=True)
class PreferenceTrainConfig:
    steps: int = field(0, "optimizer steps in total (0 = epochs x steps per epoch)")
    epochs: float = field(1.0, "passes over the training rankings when steps = 0")
    rankings_per_step: int = field(16, "rankings (prompts) per optimizer step")
    microbatch_size: int = field(16, "sequences per forward pass (a ranking is never split)")
    save_every: int = field(50, "checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = field(2, "complete checkpoints to keep")
    eval_every: int = field(25, "held-out evaluation every N steps (0 = only at the end)")
    max_nonfinite_steps: int = field(3, "abort after this many consecutive non-finite loss/grad steps")
    optim: OptimConfig = field(OptimConfig(lr=1e-5, warmup_steps=5), "optimizer and LR schedule")


@dataclass(frozen=True)
class RewardLossConfig:
    loss: Literal["bradley_terry", "plackett_luce"] = field(
        "bradley_terry", "pairwise BT over all pairs of a ranking, or the listwise Plackett-Luce likelihood"
    )
    use_margin: bool = field(True, "subtract a pairwise row's `margin` inside the BT sigmoid")
    centering_coef: float = field(0.0, "weight of the (mean reward per prompt)^2 penalty")


@dataclass(frozen=True)
class RMConfig:
    output_dir: str = field("runs/rm", "run directory (checkpoints, metrics, final/)")
    seed: int = field(0, "seed of init, data order and sampling")
    resume: bool = field(False, "continue from the newest complete checkpoint in output_dir")
    model: ModelConfig = field(ModelConfig(), "base model; a scalar head is added when it has none")
    data: PreferenceDataConfig = field(PreferenceDataConfig(), "preference data")
    train: PreferenceTrainConfig = field(PreferenceTrainConfig(), "steps, batches, optimizer")
    reward: RewardLossConfig = field(RewardLossConfig(), "reward-model loss")
    log: LogConfig = field(LogConfig(), "progress bar, TensorBoard")
    dist: DistConfig = field(DistConfig(), "several processes under torchrun (rlft.dist.ranks)")


@dataclass(frozen=True)
class DPOLossConfig:
    loss: Literal["dpo", "ipo"] = field("dpo", "sigmoid DPO loss or the squared IPO loss")
    beta: float = field(0.1, "strength of the KL tie to the reference (IPO: tau)")
    label_smoothing: float = field(0.0, "conservative DPO: assumed share of flipped labels")
    length_normalize: bool = field(False, "use mean instead of summed token logprobs (common for IPO)")


@dataclass(frozen=True)
class DPOConfig:
    output_dir: str = field("runs/dpo", "run directory (checkpoints, metrics, final/)")
    seed: int = field(0, "seed of data order")
    resume: bool = field(False, "continue from the newest complete checkpoint in output_dir")
    model: ModelConfig = field(ModelConfig(), "policy to train; its initial weights are the reference")
    data: PreferenceDataConfig = field(PreferenceDataConfig(), "preference data (K-way -> all pairs)")
    train: PreferenceTrainConfig = field(
        PreferenceTrainConfig(optim=OptimConfig(lr=5e-7, warmup_steps=5)), "steps, batches, optimizer"
    )
    dpo: DPOLossConfig = field(DPOLossConfig(), "preference loss")
    log: LogConfig = field(LogConfig(), "progress bar, TensorBoard")
    dist: DistConfig = field(DistConfig(), "several processes under torchrun (rlft.dist.ranks)")
    save: SaveConfig = field(SaveConfig(), "what final/ holds")
    hub: HubConfig = field(HubConfig(), "optional push of final/ to a model hub")
