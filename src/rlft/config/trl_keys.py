"""The key table of the TRL translation (`rlft.config.trl`): every GRPOConfig key rlft knows, the
rlft key it becomes (or none) and how its meaning differs, with the TRL defaults and names the
translation needs. docs/coming_from_trl.md shows `table_markdown()`; a test holds the two equal
(regenerate it with `python -m rlft.config.trl_keys`)."""

from __future__ import annotations

from typing import Any

# TRL key: (the rlft key it sets, "" when not mapped; how the meaning differs, or why not mapped)
RULES: dict[str, tuple[str, str]] = {
    # run and optimizer
    "output_dir": ("output_dir", "rlft saves the model to output_dir/final/ (with a model card)"),
    "seed": ("seed", ""),
    "learning_rate": ("train.optim.lr", ""),
    "lr_scheduler_type": (
        "train.optim.lr_schedule",
        "linear, cosine, constant(_with_warmup), cosine_with_min_lr",
    ),
    "lr_scheduler_kwargs": ("train.optim.min_lr_ratio", "only min_lr_rate / min_lr of cosine_with_min_lr"),
    "warmup_steps": ("train.optim.warmup_steps", ""),
    "warmup_ratio": ("train.optim.warmup_steps", "needs max_steps to become a step count"),
    "weight_decay": ("train.optim.weight_decay", ""),
    "adam_beta1": ("train.optim.adam_beta1", ""),
    "adam_beta2": ("train.optim.adam_beta2", ""),
    "adam_epsilon": ("train.optim.adam_eps", ""),
    "max_grad_norm": ("train.optim.max_grad_norm", ""),
    "optim": ("", "rlft's optimizer is torch AdamW (`adamw_torch`, `adamw_torch_fused` mean the same)"),
    "max_steps": ("train.steps", "TRL counts optimizer steps, rlft RL steps (one generation round each)"),
    "num_train_epochs": (
        "train.steps",
        "needs the dataset's row count (not known from the file): set train.steps",
    ),
    # batch
    "per_device_train_batch_size": (
        "rollout.prompts_per_step, train.microbatch_size",
        "TRL counts completions per device; rlft prompts x samples per step",
    ),
    "gradient_accumulation_steps": ("rollout.prompts_per_step, train.minibatch_size", "see the batch note"),
    "num_generations": ("rollout.samples_per_prompt", ""),
    "generation_batch_size": (
        "rollout.prompts_per_step",
        "completions per generation round (rlft's P x G), not rlft's rollout.generation_batch_size",
    ),
    "steps_per_generation": ("rollout.prompts_per_step, train.minibatch_size", "see the batch note"),
    # generation
    "max_completion_length": ("rollout.max_new_tokens", ""),
    "max_prompt_length": (
        "data.max_prompt_tokens",
        "both keep the end of a longer prompt; rlft counts after the chat template and reports each cut",
    ),
    "temperature": ("rollout.temperature", ""),
    "top_p": ("rollout.top_p", ""),
    "top_k": ("rollout.top_k", ""),
    "use_vllm": ("rollout.backend", "rlft runs vLLM in-process (like vllm_mode: colocate); no server mode"),
    "chat_template_kwargs": ("data.chat_template_kwargs", ""),
    "shuffle_dataset": ("data.shuffle", ""),
    # loss
    "beta": ("algo.kl_coef", ""),
    "epsilon": ("algo.clip_eps_low, algo.clip_eps_high", ""),
    "epsilon_high": ("algo.clip_eps_high", ""),
    "num_iterations": ("algo.epochs", ""),
    "loss_type": ("algo.loss_agg", "see its note: a normaliser only, never an algorithm"),
    "scale_rewards": ("algo.scale_rewards", ""),
    "importance_sampling_level": ("algo.name", "sequence: GSPO's sequence-level ratio (algo.name=gspo)"),
    "mask_truncated_completions": ("algo.mask_truncated", ""),
    "multi_objective_aggregation": ("", "rlft sums the weighted rewards, then scales (sum_then_normalize)"),
    # rewards
    "reward_funcs": ("rewards[i].fn", "TRL's built-in names are translated where rlft has an equivalent"),
    "reward_weights": ("rewards[i].weight", ""),
    "reward_model_name_or_path": (
        "rewards[0].model",
        "a sequence-classification checkpoint, scored at its last token",
    ),
    # model (GRPOConfig.model_init_kwargs and the `trl grpo` command's model keys)
    "model_name_or_path": ("model.path", ""),
    "model_init_kwargs": ("model.dtype, model.trust_remote_code", "its other keys are not mapped"),
    "dtype": ("model.dtype", "rlft has no `auto`: the parameter dtype"),
    "torch_dtype": ("model.dtype", "rlft has no `auto`: the parameter dtype"),
    "trust_remote_code": ("model.trust_remote_code", ""),
    "bf16": ("model.dtype", "TRL: bf16 mixed precision; rlft: the parameters themselves in bfloat16"),
    "fp16": ("model.dtype", "TRL: fp16 mixed precision; rlft: the parameters themselves in float16"),
    "gradient_checkpointing": ("model.gradient_checkpointing", ""),
    "use_cpu": ("model.device", ""),
    "use_peft": ("model.lora_rank", "LoRA with TRL's default rank 16 unless lora_r is set"),
    "lora_r": ("model.lora_rank", ""),
    "lora_alpha": ("model.lora_alpha", ""),
    "lora_target_modules": ("model.lora_targets", ""),
    # data (the `trl grpo` command's dataset keys)
    "dataset_name": (
        "data.path",
        "string prompts get the chat template in rlft, not in TRL (data.chat_template=none: as in TRL)",
    ),
    "dataset_config": ("data.config", ""),
    "dataset_train_split": ("data.split", ""),
    "dataset_test_split": ("eval.split", "used when eval_strategy is not `no`, as in TRL"),
    "dataset_streaming": ("data.streaming", ""),
    # evaluation, logging, saving
    "eval_strategy": (
        "eval.every",
        "rlft also evaluates before and after training (eval.before, eval.after)",
    ),
    "evaluation_strategy": ("eval.every", "the old name of eval_strategy"),
    "eval_steps": ("eval.every", ""),
    "eval_on_start": ("eval.before", ""),
    "num_generations_eval": (
        "eval.every_samples",
        "rlft reports pass@k / maj@k over them, not a mean reward",
    ),
    "report_to": ("log.backends", "rlft knows tensorboard, wandb, trackio; it always writes metrics.jsonl"),
    "project": ("log.project", ""),
    "save_strategy": ("train.save_every", "`no`: rlft still writes final/ at the end"),
    "save_steps": ("train.save_every", ""),
    "save_total_limit": ("train.keep_checkpoints", ""),
    "push_to_hub": ("hub.model_id", "needs hub_model_id"),
    "hub_model_id": ("hub.model_id", ""),
    "hub_private_repo": ("hub.private", ""),
    "hub_revision": ("hub.revision", ""),
    "disable_tqdm": ("log.progress", ""),
    # known, not mapped
    "logging_steps": ("", "rlft logs every step to metrics.jsonl and its backends"),
    "logging_strategy": ("", "rlft logs every step"),
    "logging_first_step": ("", "rlft logs every step"),
    "logging_dir": ("", "rlft's logs are in output_dir"),
    "run_name": ("", "rlft names wandb / trackio runs after output_dir"),
    "log_completions": ("", "rlft writes log.samples_per_step completions per step to samples.jsonl"),
    "num_completions_to_print": ("", "see log.samples_per_step"),
    "log_level": ("", "rlft -v for debug logging"),
    "per_device_eval_batch_size": ("", "eval.batch_size is prompts per generate call"),
    "resume_from_checkpoint": ("", "rlft resumes from output_dir's newest checkpoint with --resume"),
    "delta": ("", "two-sided clipping (INTELLECT-2) is not in rlft"),
    "top_entropy_quantile": ("", "entropy masking is not in rlft"),
    "sync_ref_model": ("", "rlft's reference model stays frozen"),
    "ref_model_mixup_alpha": ("", "rlft's reference model stays frozen"),
    "ref_model_sync_steps": ("", "rlft's reference model stays frozen"),
    "disable_dropout": ("", "rlft keeps the model's dropout (train mode)"),
    "remove_unused_columns": ("", "rlft passes every dataset column to reward functions"),
    "min_p": ("", "rlft samples with temperature, top_p and top_k only"),
    "repetition_penalty": ("", "rlft samples with temperature, top_p and top_k only"),
    "generation_kwargs": ("", "rlft samples with temperature, top_p and top_k only"),
    "cast_lm_head_to_fp32": ("", "set model.dtype=float32 for full precision"),
    "use_liger_loss": ("", "not in rlft"),
    "use_liger_kernel": ("", "not in rlft"),
    "use_transformers_paged": ("", "rollout.backend picks the generation engine"),
    "cache_implementation": ("", "rollout.backend picks the generation engine"),
    "ds3_gather_for_generation": ("", "DeepSpeed is not used; see dist.strategy"),
    "deepspeed": ("", "DeepSpeed is not used; dist.strategy is ddp or fsdp2"),
    "fsdp": ("", "use dist.strategy=fsdp2 under torchrun"),
    "gradient_checkpointing_kwargs": ("", "not in rlft"),
    "model_revision": ("", "not in rlft: give model.path a local copy"),
    "attn_implementation": ("", "rlft uses the model's default attention"),
    "lora_dropout": ("", "rlft's LoRA has no dropout"),
    "load_in_4bit": ("", "no quantised training in rlft"),
    "load_in_8bit": ("", "no quantised training in rlft"),
    "bf16_full_eval": ("", "evaluation runs in model.dtype"),
    "torch_compile": ("", "not in rlft"),
    "dataloader_num_workers": ("", "not needed: prompts are read in the loop"),
    "vllm_mode": ("", "rlft's vLLM is in-process"),
    "vllm_gpu_memory_utilization": ("", "rlft's vLLM sets its own"),
    "vllm_tensor_parallel_size": ("", "rlft's vLLM is one GPU per process"),
    "vllm_importance_sampling_correction": ("", "no vLLM/trainer logprob correction in rlft"),
    "vllm_server_base_url": ("", "rlft's vLLM is in-process"),
    "vllm_server_host": ("", "rlft's vLLM is in-process"),
    "vllm_server_port": ("", "rlft's vLLM is in-process"),
}

