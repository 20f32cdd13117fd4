"""Set-up pieces of the RL loop: models, data, rewards, optimizer, batch arithmetic, final save, eval."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlft.algorithms import get_algorithm
from rlft.algorithms.registry import AdvantageInputs
from rlft.config.loader import ConfigError, to_yaml
from rlft.config.rl import AlgoConfig, RLConfig
from rlft.data.prompts import PromptStream, load_prompt_examples
from rlft.dist.ranks import init_distributed, is_main, main_first, on_global_rows, rank, world_size
from rlft.dist.sharding import is_sharded, prepare_model
from rlft.models.critic import build_critic
from rlft.models.load import (
    AdaptersOff,
    add_lora,
    is_peft,
    load_causal_lm,
    load_tokenizer,
    prepare_tokenizer,
    resolve_device,
    resolve_model_path,
)
from rlft.rewards.scoring import as_named, build_terms
from rlft.rl.inputs import UserObjects
from rlft.rl.update import UpdatePlan
from rlft.rollout.factory import make_generator
from rlft.rollout.sharded import FullParamsGenerator
from rlft.runtime.optim import make_optimizer
from rlft.runtime.seeding import seed_everything

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    model: Any
    ref_model: Any | None
    tok: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    critic: Any = None  # value model (PPO), None otherwise


def batch_arithmetic(cfg: RLConfig) -> dict[str, int]:
    """Derived batch sizes; raises ConfigError naming the keys when they cannot work together."""
    r, t = cfg.rollout, cfg.train
    for key, value in [
        ("rollout.prompts_per_step", r.prompts_per_step),
        ("rollout.samples_per_prompt", r.samples_per_prompt),
        ("train.microbatch_size", t.microbatch_size),
        ("train.length_buckets", t.length_buckets),
        ("train.steps", t.steps),
        ("algo.epochs", cfg.algo.epochs),
        ("rollout.max_new_tokens", r.max_new_tokens),
    ]:
        if value < 1:
            raise ConfigError(f"'{key}' must be >= 1, got {value}")
    sequences = r.prompts_per_step * r.samples_per_prompt
    minibatch = t.minibatch_size or sequences
    if minibatch > sequences or sequences % minibatch:
        raise ConfigError(
            f"'train.minibatch_size'={minibatch} must divide the {sequences} sequences per step "
            f"(rollout.prompts_per_step x rollout.samples_per_prompt)"
        )
    return {
        "sequences_per_step": sequences,
        "minibatch_size": minibatch,
        "microbatch_size": min(t.microbatch_size, minibatch),
        "optimizer_steps_per_rl_step": cfg.algo.epochs * (sequences // minibatch),
        "grad_accumulation": -(-minibatch // t.microbatch_size),
    }


def prompt_token_limit(cfg: RLConfig, model: Any) -> int:
    """data.max_prompt_tokens, lowered so prompt + max_new_tokens fits the model's context."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context is None:
        return cfg.data.max_prompt_tokens
    room = context - cfg.rollout.max_new_tokens
    if room < 1:
        raise ConfigError(
            f"'rollout.max_new_tokens'={cfg.rollout.max_new_tokens} leaves no room for a prompt in the "
            f"model's context of {context} tokens"
        )
    return min(cfg.data.max_prompt_tokens, room)


