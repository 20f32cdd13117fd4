"""Config sections shared by the training loops."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from rlft.config.loader import ConfigError, field


@dataclass(frozen=True)
class ModelConfig:
    path: str = field("smollm2-135m-instruct", "HF model id, local directory, or built-in alias")
    dtype: str = field("float32", "parameter dtype (float32 is fastest on CPU)")
    device: str = field(
        "auto", "auto (this process's GPU when CUDA is available, else cpu), cpu, cuda, cuda:N"
    )
    gradient_checkpointing: bool = field(False, "recompute activations in backward to save memory")
    onednn: bool = field(
        True,
        "fp32 CPU linear layers on oneDNN, not aten's matmul: training forward and backward, "
        "decode on packed weights (rlft.accel.onednn)",
    )
    trust_remote_code: bool = field(False, "allow custom modelling code from the model repo")
    lora_rank: int = field(0, "train LoRA adapters of this rank (PEFT) instead of all weights (0 = off)")
    lora_alpha: float = field(16.0, "LoRA scaling numerator (scale = alpha / rank)")
    lora_targets: str = field("all-linear", "modules that get adapters (PEFT target_modules)")


@dataclass(frozen=True)
class ArithmeticConfig:
    ops: list[str] = field(["+", "-", "*"], "operations to draw from, equally often")
    add_max: int = field(99, "largest operand for + and -")
    mul_max: int = field(19, "largest operand for *")
    min_operand: int = field(2, "smallest operand")
    heldout_fraction: float = field(0.25, "share of problems (by unordered operand pair) held out")
    heldout_size: int = field(300, "problems in the held-out evaluation set")
    seed: int = field(1234, "seed of the problem order (the split itself depends on no seed)")
    phrasing: Literal["fixed", "varied"] = field(
        "fixed",
        "fixed: 'What is a + b?'; varied: each problem worded by one of a dozen templates per op "
        "(rlft.data.phrasings), some kept for held-out rows only",
    )
    unseen_phrasings: float = field(
        0.25, "varied: share of templates never used in training; half the held-out rows use them"
    )
    draw: Literal["train_pool", "randint"] = field(
        "train_pool",
        "training problems: uniform over the train pool, or randint operands (A then B) over every "
        "problem, held-out ones included, seeded by the run seed (benchmark workload W)",
    )


@dataclass(frozen=True)
class DataConfig:
    path: str = field(
        "", "JSONL / Parquet file, `datasets` dir or a hub dataset id; empty = built-in generator"
    )
    config: str = field("", "hub dataset: its configuration (subset) name")
    streaming: bool = field(False, "hub dataset: stream rows instead of downloading it whole")
    builtin: str = field("arithmetic", "built-in prompt generator used when path is empty")
    split: str = field("train", "split to read from a `datasets` DatasetDict or hub dataset")
    prompt_field: str = field("prompt", "row field holding the prompt (string or chat messages)")
    answer_field: str = field(
        "answer", "row field holding the reference answer (may be absent; `solution` is read when absent)"
    )
    system_prompt: str | None = field(
        None, "system message prepended to string prompts (chat_template=none: as a first paragraph)"
    )
    chat_template: Literal["auto", "none"] = field(
        "auto",
        "auto: a string prompt becomes a user message under the tokenizer's chat template; "
        "none: the prompt string is tokenised exactly as written (base models, R1-Zero prompts)",
    )
    chat_template_kwargs: dict[str, Any] = field(
        {}, "extra variables for the chat template, e.g. {enable_thinking: false} (Qwen3)"
    )
    max_prompt_tokens: int = field(512, "longest prompt in tokens, after the chat template")
    overlong_prompts: Literal["truncate", "skip", "error"] = field(
        "truncate", "what to do with longer prompts (truncate keeps the end; each case is counted)"
    )
    shuffle: bool = field(True, "shuffle prompts each epoch (seeded)")
    max_bad_fraction: float = field(
        0.0,
        "share of rows that may be bad (unreadable line, missing / empty / wrongly typed prompt, "
        "duplicate id) and are left out; above it the run stops. All are listed in data_report.json",
    )
    id_field: str = field(
        "id", "row field holding a unique id: a repeated id is a bad row (empty = no check)"
    )
    arithmetic: ArithmeticConfig = field(ArithmeticConfig(), "built-in arithmetic task")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = field(0.0, "AdamW weight decay")
    adam_beta1: float = field(0.9, "AdamW beta1")
    adam_beta2: float = field(0.99, "AdamW beta2")
    adam_eps: float = field(1e-8, "AdamW epsilon")
    max_grad_norm: float = field(1.0, "clip the global grad norm to this (0 = no clipping)")
    lr_schedule: Literal["constant", "linear", "cosine"] = field("constant", "decay after warm-up")
    warmup_steps: int = field(0, "linear warm-up steps")
    min_lr_ratio: float = field(0.0, "final LR as a fraction of lr for linear/cosine decay")


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = field(True, "TensorBoard event files in output_dir (false drops it from backends)")
    backends: list[Literal["tensorboard", "wandb", "trackio"]] = field(
        ["tensorboard"], "loggers besides metrics.jsonl (wandb, trackio: extras rlft[wandb] / [trackio])"
    )
    project: str = field("rlft", "wandb / trackio project name (the run is named after output_dir)")
    progress: bool = field(True, "show a progress bar with ETA")
    samples_per_step: int = field(4, "completions written to samples.jsonl each step")


def check_step_sizes(train: Any, prefix: str = "train") -> None:
    """ConfigError naming a supervised train section's impossible sizes: `*_per_step` and
    `microbatch_size` below 1, negative steps, or steps = 0 with no positive epochs."""
    for f in dataclasses.fields(train):
        value = getattr(train, f.name)
        if (f.name.endswith("_per_step") or f.name == "microbatch_size") and value < 1:
            raise ConfigError(f"'{prefix}.{f.name}' must be >= 1, got {value}")
    if train.steps < 0:
        raise ConfigError(f"'{prefix}.steps' must be >= 0 (0 = from {prefix}.epochs), got {train.steps}")
    if train.steps == 0 and train.epochs <= 0:
        raise ConfigError(f"'{prefix}.epochs' must be > 0 when {prefix}.steps = 0, got {train.epochs}")


@dataclass(frozen=True)
class SaveConfig:
    merge_lora: bool = field(True, "LoRA runs: final/ holds the merged model (false: the adapter only)")
    model_card: bool = field(True, "write final/README.md: base model, data, algorithm, rewards, eval")


@dataclass(frozen=True)
class HubConfig:
    model_id: str = field("", "push final/ to this hub repo after training (empty = no push)")
    private: bool = field(True, "create the hub repo as private")
    revision: str = field("", "branch to push to (empty = the default branch)")


@dataclass(frozen=True)
class DistConfig:
    strategy: Literal["ddp", "fsdp2"] = field(
        "ddp", "several processes (torchrun): whole model on each rank, or fully_shard (FSDP2)"
    )
    backend: Literal["auto", "gloo", "nccl"] = field("auto", "collectives: auto = gloo on CPU + NCCL on GPU")
    timeout_s: float = field(
        1800.0, "a collective that waits longer (dead or hung rank) fails the job; above any checkpoint write"
    )
