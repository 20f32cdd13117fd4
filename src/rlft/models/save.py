"""The final model of a run, in HF format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlft.dist.ranks import barrier, is_main
from rlft.dist.sharding import full_state_dict, is_sharded
from rlft.models.load import is_peft
from rlft.runtime.atomic_fs import atomic_directory


def save_final(model: Any, tok: Any, out_dir: Path) -> tuple[Path, Any]:
    """HF-format model (LoRA merged) + tokenizer in out_dir/final, written atomically by rank 0
    (under fsdp2 every rank takes part in gathering the weights). Returns the directory and the
    model as saved (a LoRA model merged into its base)."""
    if is_peft(model):
        model = model.merge_and_unload()
    state = full_state_dict(model) if is_sharded(model) else None
    if is_main():
        with atomic_directory(out_dir / "final", ".tmp-final-") as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            tok.save_pretrained(tmp)
    barrier()
    return out_dir / "final", model
