"""Config of `rlft pipeline` (stages sft -> rm -> rl -> distill -> dpo -> eval, any subset, in the
listed order) and the plan: every stage's fully resolved config and its hash, validated before
anything runs."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlft.config.loader import ConfigError, build, field, load_yaml, merge_overrides, parse_override, to_dict

StageKind = Literal["sft", "rm", "rl", "dpo", "distill", "eval"]
SCHEMAS = {  # kind -> config class, as `rlft <kind>` loads it (eval: EvalStageConfig below)
    "rl": ("rlft.config.rl", "RLConfig"),
    "sft": ("rlft.config.sft", "SFTConfig"),
    "distill": ("rlft.config.distill", "DistillConfig"),
    "rm": ("rlft.config.preference", "RMConfig"),
    "dpo": ("rlft.config.preference", "DPOConfig"),
    "eval": ("rlft.config.pipeline", "EvalStageConfig"),
}
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
EVAL_ONLY = ("data", "samples", "max_new_tokens", "limit")


@dataclass(frozen=True)
class StageSpec:
    name: str = field("", "unique stage name; the stage's run directory is output_dir/<name>")
    kind: str = field("", "sft | rm | rl | dpo | distill | eval")
    config: str = field("", "that kind's YAML config (empty = its defaults); paths relative to the cwd")
    overrides: dict[str, Any] = field({}, "dotted key -> value, applied after the file")
    model_from: str = field("", "earlier stage whose final/ is this stage's model.path (distill: teacher)")
    reward_model_from: str = field(
        "", "rl: earlier rm stage whose final/ is appended to the rewards (none in the file = it alone)"
    )
    data_from: str = field(
        "", "sft: a distill stage (mode=traces) whose traces it trains on; eval: an rl stage"
    )
    data: str = field("", "eval: JSONL of prompt/answer rows (empty = an rl stage's held-out set)")
    samples: int = field(1, "eval: completions per prompt (K)")
    max_new_tokens: int = field(64, "eval: completion budget in tokens")
    limit: int = field(0, "eval: only the first N rows (0 = all)")


@dataclass(frozen=True)
class EvalStageConfig:
    """The resolved config of an eval stage: the arguments of `rlft eval`."""

    model: str = field("", "model to evaluate (set by model_from)")
    data: str = field("", "JSONL of prompt/answer rows")
    samples: int = field(1, "completions per prompt (K)")
    max_new_tokens: int = field(64, "completion budget in tokens")
    limit: int = field(0, "only the first N rows (0 = all)")
    temperature: float | None = field(None, "sampling temperature (default: greedy for K=1, else 1.0)")
    prompt_field: str = field("prompt", "row field holding the prompt")
    answer_field: str = field("answer", "row field holding the reference answer")
    system_prompt: str | None = field(None, "system message prepended to string prompts")
    chat_template: str = field("auto", "auto (chat template) or none (prompts tokenised as written)")
    chat_template_kwargs: dict[str, Any] = field({}, "extra variables for the chat template")
    reward: list[str] = field(
        [], "rewards scoring the completions (names or JSON reward entries; empty = answer matching)"
    )
    pass_threshold: float = field(1.0, "reward scoring: a completion is correct when its reward >= this")
    seed: int = field(0, "sampling seed")


@dataclass(frozen=True)
class PipelineConfig:
    output_dir: str = field("runs/pipeline", "run directory; each stage runs in output_dir/<name>")
    seed: int = field(0, "seed of every stage whose config file and overrides set none")
    resume: bool = field(
        True,
        "continue an interrupted stage from its newest checkpoint (false = start it over); complete "
        "stages whose config is unchanged are always skipped",
    )
    stages: list[StageSpec] = field([], "stages, run in this order")


@dataclass(frozen=True)
class PlannedStage:
    name: str
    kind: str
    dir: Path
    config: dict[str, Any]  # fully resolved (every key), output_dir = dir, resume = false
    hash: str  # of kind + config + the hashes of the stages it reads from
    inputs: tuple[str, ...]  # names of the earlier stages it reads from


def load_pipeline_config(path: str | None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Like `load_config`, plus `<stage>.<dotted key>=value` overrides that go into that stage's
    `overrides` (e.g. `rl.train.steps=5`)."""
    data = load_yaml(path) if path else {}
    top = [f.name for f in dataclasses.fields(PipelineConfig)]
    stages = {s.get("name"): s for s in data.get("stages", []) if isinstance(s, Mapping)}
    plain = []
    for item in overrides:
        keys, value = parse_override(item)
        if keys[0] in top or keys[0] not in stages:
            plain.append(item)
        else:
            stages[keys[0]].setdefault("overrides", {})[".".join(keys[1:])] = value
    try:
        return build(PipelineConfig, merge_overrides(data, plain))
    except ConfigError as e:
        raise ConfigError(f"{path + ': ' if path else ''}{e}") from None


