"""The pipeline plan: validation errors name the stage and the field, wiring points each stage at
the outputs of the stages it reads from, and the config hash follows a stage's own config and
those of its inputs (so a change reruns exactly the stages downstream of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rlft.config.loader import ConfigError, build
from rlft.config.pipeline import PipelineConfig, load_pipeline_config, plan_pipeline

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = {k: str(ROOT / "configs" / f"{f}.yaml") for k, f in [("sft", "sft_tiny"), ("rl", "grpo_tiny"),
           ("rm", "rm_tiny"), ("distill", "distill_tiny"), ("dpo", "dpo_tiny")]}  # fmt: skip


def stage(name: str, kind: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, **({"config": CONFIGS[kind]} if kind in CONFIGS else {}), **kw}


def five_stages() -> list[dict[str, Any]]:
    """sft, rm (independent), rl (policy from sft, reward model from rm), distill (rl teaches),
    eval (the student on rl's held-out set)."""
    return [
        stage("sft", "sft"),
        stage("rm", "rm"),
        stage("rl", "rl", model_from="sft", reward_model_from="rm"),
        stage("distill", "distill", model_from="rl"),
        stage("eval", "eval", model_from="distill", limit=4),
    ]


def plan(stages: list[dict[str, Any]], out: str = "/runs/p", **top: Any) -> dict[str, Any]:
    cfg = build(PipelineConfig, {"output_dir": out, "stages": stages, **top})
    return {s.name: s for s in plan_pipeline(cfg)}


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([stage("a", "sft"), stage("b", "ppo")], "stage 'b': kind: unknown kind 'ppo'"),
        ([stage("a", "sft"), stage("a", "rl")], "stage 'a': name: 'a' is used twice"),
        (
            [stage("a", "sft", model_from="b"), stage("b", "sft")],
            "stage 'a': model_from: 'b' is not an earlier",
        ),
        ([stage("a", "rl", model_from="zz")], "stage 'a': model_from: 'zz' is not an earlier stage"),
        ([stage("r", "rm"), stage("a", "rl", model_from="r")], "stage 'a': model_from: 'r' is a rm stage"),
        (
            [stage("s", "sft"), stage("a", "rl", reward_model_from="s")],
            "stage 'a': reward_model_from: 's' is a sft",
        ),
        (
            [stage("r", "rm"), stage("a", "dpo", reward_model_from="r")],
            "stage 'a': reward_model_from: only rl",
        ),
        (
            [stage("d", "distill"), stage("a", "sft", data_from="d")],
            "stage 'a': data_from: 'd' must have mode=traces",
        ),
        ([stage("s", "sft"), stage("e", "eval")], "stage 'e': model_from: an eval stage needs"),
        (
            [stage("s", "sft"), stage("e", "eval", model_from="s")],
            "stage 'e': data: empty, and no earlier rl",
        ),
        ([stage("s", "sft", limit=3)], "stage 's': limit: only eval stages"),
        ([stage("a b", "sft")], "stages[0].name: 'a b' must be"),
        ([stage("seed", "sft")], "stage 'seed': name: 'seed' is used twice (or is a pipeline key)"),
        ([stage("s", "sft", config="/nonexistent.yaml")], "stage 's': config: config file not found"),
    ],
)
def test_plan_errors_name_stage_and_field(stages, message):
    with pytest.raises(ConfigError) as e:
        plan(stages)
    assert message in str(e.value)


def test_typo_in_a_late_stage_fails_the_whole_plan():
    stages = five_stages()
    stages[3]["overrides"] = {"train.stpes": 2}
    with pytest.raises(ConfigError, match=r"stage 'distill': config/overrides: unknown config key "
                       r"'train.stpes'; did you mean 'train.steps'\?"):  # fmt: skip
        plan(stages)
    stages[3]["overrides"] = {"train.steps": "two"}
    with pytest.raises(ConfigError, match="stage 'distill'.*'train.steps' must be an integer"):
        plan(stages)


def test_rl_checks_run_before_anything(tmp_path):
    from rlft.pipeline import check_stage_configs

    stages = five_stages()
    stages[2]["overrides"] = {"algo.name": "grop"}
    with pytest.raises(ConfigError, match="stage 'rl': .*did you mean 'grpo'"):
        check_stage_configs(list(plan(stages).values()))
    stages[2]["overrides"] = {"train.minibatch_size": 5}  # 4 prompts x 4 samples = 16 sequences
    with pytest.raises(ConfigError, match="stage 'rl': .*'train.minibatch_size'=5 must divide"):
        check_stage_configs(list(plan(stages).values()))