def setup_run(cfg: RLConfig, reward_fns: Any = None, given: UserObjects | None = None):
    """Resolved config, models, tokenizer, generator, algorithm, rewards, prompt stream and
    optimizer; writes config.yaml (with the algorithm's defaults filled in). `given` holds objects
    the Python API hands over instead of loading them (a model, a tokenizer, datasets)."""
    given = given or UserObjects()
    if given.model is not None:  # config.yaml and the model card name the model trained
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=model_name(given.model)))
    algo = get_algorithm(cfg.algo.name)
    cfg = dataclasses.replace(cfg, algo=algo.resolve(cfg.algo))
    arithmetic = batch_arithmetic(cfg)
    init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    cfg = check_distributed(cfg, algo)
    if world_size() > 1:
        algo = dataclasses.replace(algo, advantage_fn=advantages_over_ranks(algo.advantage_fn))
    terms = build_terms(cfg.rewards, as_named(reward_fns), cfg.data)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_main():
        (out_dir / "config.yaml").write_text(to_yaml(cfg))
        log.info("config:\n%s", to_yaml(cfg))
        log.info("batch arithmetic: %s (%d processes)", json.dumps(arithmetic), world_size())
    device = resolve_device(cfg.model.device)
    model, tok, path = load_policy(cfg, device, given)
    frozen_copy = copy.deepcopy(model) if given.model is not None and not is_peft(model) else None
    model.train()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.model.lora_rank > 0 and not is_peft(model):
        model = add_lora(model, cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.lora_targets)
    model = prepare_model(model, cfg.dist.strategy)
    ref_model = None
    if algo.uses_ref_model(cfg.algo) and is_peft(model):
        ref_model = AdaptersOff(model)
    elif algo.uses_ref_model(cfg.algo):
        ref_model = frozen_copy or load_causal_lm(path, cfg.model.dtype, device, cfg.model.trust_remote_code)
        ref_model = prepare_model(ref_model.eval().requires_grad_(False), cfg.dist.strategy, trainable=False)
    del frozen_copy
    rounds = cfg.algo.max_sampling_rounds if cfg.algo.dynamic_sampling else 1
    needed = cfg.train.steps * cfg.rollout.prompts_per_step * rounds
    limit = prompt_token_limit(cfg, model)
    examples, counts = load_prompt_examples(
        cfg.data,
        tok,
        limit,
        cfg.seed,
        needed,
        out_dir,
        eval_cfg=None if given.eval_dataset is not None else cfg.eval,  # else hold out a share
        rows=given.train_dataset,
    )
    log.info("%d training prompts (%s)", len(examples), counts)
    user_data = bool(cfg.data.path) or given.train_dataset is not None  # the built-in stream is random
    stream = PromptStream(examples, cfg.seed, cfg.data.shuffle and user_data)
    critic = None
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if algo.uses_value_model:
        v = cfg.algo.value
        critic = build_critic(v.kind, v.init_from, model, path, cfg.model.dtype, cfg.model.trust_remote_code)
        critic = prepare_model(critic.to(device).train(), "ddp")
        groups.append({"params": list(critic.parameters()), "lr": v.lr or cfg.train.optim.lr})
    optimizer, scheduler = make_optimizer(groups, cfg.train.optim, cfg.train.steps)
    backend = rollout_backend(cfg, model)
    generator = make_generator(backend, model, tok, cfg.rollout.generation_batch_size, cfg.model.onednn)
    if is_sharded(model):
        generator = FullParamsGenerator(generator, model)
    parts = RunParts(model, ref_model, tok, optimizer, scheduler, critic)
    return cfg, parts, generator, algo, terms, stream


def model_name(model: Any) -> str:
    """The hub id or directory a loaded model came from ("" when it was built in memory)."""
    if isinstance(model, str):
        return model
    base = getattr(model, "base_model", None) if is_peft(model) else None
    config = getattr(base.model if base is not None else model, "config", None)
    return str(getattr(config, "_name_or_path", "") or "")


def load_policy(cfg: RLConfig, device: Any, given: UserObjects) -> tuple[Any, Any, str]:
    """(policy, tokenizer, path): the API's loaded model moved to `device`, or the model of
    cfg.model.path loaded; the tokenizer handed over, else loaded from that path. Seeds every RNG
    (after a possible conversion of the model, before any random init)."""
    if given.model is None:
        with main_first():
            path = resolve_model_path(cfg.model.path)  # may build/convert a model: before seeding
        seed_everything(cfg.seed)
        tok = prepare_tokenizer(given.tokenizer) if given.tokenizer is not None else load_tokenizer(path)
        return load_causal_lm(path, cfg.model.dtype, device, cfg.model.trust_remote_code), tok, path
    seed_everything(cfg.seed)
    path = cfg.model.path
    if given.tokenizer is None and not path:
        raise ConfigError("a model object built in memory needs its tokenizer: train_rl(..., tokenizer=tok)")
    tok = prepare_tokenizer(given.tokenizer) if given.tokenizer is not None else load_tokenizer(path)
    return given.model.to(device), tok, path


