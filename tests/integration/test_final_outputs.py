"""What a run leaves in final/ to share, end to end on the tiny model: a LoRA RL run with
save.merge_lora=false saves the adapter alone and its held-out evaluation in a fresh process
(`rlft eval --model final/`) loads it; RL, SFT and DPO write the model card; a hub push is
skipped offline without failing the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlft.config.loader import build, load_yaml, merge_overrides
from rlft.config.preference import DPOConfig
from rlft.config.sft import SFTConfig
from rlft.rl.loop import train_rl
from rlft.train.dpo import train_dpo
from rlft.train.sft import train_sft

REPO = Path(__file__).resolve().parents[2]
QUIET = ["log.progress=false", "log.tensorboard=false"]


@pytest.mark.slow
def test_rl_adapter_final_is_evaluated_in_a_fresh_process(make_rl_config, tmp_path, caplog):
    cfg = make_rl_config(
        "train.steps=1",
        "model.lora_rank=4",
        "save.merge_lora=false",
        "eval.after=true",
        "eval.fresh_process=true",
        "eval.limit=4",
        "hub.model_id=me/tiny-grpo",  # HF_HUB_OFFLINE is set for the tests: skipped, logged
        out=tmp_path / "run",
    )
    result = train_rl(cfg)
    final = Path(result["final_dir"])
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert "config.json" not in names
    after = json.loads((tmp_path / "run" / "eval_after.json").read_text())  # written by `rlft eval`
    assert after["n"] == 4 and result["eval"]["after"]["n"] == 4
    card = (final / "README.md").read_text()
    assert "saved as the adapter alone" in card and "AutoPeftModelForCausalLM" in card
    assert "| accuracy |" in card and "after training" in card
    assert "hub push of me/tiny-grpo skipped: HF_HUB_OFFLINE is set" in caplog.text
    assert "hub_url" not in result


def test_sft_writes_the_card(tmp_path, tiny_model_path):
    data = load_yaml(REPO / "configs" / "sft_tiny.yaml")
    data["data"]["path"] = str(REPO / data["data"]["path"])
    over = [f"output_dir={tmp_path}", "train.steps=2", "train.eval_every=1", *QUIET]
    result = train_sft(build(SFTConfig, merge_overrides(data, over)))
    card = (Path(result["final_dir"]) / "README.md").read_text()
    assert "library_name: rlft" in card and "- sft" in card
    assert "| metric | step 1 (first evaluation) | step 2 (final) |" in card
    assert "| perplexity |" in card and "- rows: " in card


def test_dpo_card_can_be_turned_off(tmp_path, tiny_model_path):
    data = load_yaml(REPO / "configs" / "dpo_tiny.yaml")
    data["data"]["path"] = str(REPO / data["data"]["path"])
    over = [f"output_dir={tmp_path}", "train.steps=1", "save.model_card=false", *QUIET]
    result = train_dpo(build(DPOConfig, merge_overrides(data, over)))
    assert (Path(result["final_dir"]) / "config.json").exists()
    assert not (Path(result["final_dir"]) / "README.md").exists()
