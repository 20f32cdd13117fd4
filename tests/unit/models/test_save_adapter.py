"""final/ of a LoRA run: with save.merge_lora=false the adapter alone (plus the tokenizer), which
PEFT's loaders and rlft's own (`rlft eval --model final/`) load onto the base model with the same
logits as the merged model; with merge_lora=true (the default) a whole HF model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlft.eval.compare import check_model_dir
from rlft.models.load import add_lora, load_causal_lm, load_tokenizer
from rlft.models.save import save_final


@pytest.fixture
def lora_model(tiny_model):
    """The tiny model with rank-4 LoRA adapters whose B matrices are non-zero (PEFT starts them at
    zero, which would make the adapter a no-op and the test vacuous)."""
    model = add_lora(tiny_model, rank=4, alpha=8.0, targets="all-linear")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 42, 8, 3, 64, 21]])


def test_adapter_only_saves_adapter_files_and_loads_back(
    lora_model, tiny_tok, tiny_model_path, tmp_path: Path
):
    want = logits(lora_model, IDS)
    base_logits = logits(load_causal_lm(tiny_model_path), IDS)
    assert (want - base_logits).abs().max() > 1e-3  # the adapter changes the model

    final, saved = save_final(lora_model, tiny_tok, tmp_path, merge_lora=False)
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"} <= names
    assert not names & {"config.json", "model.safetensors", "pytorch_model.bin"}  # no full weights
    assert saved is lora_model  # still the PEFT model (in-process evaluation uses it)
    conf = json.loads((final / "adapter_config.json").read_text())
    assert Path(conf["base_model_name_or_path"]).resolve() == Path(tiny_model_path).resolve()

    from peft import AutoPeftModelForCausalLM, PeftModel

    by_peft = PeftModel.from_pretrained(load_causal_lm(tiny_model_path), str(final)).eval()
    assert torch.allclose(logits(by_peft, IDS), want, atol=1e-5)
    by_auto = AutoPeftModelForCausalLM.from_pretrained(str(final)).eval()
    assert torch.allclose(logits(by_auto, IDS), want, atol=1e-5)
    # rlft's loader (rlft eval, the fresh-process eval after RL): base + adapter, merged
    assert check_model_dir(str(final)) == str(final)
    by_rlft = load_causal_lm(str(final)).eval()
    assert not isinstance(by_rlft, PeftModel)  # merged
    assert torch.allclose(logits(by_rlft, IDS), want, atol=1e-5)
    assert load_tokenizer(str(final)).encode("12+3") == tiny_tok.encode("12+3")


def test_merged_by_default(lora_model, tiny_tok, tmp_path: Path):
    from peft import PeftModel

    want = logits(lora_model, IDS)
    final, saved = save_final(lora_model, tiny_tok, tmp_path)
    names = {p.name for p in final.iterdir()}
    assert "config.json" in names and "adapter_config.json" not in names
    assert not isinstance(saved, PeftModel)
    assert torch.allclose(logits(load_causal_lm(str(final)).eval(), IDS), want, atol=1e-5)


def test_relative_base_path_is_made_absolute(tiny_model_path, tiny_tok, tmp_path: Path, monkeypatch):
    """A base loaded from a relative directory is recorded absolute: the adapter loads from any
    working directory."""
    monkeypatch.chdir(Path(tiny_model_path).parent)
    model = add_lora(load_causal_lm(Path(tiny_model_path).name), rank=2, alpha=4.0, targets="q_proj,v_proj")
    final, _ = save_final(model, tiny_tok, tmp_path, merge_lora=False)
    conf = json.loads((final / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == str(Path(tiny_model_path).resolve())
    monkeypatch.chdir(tmp_path)
    assert load_causal_lm(str(final)) is not None


def test_adapter_on_an_adapter_loads_both(lora_model, tiny_tok, tmp_path: Path):
    """A LoRA run started from an adapter final/ (a pipeline stage, model.path=<final/>) records
    that adapter as its base: loading it applies both adapters, in order."""
    first, _ = save_final(lora_model, tiny_tok, tmp_path / "sft", merge_lora=False)
    merged = load_causal_lm(str(first))
    second_model = add_lora(merged, rank=2, alpha=4.0, targets="q_proj,v_proj")
    with torch.no_grad():
        for name, p in second_model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.03)
    want = logits(second_model.eval(), IDS)
    second, _ = save_final(second_model, tiny_tok, tmp_path / "rl", merge_lora=False)
    conf = json.loads((second / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == str(first)  # the first adapter, not the bare base
    assert torch.allclose(logits(load_causal_lm(str(second)).eval(), IDS), want, atol=1e-5)


def test_adapter_without_base_is_named(tmp_path: Path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match="no base_model_name_or_path"):
        load_causal_lm(str(tmp_path))
