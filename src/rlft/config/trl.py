"""TRL's `GRPOConfig` as an rlft RL config (`rlft rl --trl-config FILE`, docs/coming_from_trl.md).

`from_trl_grpo` reads a GRPOConfig as the dict (or YAML) a TRL run is configured with, including
the keys the `trl grpo` command adds (model, dataset, reward functions), and returns a nested rlft
config dict plus notes: one for each key whose meaning differs in rlft and one for each key it
does not map, by name. No key is dropped silently. The key table, `RULES`, is in `trl_keys`.

TRL's semantics are those of its GRPOTrainer since v0.22 (string `scale_rewards`, `loss_type`
default `dapo`, `beta` default 0); `max_prompt_length` is read as the versions that had it did.

Units: TRL counts completions per device and optimizer steps; rlft counts prompts x samples per
RL step (one generation round) and RL steps. `_batch` converts the first, `_to_rl_steps` the
second (`max_steps`, warm-up, save and eval intervals).

Longer than ~300 lines: one small handler per group of keys that cannot be copied as they are.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlft.config.loader import ConfigError, field_docs
from rlft.config.rl import RLConfig
from rlft.config.trl_keys import (
    BATCH_KEYS,
    HANDLED,
    LOSS_TYPES,
    RULES,
    SCALES,
    SCHEDULES,
    TRL_DEFAULTS,
    TRL_REWARDS,
)


@dataclasses.dataclass
class _Translation:
    args: dict[str, Any]
    world_size: int
    out: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    done: set[str] = dataclasses.field(default_factory=set)

    def has(self, key: str) -> bool:
        return key in self.args

    def take(self, key: str, default: Any = None) -> Any:
        """The key's value (or `default` when absent), marking it translated."""
        self.done.add(key)
        return self.args.get(key, default)

    def set(self, dotted_key: str, value: Any) -> None:
        node = self.out
        *parents, leaf = dotted_key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value

    def get(self, dotted_key: str) -> Any:
        return dotted(self.out).get(dotted_key)

    def note(self, key: str, text: str) -> None:
        self.notes.append(f"{key}: {text}")

    def unmapped(self, key: str, why: str) -> None:
        self.done.add(key)
        self.note(key, f"not mapped ({why})")


