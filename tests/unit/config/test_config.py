"""rlft.config.loader: unknown keys with suggestions, type checks, YAML quirks, batch arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlft.config.loader import ConfigError, build, load_config, merge_overrides, to_dict
from rlft.config.rl import RLConfig
from rlft.rl.setup import batch_arithmetic


def test_defaults_without_file():
    cfg = load_config(RLConfig, None)
    assert cfg.algo.kl_coef == 0.0 and cfg.train.optim.lr == 1e-5 and cfg.rewards[0].fn == "numeric_answer"


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as e:
        load_config(RLConfig, None, ["algo.kl_cof=0.1"])
    assert "unknown config key 'algo.kl_cof'" in str(e.value)
    assert "did you mean 'algo.kl_coef'?" in str(e.value)


def test_nested_unknown_key_suggests_full_path():
    with pytest.raises(ConfigError) as e:
        load_config(RLConfig, None, ["train.optim.warmup_step=3"])
    assert "'train.optim.warmup_step'" in str(e.value)
    assert "did you mean 'train.optim.warmup_steps'?" in str(e.value)


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'zzz'; valid keys: alarms, algo, .*eval, "):
        load_config(RLConfig, None, ["zzz=1"])


def test_unknown_key_in_yaml_names_file(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("rollout:\n  max_new_token: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(RLConfig, str(f))
    assert str(f) in str(e.value) and "did you mean 'rollout.max_new_tokens'?" in str(e.value)


def test_unknown_key_inside_list_entry():
    with pytest.raises(ConfigError, match=r"unknown config key 'rewards\[0\]\.wieght'"):
        build(RLConfig, {"rewards": [{"fn": "numeric_answer", "wieght": 2.0}]})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.steps=abc", "'train.steps' must be an integer, got 'abc'"),
        ("train.steps=1.5", "'train.steps' must be an integer, got 1.5"),
        ("train.steps=true", "'train.steps' must be an integer, got True"),
        ("algo.kl_coef=lots", "'algo.kl_coef' must be a number, got 'lots'"),
        ("resume=maybe", "'resume' must be true or false, got 'maybe'"),
        ("algo.loss_agg=sum", "'algo.loss_agg' must be one of ['token_mean', 'seq_mean', 'constant']"),
        ("rewards=numeric_answer", "'rewards' must be a list"),
        ("train=5", "'train' must be a mapping, got 5"),
    ],
)
def test_wrong_type_names_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(RLConfig, None, [override])
    assert message in str(e.value)


def test_yaml_exponent_string_is_accepted_as_float(tmp_path: Path):
    f = tmp_path / "c.yaml"
    # YAML 1.1 (PyYAML) reads 1e-5 (no dot) as the string '1e-5'
    f.write_text("train:\n  optim:\n    lr: 1e-5\nalgo:\n  kl_coef: 2E-3\n")
    cfg = load_config(RLConfig, str(f), ["algo.std_eps=1e-6"])
    assert cfg.train.optim.lr == 1e-5 and isinstance(cfg.train.optim.lr, float)
    assert cfg.algo.kl_coef == 0.002
    assert cfg.algo.std_eps == 1e-6


def test_int_for_float_field_becomes_float():
    cfg = load_config(RLConfig, None, ["algo.kl_coef=1"])
    assert cfg.algo.kl_coef == 1.0 and isinstance(cfg.algo.kl_coef, float)


def test_overrides_win_over_file_and_keep_siblings(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("rollout:\n  prompts_per_step: 3\n  samples_per_prompt: 5\n")
    cfg = load_config(RLConfig, str(f), ["rollout.prompts_per_step=2", "data.system_prompt=Be brief"])
    assert (cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt) == (2, 5)
    assert cfg.data.system_prompt == "Be brief"


def test_merge_overrides_does_not_mutate_input():
    data = {"train": {"steps": 3}}
    out = merge_overrides(data, ["train.steps=4"])
    assert data == {"train": {"steps": 3}} and out == {"train": {"steps": 4}}


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(RLConfig, None, ["train.steps"])


def test_missing_file_and_non_mapping_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(RLConfig, str(tmp_path / "nope.yaml"))
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(RLConfig, str(f))


def test_to_dict_round_trips():
    cfg = load_config(RLConfig, None, ["algo.kl_coef=0.5"])
    assert build(RLConfig, to_dict(cfg)) == cfg


def test_batch_arithmetic_hand_computed():
    cfg = load_config(
        RLConfig,
        None,
        [
            "rollout.prompts_per_step=4",
            "rollout.samples_per_prompt=6",
            "train.minibatch_size=12",
            "train.microbatch_size=5",
            "algo.epochs=2",
        ],
    )
    ba = batch_arithmetic(cfg)
    # B = 4*6 = 24; 24/12 = 2 minibatches x 2 epochs = 4 optimizer steps; ceil(12/5) = 3 microbatches
    assert ba == {
        "sequences_per_step": 24,
        "minibatch_size": 12,
        "microbatch_size": 5,
        "optimizer_steps_per_rl_step": 4,
        "grad_accumulation": 3,
    }


def test_batch_arithmetic_whole_batch_default():
    cfg = load_config(RLConfig, None, ["rollout.prompts_per_step=2", "rollout.samples_per_prompt=4"])
    ba = batch_arithmetic(cfg)
    # minibatch 0 -> B = 2*4 = 8; microbatch min(16, 8) = 8; 1 optimizer step; ceil(8/16) = 1
    assert (ba["minibatch_size"], ba["microbatch_size"], ba["optimizer_steps_per_rl_step"]) == (8, 8, 1)
    assert ba["grad_accumulation"] == 1


@pytest.mark.parametrize("mb", [5, 32])
def test_batch_arithmetic_rejects_non_dividing_minibatch(mb):
    cfg = load_config(
        RLConfig,
        None,
        ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", f"train.minibatch_size={mb}"],
    )
    # 16 % 5 = 1 != 0; 32 > 16
    with pytest.raises(ConfigError, match=rf"'train.minibatch_size'={mb} must divide the 16 sequences"):
        batch_arithmetic(cfg)


def test_batch_arithmetic_rejects_zero_sizes():
    cfg = load_config(RLConfig, None, ["rollout.samples_per_prompt=0"])
    with pytest.raises(ConfigError, match="'rollout.samples_per_prompt' must be >= 1, got 0"):
        batch_arithmetic(cfg)


def test_a_string_for_a_list_of_strings_becomes_a_one_item_list():
    cfg = build(RLConfig, {"rewards": [{"model": "runs/rm/final"}], "data": {"arithmetic": {"ops": "+"}}})
    assert cfg.rewards[0].model == ["runs/rm/final"] and cfg.data.arithmetic.ops == ["+"]
    # only lists of strings: a list of records still needs a list
    with pytest.raises(ConfigError, match="'rewards' must be a list"):
        build(RLConfig, {"rewards": "numeric_answer"})


def test_partial_nested_section_keeps_the_fields_own_defaults():
    # DPOConfig.train defaults to optim lr 5e-7 (not OptimConfig's class default 1e-5); overriding
    # only warmup_steps must keep that lr
    from rlft.config.loader import field_docs, load_config
    from rlft.config.preference import DPOConfig

    cfg = load_config(DPOConfig, None, ["train.optim.warmup_steps=1"])
    assert (cfg.train.optim.lr, cfg.train.optim.warmup_steps) == (5e-7, 1)
    docs = {key: default for key, default, _ in field_docs(DPOConfig)}
    assert docs["train.optim.lr"] == 5e-7
