"""The final model of a run, in HF format: the whole model, or (LoRA, save.merge_lora=false) the
adapter alone, which `peft`'s `AutoPeftModelForCausalLM` / `PeftModel.from_pretrained` and rlft's
own loader (rlft.models.load.load_causal_lm) load onto its base model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlft.dist.ranks import barrier, is_main
from rlft.dist.sharding import full_state_dict, is_sharded
from rlft.models.load import is_peft
from rlft.runtime.atomic_fs import atomic_directory


def save_final(model: Any, tok: Any, out_dir: Path, merge_lora: bool = True) -> tuple[Path, Any]:
    """HF-format model + tokenizer in out_dir/final, written atomically by rank 0 (under fsdp2
    every rank takes part in gathering the weights). A LoRA model is merged into its base, or with
    `merge_lora` False saved as its adapter alone (adapter_config.json, adapter_model.safetensors).
    Returns the directory and the model as saved (merged, or still the PEFT model)."""
    adapter_only = is_peft(model) and not merge_lora
    if is_peft(model) and merge_lora:
        model = model.merge_and_unload()
    state = full_state_dict(model) if is_sharded(model) else None
    if is_main():
        with atomic_directory(out_dir / "final", ".tmp-final-") as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            tok.save_pretrained(tmp)
            if adapter_only:
                absolute_base_path(Path(tmp) / ADAPTER_CONFIG)
    barrier()
    return out_dir / "final", model


ADAPTER_CONFIG = "adapter_config.json"


def absolute_base_path(adapter_config: Path) -> None:
    """PEFT records the base model as it was loaded: a relative local directory is made absolute,
    so the adapter loads from any working directory (a hub id is left as it is)."""
    conf = json.loads(adapter_config.read_text())
    base = conf.get("base_model_name_or_path")
    if base and not Path(base).is_absolute() and Path(base).exists():
        conf["base_model_name_or_path"] = str(Path(base).resolve())
        adapter_config.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