def plan_pipeline(cfg: PipelineConfig) -> list[PlannedStage]:
    """Validate the whole plan and resolve every stage's config; raises ConfigError naming the
    stage and field. Reads the stage config files; runs nothing."""
    if not cfg.stages:
        raise ConfigError("pipeline has no stages")
    plan: dict[str, PlannedStage] = {}
    for i, spec in enumerate(cfg.stages):
        _check_spec(spec, i, plan)
        plan[spec.name] = _resolve(cfg, spec, plan)
    return list(plan.values())


def _check_spec(spec: StageSpec, index: int, earlier: Mapping[str, PlannedStage]) -> None:
    where = f"stage '{spec.name or index}'"
    if not NAME_RE.match(spec.name):
        raise ConfigError(f"stages[{index}].name: '{spec.name}' must be non-empty letters, digits, _ or -")
    if spec.name in earlier or spec.name in {f.name for f in dataclasses.fields(PipelineConfig)}:
        raise ConfigError(f"{where}: name: '{spec.name}' is used twice (or is a pipeline key)")
    if spec.kind not in SCHEMAS:
        raise ConfigError(f"{where}: kind: unknown kind '{spec.kind}' (one of {', '.join(SCHEMAS)})")
    _check_from(where, "model_from", spec.model_from, earlier, ("sft", "rl", "distill", "dpo"))
    if spec.reward_model_from and spec.kind != "rl":
        raise ConfigError(f"{where}: reward_model_from: only rl stages take a reward model")
    _check_from(where, "reward_model_from", spec.reward_model_from, earlier, ("rm",))
    data_kinds = {"sft": ("distill",), "eval": ("rl",)}.get(spec.kind)
    if spec.data_from and not data_kinds:
        raise ConfigError(f"{where}: data_from: only sft (from distill) and eval (from rl) stages take it")
    _check_from(where, "data_from", spec.data_from, earlier, data_kinds or ())
    if spec.kind == "eval" and not spec.model_from:
        raise ConfigError(f"{where}: model_from: an eval stage needs the stage whose model it evaluates")
    defaults = StageSpec()
    for key in EVAL_ONLY if spec.kind != "eval" else ():
        if getattr(spec, key) != getattr(defaults, key):
            raise ConfigError(f"{where}: {key}: only eval stages take it (use overrides)")


def _check_from(
    where: str, key: str, name: str, earlier: Mapping[str, PlannedStage], kinds: Sequence[str]
) -> None:
    if not name:
        return
    if name not in earlier:
        raise ConfigError(f"{where}: {key}: '{name}' is not an earlier stage (earlier: {list(earlier)})")
    if earlier[name].kind not in kinds:
        raise ConfigError(f"{where}: {key}: '{name}' is a {earlier[name].kind} stage, need {'/'.join(kinds)}")