def rollout_backend(cfg: RLConfig, model: Any) -> str:
    """rollout.backend with `auto` resolved: hf (rlft's own decode loop) until vLLM has passed its
    parity tests on this device type (`rlft.rollout.vllm.VLLMGenerator` has never run on a GPU, so
    for now always hf; on a CPU hf is as fast, with ~2.6 GB less memory: docs/performance.md); the
    choice and its reason are logged. `rollout.backend=vllm` still picks vLLM by name."""
    if cfg.rollout.backend != "auto":
        return cfg.rollout.backend
    from rlft.rollout.vllm import why_not_vllm

    why = why_not_vllm(model, world_size(), cfg.model.lora_rank > 0)
    log.info("rollout.backend=auto: %s", "vllm" if why is None else f"hf ({why})")
    return "vllm" if why is None else "hf"


def update_plan(cfg: RLConfig) -> UpdatePlan:
    """The update's sizes and forward settings, bound once per run (after check_distributed)."""
    t = cfg.train
    return UpdatePlan(
        minibatch_size=batch_arithmetic(cfg)["minibatch_size"],
        microbatch_size=t.microbatch_size,
        max_grad_norm=t.optim.max_grad_norm,
        max_len=cfg.rollout.max_new_tokens,
        share_prompt=t.share_prompt_forward,
        length_buckets=t.length_buckets,
    )


def check_distributed(cfg: RLConfig, algo: Any) -> RLConfig:
    """ConfigError for what several processes cannot run (yet); under fsdp2 the prompt-sharing
    forward and length buckets are off (their number of forward passes varies by rank, FSDP2
    needs them in step)."""
    if world_size() == 1:
        return cfg
    n, strategy = world_size(), cfg.dist.strategy
    if cfg.rollout.prompts_per_step % n:
        raise ConfigError(
            f"'rollout.prompts_per_step'={cfg.rollout.prompts_per_step} must be a multiple of the "
            f"{n} processes (each takes an equal share of the prompts)"
        )
    one_process, ddp = "run it on one process", "use dist.strategy=ddp"
    unsupported = [
        (bool(cfg.algo.dynamic_sampling), "algo.dynamic_sampling=true", one_process),
        (not algo.update.several_processes, f"algo.name={algo.name}", one_process),
        (cfg.rollout.seed_per_prompt is False, "rollout.seed_per_prompt=false", one_process),
        (cfg.rollout.backend == "vllm", "rollout.backend=vllm", "run it on one process or use backend hf"),
        (strategy == "fsdp2" and cfg.model.lora_rank > 0, "model.lora_rank > 0 with fsdp2", ddp),
        (strategy == "fsdp2" and algo.uses_value_model, f"algo.name={algo.name} (a critic) with fsdp2", ddp),
        (strategy == "fsdp2" and cfg.eval.every > 0, "eval.every > 0 with fsdp2", ddp),
    ]
    for bad, what, instead in unsupported:
        if bad:
            raise ConfigError(f"{what} is not supported on several processes ({n} here) yet: {instead}")
    if strategy == "fsdp2":
        train = dataclasses.replace(cfg.train, share_prompt_forward=False, length_buckets=1)
        cfg = dataclasses.replace(cfg, train=train)
    return cfg


def advantages_over_ranks(advantage_fn: Any) -> Any:
    """advantage_fn applied to the batch of every rank (group ids made distinct per rank), giving
    this rank's rows: batch-wide statistics (whitening, scale_rewards=batch) see the global batch."""

    def over_ranks(x: AdvantageInputs, params: AlgoConfig) -> Any:
        def on_rows(scores: Any, group_ids: Any, mask: Any, kl: Any, values: Any) -> Any:
            return advantage_fn(AdvantageInputs(scores, group_ids, mask, kl, values), params)

        offset = rank() * x.scores.shape[0]
        return on_global_rows(on_rows, x.scores, x.group_ids + offset, x.mask, x.kl, x.values)

    return over_ranks
