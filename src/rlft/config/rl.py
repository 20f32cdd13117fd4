"""Config of the RL loop (`rlft rl`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rlft.config.common import (
    DataConfig,
    DistConfig,
    HubConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    SaveConfig,
)
from rlft.config.loader import field

# phrases the reflection diagnostic counts (rlft.telemetry.diagnostics), as whole words
DEFAULT_REFLECTION_PHRASES = ("wait", "let me check", "verify", "re-evaluate")


@dataclass(frozen=True)
class RolloutConfig:
    backend: str = field(
        "auto",
        "generation engine: auto (hf until vLLM passes its parity tests on a GPU), hf, hf_generate, vllm",
    )
    prompts_per_step: int = field(8, "prompts sampled per RL step (P)")
    samples_per_prompt: int = field(8, "completions per prompt (G)")
    max_new_tokens: int = field(64, "longest completion in tokens (T)")
    temperature: float = field(1.0, "sampling temperature")
    top_p: float = field(1.0, "nucleus sampling threshold (1 = off)")
    top_k: int = field(0, "top-k sampling (0 = off)")
    generation_batch_size: int = field(64, "sequences per generate call")
    seed_per_prompt: bool | None = field(
        None, "each prompt samples from its own seed, independent of the process count (None: if several)"
    )


@dataclass(frozen=True)
class ValueConfig:
    kind: Literal["separate", "head"] = field(
        "separate", "separate critic model, or a value head on the policy's own trunk"
    )
    init_from: str = field("", "critic weights: empty = the policy's, or a reward-model dir / HF id")
    lr: float | None = field(None, "critic learning rate (None = train.optim.lr)")
    coef: float = field(0.5, "weight of the value loss in the total loss")
    clip: float = field(0.2, "value clipping range around the old values")


@dataclass(frozen=True)
class TRPOConfig:
    max_kl: float = field(0.01, "trust region: mean KL(old || new) per token after the step")
    damping: float = field(0.1, "added to the Fisher-vector product (lambda * v)")
    cg_iters: int = field(10, "conjugate-gradient iterations")
    backtrack_ratio: float = field(0.5, "line-search step shrink factor")
    max_backtracks: int = field(10, "line-search attempts before giving up on the step")
    fvp_fraction: float = field(1.0, "share of the batch's sequences used for Fisher-vector products")


# Fields left None take the algorithm's default (rlft.algorithms.registry), then the global one.
@dataclass(frozen=True)
class AlgoConfig:
    name: str = field("grpo", "algorithm: see rlft.algorithms.ALGORITHMS")
    kl_coef: float = field(0.0, "weight of the KL penalty to the frozen reference (0 = no ref model)")
    kl_estimator: Literal["k1", "k2", "k3"] | None = field(None, "per-token KL estimator (default k3)")
    kl_in_reward: bool | None = field(None, "KL as a per-token reward penalty instead of a loss term")
    target_kl: float = field(0.0, "adaptive KL controller target (0 = fixed kl_coef)")
    kl_horizon: int = field(10000, "adaptive KL controller horizon in sequences")
    clip_eps_low: float | None = field(None, "lower clip range of the ratio: 1 - eps_low (default 0.2)")
    clip_eps_high: float | None = field(None, "upper clip range of the ratio: 1 + eps_high (default 0.2)")
    loss_agg: Literal["token_mean", "seq_mean", "constant"] | None = field(
        None, "per-token loss averaging: token-mean, sequence-mean, constant (default token_mean)"
    )
    scale_rewards: Literal["group", "batch", "none"] | None = field(
        None, "divide centred rewards by the std of the group, of the batch, or not at all (default group)"
    )
    std_eps: float = field(1e-4, "added to the std before dividing")
    whiten_advantages: bool | None = field(None, "normalise advantages over the batch (PPO)")
    gamma: float = field(1.0, "discount per token (PPO / REINFORCE++)")
    gae_lambda: float = field(0.95, "GAE lambda (PPO)")
    epochs: int = field(1, "optimisation passes over each batch of rollouts")
    dynamic_sampling: bool | None = field(None, "drop groups whose rewards are all equal and refill (DAPO)")
    max_sampling_rounds: int = field(3, "dynamic sampling: generation rounds per step at most")
    mask_truncated: bool | None = field(None, "completions cut at max_new_tokens get no loss (DAPO)")
    value: ValueConfig = field(ValueConfig(), "value model (PPO)")
    trpo: TRPOConfig = field(TRPOConfig(), "trust-region step (TRPO)")


@dataclass(frozen=True)
class RewardSpec:
    fn: str = field("numeric_answer", "built-in name, `pkg.mod:fn` or `path/file.py:fn`")
    weight: float = field(1.0, "weight in the summed score")
    name: str = field("", "metric name (default: derived from fn)")
    on_error: Literal["zero", "error"] = field("zero", "a raise / NaN / inf / None gives 0, or stops the run")
    kwargs: dict[str, Any] = field({}, "keyword arguments passed to the function")
    timeout_s: float = field(0.0, "per-call timeout in seconds; > 0 runs the reward in a thread pool")
    workers: int = field(0, "threads of that pool (0 = one per CPU)")
    model: list[str] = field(
        [],
        "reward model dir(s): a trained `rlft rm` output (final/); several = an ensemble scored by "
        "their mean (set: fn is ignored, name defaults to rm)",
    )
    batch_size: int = field(16, "reward model: (prompt, completion) pairs per forward pass")
    max_length: int = field(1024, "reward model: longest prompt + completion in tokens (keeps the end)")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(20, "RL steps to run in total")
    minibatch_size: int = field(0, "sequences per optimizer step (0 = the whole batch)")
    microbatch_size: int = field(16, "sequences per forward/backward pass")
    share_prompt_forward: bool = field(True, "run each prompt once per microbatch and share its KV cache")
    length_buckets: int = field(
        4, "forward passes sort a microbatch by response length into N groups, each cut to its longest"
    )
    save_every: int = field(10, "checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = field(2, "complete checkpoints to keep")
    max_nonfinite_steps: int = field(3, "abort after this many consecutive non-finite loss/grad steps")
    optim: OptimConfig = field(OptimConfig(), "optimizer and LR schedule")


@dataclass(frozen=True)
class EvalConfig:
    path: str = field(
        "",
        "held-out rows (file, `datasets` dir or hub id); empty = `heldout_fraction` of data.path "
        "(a user dataset) or the built-in task's held-out split",
    )
    split: str = field("", "split of eval.path to read (empty = data.split)")
    heldout_fraction: float = field(
        0.1, "user dataset and no eval.path: share of its rows held out (seeded), never trained on"
    )
    reward: str = field(
        "auto",
        "scoring: auto (the run's reward functions on a user dataset, answer matching on the built-in "
        "task), answer, run, or one reward (built-in name, `pkg.mod:fn`, `file.py:fn`)",
    )
    pass_threshold: float = field(1.0, "reward scoring: a completion is correct when its reward >= this")
    group_by: str = field(
        "", "also report accuracy per value of this row field (e.g. phrasing: seen / unseen wordings)"
    )
    before: bool = field(True, "evaluate the initial model before training")
    after: bool = field(True, "evaluate the final model after training")
    fresh_process: bool = field(True, "evaluate the final model in a new process loading final/")
    max_new_tokens: int = field(64, "completion budget when evaluating")
    batch_size: int = field(64, "prompts per generate call when evaluating")
    limit: int = field(0, "evaluate only the first N rows (0 = all)")
    every: int = field(0, "also evaluate every N RL steps, logged as eval/* metrics (0 = never)")
    every_samples: int = field(1, "periodic eval: completions per prompt (K; greedy when 1, else T=1)")
    every_limit: int = field(0, "periodic eval: only the first N held-out rows (0 = eval.limit)")


@dataclass(frozen=True)
class DiagnosticsConfig:
    reflection_phrases: list[str] = field(
        list(DEFAULT_REFLECTION_PHRASES), "phrases counted as reflection (whole words, any case)"
    )
    think_tag: str = field("think", "the reasoning part is <think_tag>...</think_tag>")
    repeat_ngram: int = field(4, "n of the repeated token n-gram fraction")


# Alarms (rlft.telemetry.alarms): each compares the first and the last `window` points of a metric, or
# checks the mean of the last window; see docs/evaluation.md#alarms.
@dataclass(frozen=True)
class AlarmConfig:
    enabled: bool = field(True, "check alarms after every step (warning + alarms.jsonl when one fires)")
    window: int = field(10, "points per window: trends compare the first and the last window")
    reward_key: str = field("reward/mean", "the trained (proxy) reward")
    gold_key: str = field("reward/gold", "a gold reward logged alongside (weight 0); absent = no check")
    heldout_key: str = field("eval/accuracy", "held-out accuracy (logged on eval steps); absent = no check")
    rm_key: str = field("reward/rm", "a reward-model score to hold against verifier_key")
    verifier_key: str = field("", "a verifier reward, e.g. reward/numeric_answer (empty = no check)")
    reward_rise_z: float = field(1.0, "a reward rises: last-window mean - first >= this many pooled stds")
    reference_min_rise: float = field(0.02, "gold / held-out / verifier stalls: gains less than this")
    length_ratio_high: float = field(2.0, "length explodes: last/first window mean response_len >= this")
    length_ratio_low: float = field(0.5, "length collapses: last/first window mean response_len <= this")
    repeat_ngram_max: float = field(0.2, "last-window mean of rollout/repeat_ngram_frac at or above this")
    empty_answer_max: float = field(0.1, "last-window mean of rollout/empty_answer_frac at or above this")
    kl_key: str = field("policy/kl", "KL to the reference per token (logged by every algorithm with one)")
    kl_jump: float = field(5.0, "KL blow-up: the latest KL >= this times the mean of the window before")
    kl_min: float = field(0.05, "KL blow-up: ... and the latest KL is at least this (nats/token)")
    entropy_ratio_min: float = field(0.2, "entropy collapse: last/first window mean entropy <= this")
    zero_std_max: float = field(0.5, "last-window mean of rollout/zero_std_groups_frac at or above this")


@dataclass(frozen=True)
class RLConfig:
    output_dir: str = field("runs/rl", "run directory (metrics, checkpoints, final model)")
    seed: int = field(0, "seed of every random number generator")
    resume: bool = field(False, "continue from the newest complete checkpoint in output_dir")
    model: ModelConfig = field(ModelConfig(), "policy model")
    data: DataConfig = field(DataConfig(), "prompt dataset")
    rollout: RolloutConfig = field(RolloutConfig(), "sampling")
    algo: AlgoConfig = field(AlgoConfig(), "RL algorithm")
    rewards: list[RewardSpec] = field([RewardSpec()], "reward functions, summed with weights")
    train: TrainConfig = field(TrainConfig(), "optimisation schedule")
    eval: EvalConfig = field(EvalConfig(), "held-out evaluation")
    diagnostics: DiagnosticsConfig = field(DiagnosticsConfig(), "per-step text diagnostics of completions")
    log: LogConfig = field(LogConfig(), "logging")
    dist: DistConfig = field(DistConfig(), "several processes under torchrun (rlft.dist.ranks)")
    alarms: AlarmConfig = field(AlarmConfig(), "training-health alarms (reward hacking, KL, ...)")
    save: SaveConfig = field(SaveConfig(), "what final/ holds")
    hub: HubConfig = field(HubConfig(), "optional push of final/ to a model hub")