def _resolve(cfg: PipelineConfig, spec: StageSpec, plan: Mapping[str, PlannedStage]) -> PlannedStage:
    stage_dir = Path(cfg.output_dir) / spec.name
    try:
        data = load_yaml(spec.config) if spec.config else {}
    except ConfigError as e:
        raise ConfigError(f"stage '{spec.name}': config: {e}") from None
    data.setdefault("seed", cfg.seed)
    if spec.kind == "eval":
        data = {**_eval_defaults(spec, plan), **data}
    for key, value in spec.overrides.items():
        _set(data, key, value)
    _wire(spec, data, plan)
    data["output_dir"], data["resume"] = str(stage_dir), False
    if spec.kind == "eval":
        del data["output_dir"], data["resume"]
    try:
        resolved = to_dict(build(_schema(spec.kind), data))
    except ConfigError as e:
        raise ConfigError(f"stage '{spec.name}': config/overrides: {e}") from None
    names = [spec.model_from, spec.reward_model_from, spec.data_from]
    if spec.kind == "eval" and not spec.data:
        names.append(_heldout_stage(spec, plan).name)
    inputs = tuple(dict.fromkeys(n for n in names if n))
    key = {"kind": spec.kind, "config": resolved, "inputs": [plan[n].hash for n in inputs]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return PlannedStage(spec.name, spec.kind, stage_dir, resolved, digest, inputs)


def _wire(spec: StageSpec, data: dict[str, Any], plan: Mapping[str, PlannedStage]) -> None:
    """Point this stage's config at the outputs of the stages it reads from."""
    if spec.model_from:
        final = str(plan[spec.model_from].dir / "final")
        key = {"distill": "teacher", "eval": "model"}.get(spec.kind, "model.path")
        _set(data, key, final)
    if spec.reward_model_from:
        reward = {"model": [str(plan[spec.reward_model_from].dir / "final")]}
        data["rewards"] = [*data.get("rewards", []), reward]
    if spec.kind == "sft" and spec.data_from:
        src = plan[spec.data_from]
        if src.config["mode"] != "traces":
            raise ConfigError(f"stage '{spec.name}': data_from: '{src.name}' must have mode=traces")
        _set(data, "data.path", src.config["traces"]["path"] or str(src.dir / "traces.jsonl"))


def _eval_defaults(spec: StageSpec, plan: Mapping[str, PlannedStage]) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(spec, k) for k in EVAL_ONLY}
    if not spec.data:
        rl = _heldout_stage(spec, plan)
        ev, d = rl.config["eval"], rl.config["data"]
        if not (ev["path"] or ev["before"] or ev["after"]):
            raise ConfigError(
                f"stage '{spec.name}': data: empty, and rl stage '{rl.name}' writes no held-out set "
                "(set its eval.before or eval.after, or give data)"
            )
        out["data"] = ev["path"] or str(rl.dir / "heldout.jsonl")
        out.update(prompt_field=d["prompt_field"], answer_field=d["answer_field"])
        out.update({k: d[k] for k in ("system_prompt", "chat_template", "chat_template_kwargs")})
        out.update(reward=_stage_rewards(rl.config), pass_threshold=ev["pass_threshold"])
    return out


def _stage_rewards(rl_config: Mapping[str, Any]) -> list[str]:
    """How an rl stage scores its held-out set (its eval.reward), as `rlft eval --reward` items:
    none for answer matching, its own reward entries as JSON for `run`, or the one named reward."""
    scoring, user_data = rl_config["eval"]["reward"], bool(rl_config["data"]["path"])
    if scoring == "answer" or (scoring == "auto" and not user_data):
        return []
    if scoring in ("run", "auto"):
        return [json.dumps(entry) for entry in rl_config["rewards"]]
    return [scoring]


def _heldout_stage(spec: StageSpec, plan: Mapping[str, PlannedStage]) -> PlannedStage:
    """The rl stage whose held-out set an eval stage without `data` reads: data_from, else the
    last earlier rl stage."""
    if spec.data_from:
        return plan[spec.data_from]
    rls = [s for s in plan.values() if s.kind == "rl"]
    if not rls:
        raise ConfigError(f"stage '{spec.name}': data: empty, and no earlier rl stage has a held-out set")
    return rls[-1]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for k in parents:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[leaf] = value


def _schema(kind: str) -> type:
    module, name = SCHEMAS[kind]
    return getattr(importlib.import_module(module), name)