def test_wiring_points_each_stage_at_its_inputs():
    p = plan(five_stages(), out="/runs/p")
    assert p["sft"].config["output_dir"] == "/runs/p/sft" and p["sft"].config["resume"] is False
    assert p["rl"].config["model"]["path"] == "/runs/p/sft/final"
    # the rl config's own rewards stay; the reward model is appended
    rewards = p["rl"].config["rewards"]
    assert [r["fn"] for r in rewards[:2]] == ["numeric_answer", "examples/rewards.py:digit_density"]
    assert rewards[2]["model"] == ["/runs/p/rm/final"] and len(rewards) == 3
    assert p["distill"].config["teacher"] == "/runs/p/rl/final"
    assert p["eval"].config["model"] == "/runs/p/distill/final"
    assert p["eval"].config["data"] == "/runs/p/rl/heldout.jsonl"  # the rl stage's held-out set
    assert p["eval"].config["limit"] == 4
    assert p["rl"].inputs == ("sft", "rm") and p["eval"].inputs == ("distill", "rl")
    assert p["sft"].config["model"]["path"] == "tiny-random-llama"  # no model_from: the file's


def test_sft_on_distill_traces_and_seed_default():
    stages = [
        stage("teach", "distill", overrides={"mode": "traces", "data.num_prompts": 8}),
        stage("student", "sft", data_from="teach", overrides={"seed": 7}),
        stage("other", "sft"),
    ]
    p = plan(stages, out="/o", seed=3)
    assert p["student"].config["data"]["path"] == "/o/teach/traces.jsonl"
    assert p["student"].config["seed"] == 7 and p["other"].config["seed"] == 3


def test_hash_follows_own_config_and_inputs():
    base = plan(five_stages())
    assert {k: s.hash for k, s in plan(five_stages()).items()} == {k: s.hash for k, s in base.items()}

    stages = five_stages()
    stages[0]["overrides"] = {"train.steps": 4}  # sft changed: everything reading from it
    changed = {k for k, s in plan(stages).items() if s.hash != base[k].hash}
    assert changed == {"sft", "rl", "distill", "eval"}  # rm reads from no stage: unchanged

    stages = five_stages()
    stages[1]["overrides"] = {"train.optim.lr": 0.01}  # the reward model changed
    changed = {k for k, s in plan(stages).items() if s.hash != base[k].hash}
    assert changed == {"rm", "rl", "distill", "eval"}

    stages = five_stages()
    stages[4]["max_new_tokens"] = 9
    assert {k for k, s in plan(stages).items() if s.hash != base[k].hash} == {"eval"}


def test_cli_overrides_address_stages_by_name(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "stages": five_stages()}))
    cfg = load_pipeline_config(str(path), ["rl.train.steps=5", "seed=2", "resume=false"])
    assert cfg.seed == 2 and cfg.resume is False
    p = {s.name: s for s in plan_pipeline(cfg)}
    assert p["rl"].config["train"]["steps"] == 5 and p["rl"].config["seed"] == 0  # its file says 0
    assert p["sft"].config["seed"] == 2  # sft_tiny.yaml sets no seed: the pipeline's
    with pytest.raises(ConfigError, match=r"unknown config key 'sedd'; did you mean 'seed'\?"):
        load_pipeline_config(str(path), ["sedd=1"])


def test_an_eval_stage_scores_as_its_rl_stage_does(tmp_path):
    """A user-task rl stage: its eval stage gets the stage's rewards and prompt format; the built-in
    task's rl stage: answer matching (no rewards)."""
    import json

    data = tmp_path / "user.jsonl"
    data.write_text('{"prompt": "hi", "solution": "1"}\n')
    user = {
        "data.path": str(data),
        "data.chat_template": "none",
        "rewards": [{"fn": "numeric_answer", "weight": 2.0}],
        "eval.pass_threshold": 2.0,
    }
    stages = [stage("rl", "rl", overrides=user), stage("eval", "eval", model_from="rl")]
    c = plan(stages)["eval"].config
    assert [json.loads(r)["fn"] for r in c["reward"]] == ["numeric_answer"]
    assert json.loads(c["reward"][0])["weight"] == 2.0
    assert c["chat_template"] == "none" and c["pass_threshold"] == 2.0
    builtin = plan([stage("rl", "rl"), stage("eval", "eval", model_from="rl")])["eval"].config
    assert builtin["reward"] == [] and builtin["chat_template"] == "auto"
