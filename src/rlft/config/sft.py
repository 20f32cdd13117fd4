"""Config of supervised fine-tuning (`rlft sft`): chat or prompt/completion rows, loss on the
assistant tokens only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlft.config.common import DistConfig, HubConfig, LogConfig, ModelConfig, OptimConfig, SaveConfig
from rlft.config.loader import field


@dataclass(frozen=True)
class SFTDataConfig:
    path: str = field("", "JSONL / Parquet / `datasets` dir / hub id of chat or prompt/completion rows")
    config: str = field("", "hub dataset: its configuration (subset) name")
    split: str = field("train", "split to read from a `datasets` DatasetDict")
    heldout_path: str = field("", "held-out file; empty = split `path` by a hash of each row's prompt")
    heldout_fraction: float = field(0.05, "share of prompts held out when heldout_path is empty")
    messages_field: str = field("messages", "row field holding chat messages [{role, content}, ...]")
    prompt_field: str = field("prompt", "row field holding the prompt (rows without messages)")
    completion_field: str = field("completion", "row field holding the assistant's completion")
    system_prompt: str | None = field(None, "system message prepended to conversations that have none")
    max_length: int = field(1024, "longest example (and packed row) in tokens")
    overlong: Literal["truncate", "skip", "error"] = field(
        "truncate", "longer examples: keep their first max_length tokens, drop them, or fail (counted)"
    )
    packing: bool = field(False, "pack a step's examples into rows of up to max_length tokens")
    max_bad_fraction: float = field(
        0.0, "share of rows that may be bad (left out, listed in data_report.json); above it the run stops"
    )
    id_field: str = field("id", "row field holding a unique id: a repeated id is a bad row (empty: no check)")


@dataclass(frozen=True)
class SFTTrainConfig:
    steps: int = field(0, "optimizer steps in total (0 = epochs x steps per epoch)")
    epochs: float = field(1.0, "passes over the training examples when steps = 0")
    examples_per_step: int = field(32, "examples (conversations) per optimizer step")
    microbatch_size: int = field(8, "sequences per forward pass (packed rows when packing)")
    save_every: int = field(100, "checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = field(2, "complete checkpoints to keep")
    eval_every: int = field(50, "held-out loss every N steps (0 = only at the end)")
    max_nonfinite_steps: int = field(3, "abort after this many consecutive non-finite loss/grad steps")
    # the class defaults on purpose: `build` fills a partly given `train.optim` from OptimConfig's
    # own defaults, not from this field's default, so any change here would vanish on override
    optim: OptimConfig = field(OptimConfig(), "optimizer and LR schedule")


@dataclass(frozen=True)
class SFTConfig:
    output_dir: str = field("runs/sft", "run directory (checkpoints, metrics, final/)")
    seed: int = field(0, "seed of data order")
    resume: bool = field(False, "continue from the newest complete checkpoint in output_dir")
    model: ModelConfig = field(ModelConfig(), "model to fine-tune (LoRA via model.lora_rank)")
    data: SFTDataConfig = field(SFTDataConfig(), "supervised data")
    train: SFTTrainConfig = field(SFTTrainConfig(), "steps, batches, optimizer")
    log: LogConfig = field(LogConfig(), "progress bar, TensorBoard")
    dist: DistConfig = field(DistConfig(), "several processes under torchrun (rlft.dist.ranks)")
    save: SaveConfig = field(SaveConfig(), "what final/ holds")
    hub: HubConfig = field(HubConfig(), "optional push of final/ to a model hub")