# TRL defaults that differ from rlft's, for keys a file leaves out: key -> (TRL default, rlft key)
TRL_DEFAULTS = {
    "learning_rate": (1e-6, "train.optim.lr"),
    "lr_scheduler_type": ("linear", "train.optim.lr_schedule"),
    "adam_beta2": (0.999, "train.optim.adam_beta2"),
    "max_completion_length": (256, "rollout.max_new_tokens"),
    "gradient_checkpointing": (True, "model.gradient_checkpointing"),
    "bf16": (True, "model.dtype"),
}
BATCH_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "generation_batch_size",
    "steps_per_generation",
)
# TRL's own reward functions (the `trl grpo` command's names) -> rlft entries (None: none in rlft)
TRL_REWARDS: dict[str, dict[str, Any] | None] = {
    "accuracy_reward": {"fn": "math_answer", "kwargs": {"answer_field": "solution"}},
    "think_format_reward": None,
    "reasoning_accuracy_reward": None,
    "get_soft_overlong_punishment": None,
}
LOSS_TYPES = {  # TRL loss_type -> (rlft algo.loss_agg, how it differs)
    "grpo": (
        "seq_mean",
        "TRL's grpo loss averages each completion's tokens, then the completions: rlft's seq_mean "
        "(rlft's grpo algorithm itself defaults to token_mean)",
    ),
    "dapo": (
        "token_mean",
        "TRL's dapo loss is only DAPO's token-level normaliser: rlft's token_mean. It is not rlft's "
        "dapo algorithm (dynamic sampling, overlong masking, clip-higher): for that set algo.name=dapo",
    ),
    "bnpo": (
        "token_mean",
        "TRL normalises by the tokens of each device's micro-batch, rlft by those of the whole "
        "minibatch (the same with one micro-batch per step)",
    ),
    "dr_grpo": (
        "constant",
        "the Dr. GRPO normaliser: B x max_new_tokens (rlft's constant)",
    ),
}
# TRL scale_rewards (a bool before v0.22) -> rlft algo.scale_rewards
SCALES = {True: "group", False: "none", "true": "group", "false": "none", "group": "group", "batch": "batch"}
SCALES["none"] = "none"


