"""rlft.config.trl: TRL GRPOConfig keys -> rlft keys, the notes, the CLI's --trl-config, and the key
table of docs/coming_from_trl.md (generated from rlft.config.trl_keys.RULES)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlft.cli.main import main
from rlft.config.loader import ConfigError, build, field_docs
from rlft.config.rl import RLConfig
from rlft.config.trl import from_trl_grpo
from rlft.config.trl_keys import HANDLED, RULES, TABLE_END, TABLE_START, table_markdown
from rlft.config.trl_load import dotted, load_rl_config_with_trl
from rlft.rl.setup import batch_arithmetic

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "coming_from_trl.md"


def mapped(trl: dict, **kw) -> tuple[dict, list[str]]:
    out, notes = from_trl_grpo(trl, **kw)
    return dotted(out), notes


def notes_of(notes: list[str], key: str) -> str:
    return " | ".join(n for n in notes if n.startswith(key + ":"))


def test_batch_in_completions_becomes_prompts_times_samples():
    # TRL: 8 completions per device x 1 process x steps_per_generation (default: gradient
    # accumulation, 2) = 16 completions per generation round; 16 / num_generations 4 = 4 prompts.
    # One optimizer step per round (8 x 2 = 16 completions), 8 completions per forward/backward.
    flat, notes = mapped(
        {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_generations": 4}
    )
    assert flat["rollout.prompts_per_step"] == 4 and flat["rollout.samples_per_prompt"] == 4
    assert flat["train.minibatch_size"] == 0 and flat["train.microbatch_size"] == 8
    assert "16 completions per generation round" in notes_of(notes, "batch")
    assert "Assumed 1 process" in notes_of(notes, "batch")


def test_several_optimizer_steps_per_round_divide_step_counts():
    # 2 processes x 4 per device x steps_per_generation 4 = 32 completions = 4 prompts x 8.
    # An optimizer step takes 4 x 2 x 2 (accumulation) = 16 completions: 2 per round, and
    # num_iterations 2 passes -> k = 4 optimizer steps per RL step. max_steps 100 -> 25 RL steps,
    # save_steps 10 -> ceil(10 / 4) = 3, warmup_steps 8 -> 2.
    trl = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "steps_per_generation": 4,
        "num_generations": 8,
        "num_iterations": 2,
        "max_steps": 100,
        "save_steps": 10,
        "warmup_steps": 8,
    }
    out, notes = from_trl_grpo(trl, world_size=2)
    flat = dotted(out)
    assert (flat["rollout.prompts_per_step"], flat["rollout.samples_per_prompt"]) == (4, 8)
    assert flat["train.minibatch_size"] == 16 and flat["algo.epochs"] == 2
    assert (flat["train.steps"], flat["train.save_every"], flat["train.optim.warmup_steps"]) == (25, 3, 2)
    assert "100 optimizer steps = 25 RL steps (4 optimizer steps per RL step)" in notes_of(notes, "max_steps")
    assert batch_arithmetic(build(RLConfig, out))["optimizer_steps_per_rl_step"] == 4


def test_generation_batch_size_is_the_round_not_rlft_generation_batch_size():
    # 64 completions per round / 8 generations = 8 prompts; 64 / (8 per device x 1) = 8 steps
    # per generation, gradient accumulation 1 -> 8 optimizer steps of 8 completions each
    flat, _ = mapped({"generation_batch_size": 64, "per_device_train_batch_size": 8, "num_generations": 8})
    assert flat["rollout.prompts_per_step"] == 8 and flat["train.minibatch_size"] == 8
    assert "rollout.generation_batch_size" not in flat


def test_absent_batch_keys_take_trl_defaults_and_say_so():
    # num_generations 4 with TRL's default 8 per device: 8 / 4 = 2 prompts
    flat, notes = mapped({"num_generations": 4})
    assert flat["rollout.prompts_per_step"] == 2
    assert "TRL's defaults per_device_train_batch_size=8" in notes_of(notes, "batch")


@pytest.mark.parametrize(
    "trl",
    [
        {"generation_batch_size": 12, "num_generations": 8, "per_device_train_batch_size": 4},
        {"generation_batch_size": 12, "per_device_train_batch_size": 8},
        {"generation_batch_size": 16, "steps_per_generation": 2},
    ],
)
def test_impossible_batches_are_config_errors(trl):
    with pytest.raises(ConfigError, match="TRL config"):
        from_trl_grpo(trl)


@pytest.mark.parametrize(
    ("key", "value", "rlft", "expected"),
    [
        ("output_dir", "runs/x", "output_dir", "runs/x"),
        ("seed", 3, "seed", 3),
        ("learning_rate", 3e-6, "train.optim.lr", 3e-6),
        ("weight_decay", 0.1, "train.optim.weight_decay", 0.1),
        ("adam_beta1", 0.8, "train.optim.adam_beta1", 0.8),
        ("adam_beta2", 0.999, "train.optim.adam_beta2", 0.999),
        ("adam_epsilon", 1e-6, "train.optim.adam_eps", 1e-6),
        ("max_grad_norm", 0.5, "train.optim.max_grad_norm", 0.5),
        ("max_steps", 30, "train.steps", 30),
        ("lr_scheduler_type", "cosine", "train.optim.lr_schedule", "cosine"),
        ("lr_scheduler_type", "constant_with_warmup", "train.optim.lr_schedule", "constant"),
        ("warmup_steps", 5, "train.optim.warmup_steps", 5),
        ("max_completion_length", 128, "rollout.max_new_tokens", 128),
        ("max_prompt_length", 256, "data.max_prompt_tokens", 256),
        ("temperature", 0.7, "rollout.temperature", 0.7),
        ("top_p", 0.9, "rollout.top_p", 0.9),
        ("top_k", 50, "rollout.top_k", 50),
        ("beta", 0.04, "algo.kl_coef", 0.04),
        ("epsilon_high", 0.28, "algo.clip_eps_high", 0.28),
        ("num_iterations", 2, "algo.epochs", 2),
        ("mask_truncated_completions", True, "algo.mask_truncated", True),
        ("use_vllm", True, "rollout.backend", "vllm"),
        ("gradient_checkpointing", True, "model.gradient_checkpointing", True),
        ("bf16", True, "model.dtype", "bfloat16"),
        ("fp16", True, "model.dtype", "float16"),
        ("bf16", False, "model.dtype", "float32"),
        ("model_init_kwargs", {"dtype": "bfloat16"}, "model.dtype", "bfloat16"),
        ("model_init_kwargs", {"trust_remote_code": True}, "model.trust_remote_code", True),
        (
            "chat_template_kwargs",
            {"enable_thinking": False},
            "data.chat_template_kwargs",
            {"enable_thinking": False},
        ),
        ("shuffle_dataset", False, "data.shuffle", False),
        ("model_name_or_path", "org/model", "model.path", "org/model"),
        ("dataset_name", "org/data", "data.path", "org/data"),
        ("dataset_train_split", "train[:90%]", "data.split", "train[:90%]"),
        ("report_to", "wandb", "log.backends", ["wandb"]),
        ("report_to", ["tensorboard", "trackio"], "log.backends", ["tensorboard", "trackio"]),
        ("report_to", "none", "log.backends", []),
        ("save_steps", 25, "train.save_every", 25),
        ("save_strategy", "no", "train.save_every", 0),
        ("save_total_limit", 3, "train.keep_checkpoints", 3),
        ("eval_on_start", False, "eval.before", False),
        ("use_cpu", True, "model.device", "cpu"),
        ("disable_tqdm", True, "log.progress", False),
    ],
)
def test_each_mapped_key(key, value, rlft, expected):
    node = from_trl_grpo({key: value})[0]
    build(RLConfig, node)  # a valid rlft config
    for part in rlft.split("."):
        node = node[part]
    assert node == expected


def test_epsilon_sets_both_clips_unless_epsilon_high_is_given():
    # TRL: epsilon_high defaults to epsilon
    assert mapped({"epsilon": 0.3})[0] | {} == {"algo.clip_eps_low": 0.3, "algo.clip_eps_high": 0.3}
    flat, _ = mapped({"epsilon": 0.2, "epsilon_high": 0.28})
    assert (flat["algo.clip_eps_low"], flat["algo.clip_eps_high"]) == (0.2, 0.28)


def test_loss_type_grpo_is_a_sequence_mean_and_says_rlft_grpo_differs():
    flat, notes = mapped({"loss_type": "grpo"})
    assert flat["algo.loss_agg"] == "seq_mean" and "algo.name" not in flat
    assert "rlft's grpo algorithm itself defaults to token_mean" in notes_of(notes, "loss_type")


def test_loss_type_dapo_is_token_mean_not_the_dapo_algorithm():
    flat, notes = mapped({"loss_type": "dapo"})
    assert flat["algo.loss_agg"] == "token_mean" and "algo.name" not in flat
    assert "not rlft's dapo algorithm (dynamic sampling" in notes_of(notes, "loss_type")
    assert mapped({"loss_type": "bnpo"})[0]["algo.loss_agg"] == "token_mean"


def test_loss_type_dr_grpo_is_the_constant_normaliser_and_scale_rewards_decides_the_std():
    # Dr. GRPO as its paper (and TRL's docs) set it: loss_type dr_grpo + scale_rewards false
    flat, notes = mapped({"loss_type": "dr_grpo", "scale_rewards": False})
    assert (flat["algo.loss_agg"], flat["algo.scale_rewards"]) == ("constant", "none")
    assert "still divided by the group std" not in notes_of(notes, "loss_type")
    # loss_type alone changes only the normaliser in TRL: the group std stays, and a note says so
    flat, notes = mapped({"loss_type": "dr_grpo"})
    assert flat["algo.loss_agg"] == "constant" and "algo.scale_rewards" not in flat
    assert "still divided by the group std" in notes_of(notes, "loss_type")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, "group"), (False, "none"), ("group", "group"), ("batch", "batch"), ("none", "none")],
)
def test_scale_rewards_bool_and_strings(value, expected):
    assert mapped({"scale_rewards": value})[0]["algo.scale_rewards"] == expected


@pytest.mark.parametrize(("key", "value"), [("loss_type", "cispo"), ("scale_rewards", "mean")])
def test_values_rlft_lacks_are_not_mapped_and_named(key, value):
    flat, notes = mapped({key: value})
    assert not flat and f"{key}: not mapped ({value}:" in notes_of(notes, key)


def test_sequence_importance_sampling_is_gspo():
    flat, notes = mapped({"importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4})
    assert flat["algo.name"] == "gspo"
    assert (flat["algo.clip_eps_low"], flat["algo.clip_eps_high"]) == (3e-4, 4e-4)
    assert "gspo" in notes_of(notes, "importance_sampling_level")
    # without TRL's epsilon and loss_type, rlft's gspo defaults apply: the defaults note names both
    _, notes = mapped({"importance_sampling_level": "sequence"})
    assert "epsilon (TRL 0.2" in notes_of(notes, "defaults") and "loss_type" in notes_of(notes, "defaults")
    assert mapped({"importance_sampling_level": "token"})[0] == {}


def test_unknown_keys_are_noted_by_name_and_none_is_absent():
    flat, notes = mapped({"learning_rate": 1e-6, "my_flag": 1, "logging_steps": 5, "epsilon_high": None})
    assert flat == {"train.optim.lr": 1e-6}
    assert "my_flag: not mapped (not a GRPOConfig key this translation knows)" in notes
    assert notes_of(notes, "logging_steps").startswith("logging_steps: not mapped (rlft logs every step")
    assert not notes_of(notes, "epsilon_high")


def test_absent_keys_with_other_trl_defaults_are_listed_in_one_note():
    _, notes = mapped({"seed": 1})
    gaps = notes_of(notes, "defaults")
    assert "learning_rate (TRL 1e-06; rlft's default train.optim.lr=1e-05)" in gaps
    assert "max_completion_length (TRL 256; rlft's default rollout.max_new_tokens=64)" in gaps
    assert len([n for n in notes if n.startswith("defaults:")]) == 1


def test_steps_from_warmup_ratio_and_epochs():
    # warm-up: ceil(0.1 x 45) = 5 steps; epochs need the row count: 2 x 100 rows / 4 prompts = 50
    flat, _ = mapped({"max_steps": 45, "warmup_ratio": 0.1})
    assert flat["train.optim.warmup_steps"] == 5
    batch = {"per_device_train_batch_size": 16, "num_generations": 4}
    flat, _ = mapped({**batch, "num_train_epochs": 2}, dataset_rows=100)
    assert flat["train.steps"] == 50
    flat, notes = mapped({**batch, "num_train_epochs": 2, "warmup_ratio": 0.1})
    assert "train.steps" not in flat and "train.optim.warmup_steps" not in flat
    assert "num_train_epochs: not mapped (needs the dataset's row count" in notes_of(
        notes, "num_train_epochs"
    )
    assert "warmup_ratio: not mapped" in notes_of(notes, "warmup_ratio")


def test_cosine_with_min_lr():
    flat, _ = mapped({"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1}})
    assert (flat["train.optim.lr_schedule"], flat["train.optim.min_lr_ratio"]) == ("cosine", 0.1)


def test_eval_steps_and_the_test_split():
    flat, notes = mapped({"eval_strategy": "steps", "eval_steps": 20, "dataset_name": "org/d"})
    assert (flat["eval.every"], flat["eval.path"], flat["eval.split"]) == (20, "org/d", "test")
    assert "eval.before" in notes_of(notes, "eval_strategy")
    flat, notes = mapped({"eval_steps": 20})  # eval_strategy defaults to no in TRL: ignored there too
    assert "eval.every" not in flat and "eval_steps: not mapped" in notes_of(notes, "eval_steps")


def test_reward_weights_weight_the_given_reward_functions():
    def brevity(completions, **kwargs):
        return [0.0 for _ in completions]

    out, _ = from_trl_grpo(
        {"reward_weights": [1.0, 0.5, 0.25]},
        reward_funcs=["my_rewards.py:accuracy", {"fn": "answer_format", "name": "fmt"}, brevity],
    )
    assert out["rewards"] == [
        {"fn": "my_rewards.py:accuracy", "weight": 1.0},
        {"fn": "answer_format", "name": "fmt", "weight": 0.5},
        {"fn": "brevity", "name": "brevity", "weight": 0.25},
    ]
    with pytest.raises(ConfigError, match="reward_weights has 1 weights for 2 rewards"):
        from_trl_grpo({"reward_weights": [1.0]}, reward_funcs=["a.b:c", "a.b:d"])
    # given functions and no weights in the file: nothing of the file concerns the rewards
    assert "rewards" not in from_trl_grpo({"seed": 1}, reward_funcs=["a.b:c"])[0]


def test_trl_reward_names_translate_or_are_noted():
    out, notes = from_trl_grpo(
        {
            "reward_funcs": ["accuracy_reward", "think_format_reward", "my_lib.rewards.fmt"],
            "reward_weights": [2, 1, 1],
        }
    )
    assert out["rewards"] == [
        {"fn": "math_answer", "kwargs": {"answer_field": "solution"}, "weight": 2.0},
        {"fn": "my_lib.rewards.fmt", "weight": 1.0},
    ]
    assert "think_format_reward: not mapped" in notes_of(notes, "reward_funcs")


def test_a_realistic_trl_config_builds_a_valid_rl_config():
    trl = yaml.safe_load((Path(__file__).resolve().parents[3] / "examples" / "trl_grpo.yaml").read_text())
    out, notes = from_trl_grpo(trl)
    cfg = build(RLConfig, out)
    assert (cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt) == (4, 8)  # 8 x 4 / 8
    assert cfg.train.optim.warmup_steps == 10  # ceil(0.05 x 200)
    assert batch_arithmetic(cfg)["sequences_per_step"] == 32
    assert all(": " in n for n in notes)


def test_the_key_table_names_real_keys_and_every_handled_key():
    rlft_keys = {key for key, _, _ in field_docs(RLConfig)}
    for trl_key, (targets, _) in RULES.items():
        for target in filter(None, (t.strip() for t in targets.split(","))):
            assert target.startswith("rewards[") or target in rlft_keys, (trl_key, target)
    assert set(RULES) >= HANDLED


def test_the_guide_shows_the_generated_key_table():
    text = GUIDE.read_text(encoding="utf-8")
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == table_markdown().strip(), "regenerate it: python -m rlft.config.trl_keys"


@pytest.fixture
def trl_file(tmp_path: Path) -> Path:
    f = tmp_path / "grpo.yaml"
    f.write_text(
        "per_device_train_batch_size: 8\ngradient_accumulation_steps: 2\nnum_generations: 4\n"
        "max_completion_length: 32\nloss_type: grpo\nreward_weights: [2.0]\nsome_new_flag: true\n"
    )
    return f


def test_check_config_prints_the_mapped_keys_and_the_notes(trl_file: Path, capsys):
    assert main(["check-config", "--trl-config", str(trl_file)]) == 0
    out = capsys.readouterr().out
    block = out.split("\n# notes:")[0]
    assert f"# TRL config {trl_file} -> rlft keys" in block
    for line in ["rollout.prompts_per_step: 4", "rollout.samples_per_prompt: 4", 'algo.loss_agg: "seq_mean"']:
        assert f"#   {line}" in block
    assert "#   - loss_type: grpo -> algo.loss_agg=seq_mean" in out
    assert "#   - some_new_flag: not mapped" in out
    resolved = yaml.safe_load(out)  # the rest is the resolved config, as without --trl-config
    assert resolved["algo"]["loss_agg"] == "seq_mean" and resolved["rollout"]["max_new_tokens"] == 32
    assert resolved["rewards"][0]["fn"] == "numeric_answer" and resolved["rewards"][0]["weight"] == 2.0


def test_precedence_base_then_trl_then_overrides(trl_file: Path, tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "train: {steps: 7}\nrollout: {max_new_tokens: 64}\n"
        "rewards: [{fn: numeric_answer}, {fn: answer_format}]\n"
    )
    trl_file.write_text(trl_file.read_text().replace("reward_weights: [2.0]", "reward_weights: [2.0, 0.5]"))
    cfg, _, _ = load_rl_config_with_trl(trl_file, str(base), ["rollout.temperature=0.5"])
    assert cfg.train.steps == 7  # base: the TRL file does not set it
    assert cfg.rollout.max_new_tokens == 32  # the TRL file over the base
    assert cfg.rollout.temperature == 0.5  # overrides last
    assert [(r.fn, r.weight) for r in cfg.rewards] == [("numeric_answer", 2.0), ("answer_format", 0.5)]
    cfg, _, _ = load_rl_config_with_trl(trl_file, str(base), ["rollout.max_new_tokens=16"])
    assert cfg.rollout.max_new_tokens == 16


def test_rl_runs_the_mapped_config_and_prints_the_notes_first(trl_file: Path, monkeypatch, capsys):
    import rlft.rl.loop

    seen = {}

    def fake_train_rl(cfg):
        seen["cfg"], seen["printed"] = cfg, capsys.readouterr().out
        return {"stopped": True, "steps": 0}

    monkeypatch.setattr(rlft.rl.loop, "train_rl", fake_train_rl)
    assert main(["rl", "--trl-config", str(trl_file), "train.steps=1"]) == 0
    assert seen["cfg"].rollout.prompts_per_step == 4 and seen["cfg"].train.steps == 1
    assert "#   - loss_type: grpo" in seen["printed"]
    assert f"rlft rl --trl-config {trl_file} train.steps=1 --resume" in capsys.readouterr().out


def test_check_config_trl_config_needs_the_rl_kind(trl_file: Path, capsys):
    assert main(["check-config", "--kind", "sft", "--trl-config", str(trl_file)]) == 2
    assert "--trl-config" in capsys.readouterr().err
