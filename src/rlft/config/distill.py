"""Config of distillation (`rlft distill`): teacher traces for SFT, offline logit distillation on
prompt/completion rows, or on-policy (GKD-style) distillation on the student's own samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rlft.config.common import ArithmeticConfig, DistConfig, LogConfig, ModelConfig, OptimConfig
from rlft.config.loader import field


@dataclass(frozen=True)
class DistillDataConfig:
    path: str = field(
        "",
        "JSONL / Parquet / `datasets` dir: prompts (traces, on_policy) or prompt/completion rows "
        "(offline); empty = built-in prompt generator",
    )
    config: str = field("", "hub dataset: its configuration (subset) name")
    builtin: str = field("arithmetic", "built-in prompt generator used when path is empty")
    split: str = field("train", "split to read from a `datasets` DatasetDict or hub dataset")
    prompt_field: str = field("prompt", "row field holding the prompt (string or chat messages)")
    completion_field: str = field("completion", "offline: row field holding the completion to distil on")
    system_prompt: str | None = field(None, "system message prepended to string prompts")
    chat_template: Literal["auto", "none"] = field(
        "auto", "auto: string prompts as user messages under the chat template; none: tokenised as written"
    )
    chat_template_kwargs: dict[str, Any] = field({}, "extra variables for the chat template")
    num_prompts: int = field(
        0,
        "rows used (0 = all of path; built-in generator: traces needs it set, on_policy draws "
        "steps x prompts_per_step)",
    )
    max_prompt_tokens: int = field(512, "longest prompt in tokens, after the chat template")
    overlong_prompts: Literal["truncate", "skip", "error"] = field(
        "truncate", "what to do with longer prompts (truncate keeps the end)"
    )
    max_length: int = field(1024, "offline: longest prompt + completion in tokens (longer keeps the end)")
    heldout_fraction: float = field(0.1, "share of rows held out (by a hash of the prompt) for evaluation")
    heldout_size: int = field(64, "held-out rows evaluated at most")
    arithmetic: ArithmeticConfig = field(ArithmeticConfig(), "built-in arithmetic task")


@dataclass(frozen=True)
class TracesConfig:
    path: str = field("", "trace JSONL to write (empty = output_dir/traces.jsonl)")
    n_samples: int = field(4, "teacher samples per prompt")
    keep_per_prompt: int = field(1, "distinct accepted samples kept per prompt at most")
    verifier: str = field("numeric_answer", "reward fn (built-in name, `pkg.mod:fn`, `file.py:fn`)")
    threshold: float = field(1.0, "keep a sample when its verifier score is >= this")
    drop_truncated: bool = field(True, "never keep a sample cut at max_new_tokens (no EOS)")
    max_new_tokens: int = field(256, "longest teacher sample in tokens")
    temperature: float = field(0.7, "teacher sampling temperature")
    top_p: float = field(0.95, "nucleus sampling threshold (1 = off)")
    generation_batch_size: int = field(64, "sequences per generate call")


@dataclass(frozen=True)
class OnPolicyConfig:
    samples_per_prompt: int = field(1, "student samples per prompt each step")
    max_new_tokens: int = field(64, "longest student sample in tokens")
    temperature: float = field(1.0, "student sampling temperature")
    top_p: float = field(1.0, "nucleus sampling threshold (1 = off)")
    top_k: int = field(0, "top-k sampling (0 = off)")
    generation_batch_size: int = field(64, "sequences per generate call")


@dataclass(frozen=True)
class DistillTrainConfig:
    steps: int = field(100, "optimizer steps in total (0 = epochs x steps per epoch)")
    epochs: float = field(1.0, "passes over the training rows when steps = 0")
    prompts_per_step: int = field(16, "rows (offline, traces SFT) or prompts (on_policy) per optimizer step")
    microbatch_size: int = field(8, "sequences per forward pass")
    save_every: int = field(50, "checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = field(2, "complete checkpoints to keep")
    eval_every: int = field(25, "held-out divergence every N steps (0 = only at the end)")
    max_nonfinite_steps: int = field(3, "abort after this many consecutive non-finite loss/grad steps")
    optim: OptimConfig = field(OptimConfig(lr=1e-5, warmup_steps=5), "optimizer and LR schedule")


@dataclass(frozen=True)
class DistillConfig:
    output_dir: str = field("runs/distill", "run directory (traces, checkpoints, metrics, final/)")
    seed: int = field(0, "seed of data order and sampling")
    resume: bool = field(False, "continue from the newest complete checkpoint in output_dir")
    teacher: str = field("smollm2-135m-instruct", "teacher: HF id, local directory or alias")
    student: ModelConfig = field(ModelConfig(), "student to train (same tokenizer as the teacher)")
    student_layers: str = field(
        "",
        "build the student from the teacher's layers ('every_other' or indices like '0,2,3') into "
        "output_dir/student-init, replacing student.path; empty = load student.path",
    )
    data: DistillDataConfig = field(DistillDataConfig(), "prompts / prompt-completion rows")
    mode: Literal["traces", "offline", "on_policy"] = field(
        "offline",
        "traces: teacher samples + verifier -> JSONL -> SFT; offline: match the teacher's token "
        "distributions on given completions; on_policy: on the student's own samples (GKD)",
    )
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = field(
        "forward_kl", "per-token divergence: KL(teacher||student), KL(student||teacher), generalized JSD"
    )
    jsd_beta: float = field(0.5, "generalized JSD weight: 0 -> forward KL, 1 -> reverse KL limits")
    temperature: float = field(1.0, "softmax temperature of the divergence (loss x temperature^2)")
    traces: TracesConfig = field(TracesConfig(), "mode=traces: teacher sampling and rejection")
    on_policy: OnPolicyConfig = field(OnPolicyConfig(), "mode=on_policy: student sampling")
    train: DistillTrainConfig = field(DistillTrainConfig(), "steps, batches, optimizer")
    log: LogConfig = field(LogConfig(), "progress bar, TensorBoard")
    dist: DistConfig = field(DistConfig(), "several processes under torchrun (rlft.dist.ranks)")