# keys a handler of rlft.config.trl owns; the other mapped keys of RULES are copied as they are
HANDLED = set(BATCH_KEYS) | {
    "num_iterations", "max_steps", "num_train_epochs", "optim",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio",
    "importance_sampling_level", "loss_type", "scale_rewards", "epsilon", "epsilon_high",
    "multi_objective_aggregation", "reward_funcs", "reward_weights", "reward_model_name_or_path",
    "model_init_kwargs", "dtype", "torch_dtype", "trust_remote_code", "bf16", "fp16", "use_cpu",
    "use_peft", "lora_r", "lora_alpha", "lora_target_modules", "use_vllm",
    "eval_strategy", "evaluation_strategy", "eval_steps", "dataset_test_split",
    "report_to", "disable_tqdm", "save_strategy", "save_steps", "push_to_hub", "hub_model_id",
}  # fmt: skip
# TRL (transformers) lr_scheduler_type -> rlft train.optim.lr_schedule
SCHEDULES = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant",
    "constant_with_warmup": "constant",
}


TABLE_START, TABLE_END = "<!-- trl-table:start -->", "<!-- trl-table:end -->"


def table_markdown() -> str:
    """The key table of docs/coming_from_trl.md: the mapped keys, then the others."""
    rows = ["| TRL key | rlft key | difference |", "|---|---|---|"]
    rows += [f"| `{k}` | {_code(r)} | {d or 'same'} |" for k, (r, d) in RULES.items() if r]
    skipped = ", ".join(f"`{k}`" for k, (r, _) in RULES.items() if not r)
    return "\n".join(rows) + (
        f"\n\nKnown and not mapped, each named in a note with the reason: {skipped}. Values that are "
        "rlft's own behaviour pass without a note (`optim: adamw_torch`, `multi_objective_aggregation: "
        "sum_then_normalize`); a key outside this table is noted as unknown.\n"
    )


def _code(keys: str) -> str:
    return ", ".join(f"`{k.strip()}`" for k in keys.split(","))


if __name__ == "__main__":  # python -m rlft.config.trl_keys: the guide's key table
    print(table_markdown(), end="")
