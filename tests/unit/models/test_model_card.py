"""final/README.md: the facts taken from a run's config and held-out results (RL, SFT, DPO), and
how the card shows them (front matter, eval table, how to load it)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rlft.config.loader import build
from rlft.config.preference import DPOConfig
from rlft.config.rl import RLConfig
from rlft.config.sft import SFTConfig
from rlft.models.model_card import card_info_from_config, supervised_eval_results, write_model_card

RL_EVAL = {"before": {"accuracy": 0.25, "n": 8, "seconds": 3.0}, "after": {"accuracy": 0.5, "n": 8}}


def rl_config(**extra) -> RLConfig:
    data = {
        "model": {"path": "org/base-model", "lora_rank": 8, "lora_alpha": 16},
        "data": {"path": "org/math-prompts", "split": "train"},
        "algo": {"name": "dapo", "kl_coef": 0.02},
        "rewards": [
            {"fn": "numeric_answer", "weight": 1.0},
            {"fn": "tag_count", "weight": 0.1, "name": "tags"},
        ],
        "train": {"steps": 30, "optim": {"lr": 2e-5}},
        "save": {"merge_lora": False},
        "hub": {"model_id": "me/tuned"},
        **extra,
    }
    return build(RLConfig, data)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_rl_card_info_from_config():
    info = card_info_from_config(rl_config(), RL_EVAL, rows=120, command="rlft rl --config my.yaml")
    assert info["kind"] == "rl" and info["algorithm"] == "dapo"
    assert info["base_model"] == "org/base-model"
    assert info["lora"] == {"rank": 8, "alpha": 16.0, "targets": "all-linear"}
    assert info["adapter"] is True
    assert info["data"] == {"source": "hub dataset `org/math-prompts`", "hub_id": "org/math-prompts",
                            "split": "train", "rows": 120, "heldout_fraction": 0.1}  # fmt: skip
    assert info["settings"]["train.steps"] == 30 and info["settings"]["train.optim.lr"] == 2e-5
    assert info["settings"]["algo.kl_coef"] == 0.02
    assert "algo.kl_estimator" not in info["settings"]  # None (the algorithm's default): left out
    assert info["rewards"] == [
        {"name": "numeric_answer", "weight": 1.0, "fn": "numeric_answer"},
        {"name": "tags", "weight": 0.1, "fn": "tag_count"},
    ]
    ev = info["eval"]
    assert (ev["before"], ev["after"], ev["n"]) == ({"accuracy": 0.25}, {"accuracy": 0.5}, 8)
    assert info["model_id"] == "me/tuned"
    assert info["command"] == "rlft rl --config my.yaml"
    assert "lora_rank: 8" in info["config"]


def test_rl_card_text(tmp_path: Path):
    info = card_info_from_config(rl_config(), RL_EVAL, rows=120, command="rlft rl --config my.yaml")
    path = write_model_card(tmp_path, info)
    assert path == tmp_path / "README.md"
    text = path.read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "rlft"
    assert meta["base_model"] == "org/base-model"
    assert meta["tags"] == ["rlft", "dapo", "lora", "peft"]
    assert meta["datasets"] == ["org/math-prompts"]
    assert "# me/tuned" in text
    assert "- rows: 120" in text
    assert "- 10% of the prompts held out for evaluation, never trained on" in text
    assert "| accuracy | 25.0% | 50.0% |" in text and "(n = 8)" in text
    assert "| mean_response_tokens |" not in text  # only the metrics the evaluation gave
    assert "| numeric_answer | 1 | `numeric_answer` |" in text and "| tags | 0.1 | `tag_count` |" in text
    assert "| `algo.kl_coef` | `0.02` |" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/tuned")' in text  # an adapter: peft snippet
    assert "rank 8, alpha 16, all-linear; saved as the adapter alone" in text
    assert "Command: `rlft rl --config my.yaml`" in text
    assert "```yaml\noutput_dir: runs/rl" in text


def test_merged_local_model_card(tmp_path: Path):
    cfg = build(RLConfig, {"model": {"path": "tiny-random-llama"}})
    info = card_info_from_config(cfg, {"after": {"accuracy": 0.125, "n": 8, "reward": 0.375}}, command=None)
    assert info["adapter"] is False and info["lora"] is None and info["model_id"] is None
    text = write_model_card(tmp_path, info).read_text()
    meta = front_matter(text)
    assert "base_model" not in meta and "datasets" not in meta  # an alias, a built-in task: no hub ids
    assert meta["tags"] == ["rlft", "grpo"]
    assert "built-in `arithmetic` task" in text
    assert f'AutoModelForCausalLM.from_pretrained("{tmp_path}")' in text
    assert "| accuracy | 12.5% |" in text and "| reward | 0.375 |" in text and "before training" not in text
    assert "the Python API" in text


def test_sft_card_metrics_and_labels(tmp_path: Path):
    cfg = build(SFTConfig, {"model": {"path": "org/base"}, "data": {"path": "chats.jsonl"}})
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 5, "loss/sft": 3.0, "eval/loss": 2.5, "eval/perplexity": 12.18})
        + "\n"
        + json.dumps({"step": 10, "loss/sft": 2.0, "eval/loss": 2.0, "eval/perplexity": 7.389})
        + "\n"
    )
    results = {"steps": 10, "heldout": {"loss": 2.0, "perplexity": 7.389, "tokens": 300.0}}
    evals = supervised_eval_results(tmp_path, results)
    assert evals["before"] == {"loss": 2.5, "perplexity": 12.18}
    assert (evals["before_label"], evals["after_label"]) == ("step 5 (first evaluation)", "step 10 (final)")
    info = card_info_from_config(cfg, evals, rows=40)
    assert info["kind"] == "sft" and info["algorithm"] == "sft" and info["rewards"] == []
    assert info["data"]["source"] == "`chats.jsonl`" and info["data"]["hub_id"] is None
    text = write_model_card(tmp_path, info).read_text()
    assert "| metric | step 5 (first evaluation) | step 10 (final) |" in text
    assert "| loss | 2.5 | 2 |" in text and "| perplexity | 12.18 | 7.389 |" in text
    assert "## Rewards" not in text
    assert front_matter(text)["base_model"] == "org/base"


def test_sft_card_single_evaluation(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 3, "eval/loss": 1.5}) + "\n")
    evals = supervised_eval_results(tmp_path, {"steps": 3, "heldout": {"loss": 1.5}})
    assert "before" not in evals and evals["after"] == {"loss": 1.5}


def test_dpo_card_names_the_loss():
    cfg = build(DPOConfig, {"model": {"path": "org/base"}, "dpo": {"loss": "ipo", "beta": 0.5}})
    evals = {"after": {"loss": 0.3, "rewards_accuracy": 0.75, "rewards_margin": 0.2}}
    info = card_info_from_config(cfg, evals)
    assert info["kind"] == "dpo" and info["algorithm"] == "ipo"
    assert info["settings"]["dpo.beta"] == 0.5
    assert info["eval"]["after"] == {"loss": 0.3, "rewards_accuracy": 0.75, "rewards_margin": 0.2}