def from_trl_grpo(
    trl: Mapping[str, Any],
    reward_funcs: Sequence[Any] | None = None,
    world_size: int = 1,
    dataset_rows: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(nested rlft RL config dict, notes) for a TRL GRPOConfig given as a dict.

    Only the keys present are translated (a key set to None counts as absent); one note lists the
    absent keys whose TRL default differs from rlft's. `reward_funcs`: the run's reward functions
    (`file.py:fn` strings, dicts like a `rewards:` entry, or functions), which `reward_weights`
    weight; without it the file's own `reward_funcs` serve. `world_size`: processes of the TRL run
    (its batch is per device). `dataset_rows`: training rows, to turn `num_train_epochs` into steps.
    """
    tr = _Translation({k: v for k, v in trl.items() if v is not None}, world_size)
    k = _batch(tr)
    if tr.has("num_iterations"):
        tr.set("algo.epochs", int(tr.take("num_iterations")))
        k *= int(tr.args["num_iterations"])
    total = _steps(tr, k, dataset_rows)
    _schedule(tr, k, total)
    _algorithm(tr)
    _rewards(tr, reward_funcs)
    _model(tr)
    _eval(tr, k)
    _logging_and_saving(tr, k, total)
    for key, target in _renames().items():
        if tr.has(key):
            tr.set(target, tr.take(key))
            if RULES[key][1]:
                tr.note(key, f"-> {target}; {RULES[key][1]}")
    for key in tr.args:
        if key not in tr.done:
            tr.unmapped(key, RULES[key][1] if key in RULES else "not a GRPOConfig key this translation knows")
    _absent_defaults(tr)
    return tr.out, tr.notes


def _renames() -> dict[str, str]:
    """The keys copied as they are: one rlft key, no handler of their own."""
    return {key: rlft for key, (rlft, _) in RULES.items() if rlft and key not in HANDLED}


def _batch(tr: _Translation) -> int:
    """rlft's P, G, minibatch and microbatch from TRL's batch keys (TRL's defaults for the absent
    ones); returns the optimizer steps per generation round."""
    given = {k: tr.take(k) for k in BATCH_KEYS if tr.has(k)}
    if not given:
        return 1
    pd = int(given.get("per_device_train_batch_size", 8))
    ga = int(given.get("gradient_accumulation_steps", 1))
    g = int(given.get("num_generations", 8))
    gbs, spg, w = given.get("generation_batch_size"), given.get("steps_per_generation"), tr.world_size
    if gbs is not None and spg is not None:
        raise ConfigError("TRL config: generation_batch_size and steps_per_generation cannot both be set")
    if gbs is None:
        spg = int(spg or ga)
        gbs = pd * w * spg
    elif int(gbs) % (pd * w):
        raise ConfigError(
            f"TRL config: generation_batch_size={gbs} must be a multiple of {pd * w} (per device x processes)"
        )
    else:
        gbs, spg = int(gbs), int(gbs) // (pd * w)
    if gbs % g:
        raise ConfigError(
            f"TRL config: {gbs} completions per generation round do not divide by num_generations={g}"
        )
    p, minibatch, procs = gbs // g, pd * w * ga, "processes" if w > 1 else "process"
    per_round = spg // ga if spg % ga == 0 else 1
    tr.set("rollout.prompts_per_step", p)
    tr.set("rollout.samples_per_prompt", g)
    tr.set("train.minibatch_size", minibatch if per_round > 1 else 0)
    tr.set("train.microbatch_size", pd)
    defaults = [
        f"{k}={v}" for k, v in (("per_device_train_batch_size", 8), ("num_generations", 8)) if k not in given
    ]
    tr.note(
        "batch",
        f"TRL counts completions, rlft prompts x samples: per_device_train_batch_size {pd} x {w} {procs} "
        f"x steps_per_generation {spg} = {gbs} completions per generation round = rollout.prompts_per_step "
        f"{p} x rollout.samples_per_prompt {g}; {minibatch} completions per optimizer step "
        f"(train.minibatch_size, 0 = the whole round), {pd} per forward/backward (train.microbatch_size). "
        f"Assumed {w} {procs}" + (f" and TRL's defaults {', '.join(defaults)}" if defaults else ""),
    )
    if spg % ga:
        tr.note(
            "steps_per_generation",
            f"{spg} is not a multiple of gradient_accumulation_steps {ga}: rlft takes one optimizer step per "
            "RL step, on the whole round",
        )
    return per_round


def _to_rl_steps(tr: _Translation, key: str, n: float, k: int) -> int:
    """TRL optimizer steps -> rlft RL steps (k optimizer steps per RL step), rounded up."""
    steps = math.ceil(n / k)
    if k > 1:
        tr.note(key, f"{n:g} optimizer steps = {steps} RL steps ({k} optimizer steps per RL step)")
    return steps


def _steps(tr: _Translation, k: int, dataset_rows: int | None) -> int | None:
    """train.steps from max_steps, or from num_train_epochs and the row count; returns TRL's
    total optimizer steps when known."""
    max_steps, epochs = int(tr.take("max_steps", -1)), tr.take("num_train_epochs")
    if max_steps > 0:
        tr.set("train.steps", _to_rl_steps(tr, "max_steps", max_steps, k))
        if epochs is not None:
            tr.note("num_train_epochs", "ignored: max_steps is set (as in TRL)")
        return max_steps
    if epochs is None:
        return None
    p = tr.get("rollout.prompts_per_step")
    if dataset_rows and p:
        steps = math.ceil(float(epochs) * dataset_rows / p)
        tr.set("train.steps", steps)
        tr.note(
            "num_train_epochs",
            f"{epochs:g} x {dataset_rows} rows / {p} prompts per step = {steps} train.steps",
        )
        return steps * k
    tr.unmapped(
        "num_train_epochs", f"{RULES['num_train_epochs'][1]}; one epoch = rows / rollout.prompts_per_step"
    )
    return None


def _schedule(tr: _Translation, k: int, total: int | None) -> None:
    optim = tr.take("optim", "adamw_torch")
    if not str(optim).startswith("adamw_torch"):
        tr.unmapped("optim", f"{optim}: {RULES['optim'][1]}")
    kind = tr.take("lr_scheduler_type")
    warmup, ratio = float(tr.take("warmup_steps", 0)), float(tr.take("warmup_ratio", 0))
    if 0 < warmup < 1:  # transformers reads a warmup_steps below 1 as a ratio
        ratio, warmup = warmup, 0.0
    if ratio and not warmup:
        if total is None:
            tr.unmapped("warmup_ratio", "needs max_steps: set train.optim.warmup_steps")
        else:
            warmup = math.ceil(ratio * total)
            tr.note("warmup_ratio", f"{ratio:g} x {total} steps = {int(warmup)} warm-up steps")
    kwargs = tr.take("lr_scheduler_kwargs", {})
    kwargs = json.loads(kwargs) if isinstance(kwargs, str) else dict(kwargs)
    if kind == "cosine_with_min_lr" and ("min_lr_rate" in kwargs or tr.has("learning_rate")):
        kind = "cosine"
        if "min_lr_rate" in kwargs:
            ratio_min = float(kwargs["min_lr_rate"])
        else:  # min_lr in absolute terms
            ratio_min = float(kwargs.get("min_lr", 0.0)) / float(tr.args["learning_rate"])
        tr.set("train.optim.min_lr_ratio", ratio_min)
    elif kwargs:
        tr.unmapped("lr_scheduler_kwargs", f"{kwargs}: only cosine_with_min_lr's min_lr_rate / min_lr are")
    if kind is not None and kind not in SCHEDULES:
        tr.unmapped("lr_scheduler_type", f"{kind}: rlft has constant, linear and cosine")
    elif kind is not None:
        tr.set("train.optim.lr_schedule", SCHEDULES[kind])
        if kind == "constant" and warmup:
            tr.note("lr_scheduler_type", "TRL's `constant` has no warm-up, so neither has rlft's here")
            warmup = 0
    if warmup or tr.has("warmup_steps"):
        tr.set("train.optim.warmup_steps", _to_rl_steps(tr, "warmup_steps", warmup, k) if warmup else 0)


def _algorithm(tr: _Translation) -> None:
    level = tr.take("importance_sampling_level", "token")
    if level == "sequence":
        tr.set("algo.name", "gspo")
        tr.note(
            "importance_sampling_level",
            "sequence -> algo.name=gspo (GSPO's sequence-level ratio; rlft's gspo defaults, clip 3e-4 / 4e-4 "
            "and seq_mean, give way to the TRL keys set here)",
        )
    elif level != "token":
        tr.unmapped("importance_sampling_level", f"{level}: rlft has token and sequence (gspo)")
    loss_type = tr.take("loss_type")
    if loss_type in LOSS_TYPES:
        agg, why = LOSS_TYPES[loss_type]
        tr.set("algo.loss_agg", agg)
        tr.note("loss_type", f"{loss_type} -> algo.loss_agg={agg}: {why}")
        if loss_type == "dr_grpo" and SCALES.get(_lower(tr.args.get("scale_rewards", "group"))) != "none":
            tr.note(
                "loss_type",
                "dr_grpo changes only the normaliser: rewards are still divided by the group std "
                "(Dr. GRPO drops that too: scale_rewards: false, rlft algo.scale_rewards=none)",
            )
    elif loss_type is not None:
        tr.unmapped("loss_type", f"{loss_type}: no such loss in rlft (grpo, dapo, bnpo and dr_grpo are)")
    if tr.has("scale_rewards"):
        value = tr.take("scale_rewards")
        if SCALES.get(_lower(value)) is None:
            tr.unmapped("scale_rewards", f"{value}: rlft has group, batch and none")
        else:
            tr.set("algo.scale_rewards", SCALES[_lower(value)])
    if tr.has("epsilon"):  # TRL's epsilon_high defaults to epsilon
        tr.set("algo.clip_eps_low", float(tr.take("epsilon")))
        tr.set("algo.clip_eps_high", float(tr.args.get("epsilon_high", tr.args["epsilon"])))
    if tr.has("epsilon_high"):
        tr.set("algo.clip_eps_high", float(tr.take("epsilon_high")))
    aggregation = tr.take("multi_objective_aggregation", "sum_then_normalize")
    if aggregation != "sum_then_normalize":
        tr.unmapped(
            "multi_objective_aggregation", f"{aggregation}: {RULES['multi_objective_aggregation'][1]}"
        )


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _reward_entry(spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"fn": spec}
    if isinstance(spec, Mapping):
        return dict(spec)
    if callable(spec):
        name = getattr(spec, "__name__", type(spec).__name__)
        return {"fn": name, "name": name}
    raise ConfigError(f"a reward function must be a spec string, a mapping or a function, got {spec!r}")


def _trl_reward(tr: _Translation, name: str) -> dict[str, Any] | None:
    """A `trl grpo` reward name as an rlft entry (None: no equivalent, noted)."""
    if name not in TRL_REWARDS:
        return {"fn": name}  # a dotted import path: rlft reads pkg.mod.fn too
    entry = TRL_REWARDS[name]
    if entry is None:
        tr.note("reward_funcs", f"{name}: not mapped (no rlft equivalent: give rlft a reward in its place)")
        return None
    tr.note("reward_funcs", f"{name} -> {entry['fn']} (rlft's answer check against the `solution` column)")
    return json.loads(json.dumps(entry))


def _rewards(tr: _Translation, reward_funcs: Sequence[Any] | None) -> None:
    weights, model, own = (
        tr.take(k) for k in ("reward_weights", "reward_model_name_or_path", "reward_funcs")
    )
    entries: list[dict[str, Any] | None] = [{"model": [model]}] if model is not None else []
    if model is not None:
        tr.note("reward_model_name_or_path", f"-> rewards[0].model; {RULES['reward_model_name_or_path'][1]}")
    if reward_funcs is not None:
        entries += [_reward_entry(s) for s in reward_funcs]
        if own is not None:
            tr.note("reward_funcs", "not mapped (the reward functions given with the file replace these)")
    elif own is not None:
        entries += [_trl_reward(tr, name) for name in ([own] if isinstance(own, str) else own)]
    if weights is None and model is None and own is None:
        return  # nothing in the file says anything about the rewards
    if weights is not None:
        if len(weights) != len(entries):
            raise ConfigError(
                f"TRL config: reward_weights has {len(weights)} weights for {len(entries)} rewards"
            )
        for entry, weight in zip(entries, weights, strict=True):
            if entry is not None:
                entry["weight"] = float(weight)
    kept = [e for e in entries if e is not None]
    if kept:
        tr.set("rewards", kept)
    else:
        tr.note("rewards", "no reward function could be mapped: rlft keeps its own `rewards:` list")


def _model(tr: _Translation) -> None:
    init = tr.take("model_init_kwargs", {})
    init = json.loads(init) if isinstance(init, str) else dict(init)
    top = tr.take("dtype") or tr.take("torch_dtype")
    dtype = init.pop("dtype", None) or init.pop("torch_dtype", None) or top
    remote = init.pop("trust_remote_code", None)
    if remote is not None or tr.has("trust_remote_code"):
        tr.set("model.trust_remote_code", bool(tr.take("trust_remote_code", remote)))
    for extra in init:
        tr.note(f"model_init_kwargs.{extra}", "not mapped (rlft loads the model with its own arguments)")
    bf16, fp16 = tr.take("bf16"), tr.take("fp16")
    if dtype not in (None, "auto"):
        tr.set("model.dtype", str(dtype).removeprefix("torch."))
        if bf16 or fp16:
            tr.note("bf16" if bf16 else "fp16", f"no mixed precision in rlft: the parameters are in {dtype}")
    elif bf16 or fp16:
        key = "bf16" if bf16 else "fp16"
        tr.set("model.dtype", "bfloat16" if bf16 else "float16")
        tr.note(key, f"-> model.dtype; {RULES[key][1]} (rlft's default float32 is the fastest on CPU)")
    elif bf16 is not None or fp16 is not None:
        tr.set("model.dtype", "float32")
    if dtype == "auto":
        tr.note("dtype", "auto: not mapped (rlft loads model.dtype, float32 unless set)")
    if tr.take("use_cpu"):
        tr.set("model.device", "cpu")
    lora = {k: tr.take(k) for k in ("lora_r", "lora_alpha", "lora_target_modules") if tr.has(k)}
    if tr.take("use_peft"):
        tr.set("model.lora_rank", int(lora.get("lora_r", 16)))
        if "lora_alpha" in lora:
            tr.set("model.lora_alpha", float(lora["lora_alpha"]))
        targets = lora.get("lora_target_modules")
        if targets is not None:
            tr.set("model.lora_targets", targets if isinstance(targets, str) else ",".join(targets))
    else:
        for key in lora:
            tr.unmapped(key, "use_peft is not set, so TRL ignores it too")
    if tr.has("use_vllm"):
        if tr.take("use_vllm"):
            tr.set("rollout.backend", "vllm")
            tr.note("use_vllm", f"-> rollout.backend=vllm; {RULES['use_vllm'][1]}")
        else:
            tr.note(
                "use_vllm", "false: rlft's own decode loop (rollout.backend hf_generate is TRL's generate)"
            )


def _eval(tr: _Translation, k: int) -> None:
    given = tr.has("eval_strategy") or tr.has("evaluation_strategy")
    strategy = tr.take("eval_strategy", tr.take("evaluation_strategy", "no"))
    steps, split = tr.take("eval_steps"), tr.take("dataset_test_split")
    if strategy == "steps":
        every = steps if steps is not None else tr.args.get("logging_steps", 10)
        tr.set("eval.every", _to_rl_steps(tr, "eval_steps", float(every), k))
    elif strategy == "no" and given:
        tr.set("eval.every", 0)
    elif strategy != "no":
        tr.unmapped("eval_strategy", f"{strategy}: rlft evaluates every N steps (eval.every)")
    if given and strategy in ("steps", "no"):
        tr.note("eval_strategy", f"{strategy} -> eval.every; {RULES['eval_strategy'][1]}")
    if steps is not None and strategy != "steps":
        tr.unmapped("eval_steps", f"eval_strategy is `{strategy}`, so TRL ignores it too")
    if strategy != "no" and tr.has("dataset_name"):
        tr.set("eval.path", tr.args["dataset_name"])
        tr.set("eval.split", split or "test")
        tr.note("dataset_test_split", f"-> eval.path=dataset_name, eval.split={split or 'test'} (TRL's way)")
    elif split is not None:
        tr.unmapped("dataset_test_split", "TRL evaluates on it only with dataset_name and an eval_strategy")
    if tr.has("dataset_name") and tr.get("eval.path") is None:
        tr.note(
            "dataset_name",
            "rlft holds out eval.heldout_fraction (default 0.1) of its rows to evaluate on, never trained "
            "on; TRL trains on them all (eval.heldout_fraction=0: the same)",
        )


def _logging_and_saving(tr: _Translation, k: int, total: int | None) -> None:
    if tr.has("report_to"):
        report = tr.take("report_to")
        names = [report] if isinstance(report, str) else list(report)
        if names in (["none"], []):
            tr.set("log.backends", [])
        elif "all" in names:
            tr.unmapped("report_to", "all: name the backends (tensorboard, wandb, trackio)")
        else:
            known = [n for n in names if n in ("tensorboard", "wandb", "trackio")]
            tr.set("log.backends", known)
            for other in sorted(set(names) - set(known)):
                tr.note("report_to", f"{other}: not mapped ({RULES['report_to'][1]})")
    if tr.has("disable_tqdm"):
        tr.set("log.progress", not tr.take("disable_tqdm"))
    save, n = tr.take("save_strategy", "steps"), tr.take("save_steps")
    if save == "no":
        tr.set("train.save_every", 0)
        tr.note("save_strategy", f"no -> train.save_every=0; {RULES['save_strategy'][1]}")
    elif save != "steps":
        tr.unmapped("save_strategy", f"{save}: rlft saves every N steps (train.save_every)")
    if n is not None and save != "steps":
        tr.unmapped("save_steps", f"save_strategy is `{save}`")
    elif n is not None and float(n) < 1 and total is None:
        tr.unmapped("save_steps", "a ratio needs max_steps: set train.save_every")
    elif n is not None:
        n = float(n) * total if float(n) < 1 and total else float(n)
        tr.set("train.save_every", _to_rl_steps(tr, "save_steps", n, k))
    hub_id = tr.take("hub_model_id")
    if tr.take("push_to_hub"):
        if hub_id is not None:
            tr.set("hub.model_id", hub_id)
        else:
            tr.unmapped("push_to_hub", "set hub.model_id (TRL names the repo after output_dir)")
    elif hub_id is not None:
        tr.unmapped("hub_model_id", "push_to_hub is not set, so TRL does not push")


def _absent_defaults(tr: _Translation) -> None:
    """One note naming the absent keys whose TRL default differs from what rlft will use."""
    rlft = {key: default for key, default, _ in field_docs(RLConfig)}
    dtype_set = tr.get("model.dtype") is not None
    gaps = [
        f"{key} (TRL {trl_default}; rlft's default {target}={rlft[target]})"
        for key, (trl_default, target) in TRL_DEFAULTS.items()
        if key not in tr.args and not (key == "bf16" and dtype_set)
    ]
    if not any(k in tr.args for k in BATCH_KEYS):
        gaps.append("the batch (TRL 8 completions per step, 1 prompt x 8; rlft's default 8 prompts x 8)")
    if "max_steps" not in tr.args and "num_train_epochs" not in tr.args:
        gaps.append(f"max_steps (TRL 3 epochs; rlft's default train.steps={rlft['train.steps']})")
    if tr.get("algo.name") == "gspo":
        if "epsilon" not in tr.args:
            gaps.append("epsilon (TRL 0.2; rlft's gspo 3e-4 / 4e-4)")
        if "loss_type" not in tr.args:
            gaps.append("loss_type (TRL dapo = token_mean; rlft's gspo seq_mean)")
    if gaps:
        tr.note(
            "defaults",
            "absent here, so these keep rlft's values (from --config, else its defaults) where TRL's "
            "defaults differ: " + "; ".join(gaps),
        )


def dotted(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (lists stay values)."""
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            flat.update(dotted(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v
    return flat
