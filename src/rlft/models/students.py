"""Smaller students cut from a teacher: keep a subset of its decoder layers (and optionally the
first share of each MLP's intermediate channels), copying their weights plus the embeddings,
final norm and LM head, and save the result in HF format (safetensors + tokenizer).

Layer-dropping initialisation as in DistilBERT (Sanh et al. 2019, sec. 3: "taking one layer out
of two") and the depth-pruned students of Minitron (Muralidharan et al. 2024).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlft.algorithms.distill import full_vocab_kl
from rlft.runtime.atomic_fs import atomic_directory

log = logging.getLogger(__name__)

# Decoders whose layers live at model.layers.<i> with a gate/up/down MLP (the Llama layout).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
ROW_SLICED = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.gate_proj.bias", "mlp.up_proj.bias")
COLUMN_SLICED = ("mlp.down_proj.weight",)
INFO_FILE = "student_info.json"


def every_other_layer(n: int) -> list[int]:
    """Layers 0, 2, 4, ... and always the last: n=4 -> [0, 2, 3]; n=5 -> [0, 2, 4]; n=30 -> 16."""
    keep = list(range(0, n, 2))
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return keep


def resolve_layers(layers: Sequence[int] | str, n: int) -> list[int]:
    """The teacher layer indices to keep: "every_other", or strictly increasing indices in [0, n)."""
    if isinstance(layers, str):
        if layers != "every_other":
            raise ValueError(f"layers must be a list of indices or 'every_other', got '{layers}'")
        return every_other_layer(n)
    keep = [int(i) for i in layers]
    if not keep or any(i < 0 or i >= n for i in keep) or sorted(set(keep)) != keep:
        raise ValueError(f"layers must be strictly increasing indices in [0, {n}), got {list(layers)}")
    return keep


def check_architecture(model: Any) -> None:
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
        raise ValueError(
            f"layer-subset students support Llama-family decoders ({', '.join(SUPPORTED_MODEL_TYPES)}); "
            f"the teacher is {arch} (model_type '{model_type}')"
        )


def student_config(teacher_config: Any, layers: Sequence[int], intermediate_size: int) -> Any:
    """The teacher's config with num_hidden_layers = len(layers), every per-layer list (a list
    field with 'layer' in its name and one entry per layer, e.g. layer_types) sliced to `layers`,
    and intermediate_size set."""
    cfg = copy.deepcopy(teacher_config)
    n = teacher_config.num_hidden_layers
    for key, value in teacher_config.to_dict().items():
        if "layer" in key and isinstance(value, list) and len(value) == n:
            setattr(cfg, key, [value[i] for i in layers])
    cfg.num_hidden_layers = len(layers)
    cfg.intermediate_size = intermediate_size
    return cfg


def student_state_dict(
    teacher_state: Mapping[str, torch.Tensor], layers: Sequence[int], keep_channels: int | None = None
) -> dict[str, torch.Tensor]:
    """Teacher tensors renamed for the student: model.layers.<layers[i]>.* -> model.layers.<i>.*,
    other layers dropped, everything else (embeddings, final norm, lm_head) kept. With
    `keep_channels`, gate/up projections keep their first rows and down_proj its first columns:
    the same intermediate channels throughout, so the narrower MLP computes the teacher's MLP
    restricted to those channels."""
    index = {src: dst for dst, src in enumerate(layers)}
    out = {}
    for name, tensor in teacher_state.items():
        m = LAYER_KEY.match(name)
        if m is None:
            out[name] = tensor
            continue
        src, suffix = int(m.group(1)), m.group(2)
        if src not in index:
            continue
        if keep_channels is not None and suffix in ROW_SLICED:
            tensor = tensor[:keep_channels]
        elif keep_channels is not None and suffix in COLUMN_SLICED:
            tensor = tensor[:, :keep_channels]
        out[f"model.layers.{index[src]}.{suffix}"] = tensor
    return out


def _load_teacher(teacher: Any, tokenizer: Any) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(teacher, (str, Path)):
        from rlft.models.load import resolve_model_path

        path = resolve_model_path(str(teacher))
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        return model, tokenizer or AutoTokenizer.from_pretrained(path), path
    if hasattr(teacher, "merge_and_unload"):
        raise ValueError("the teacher is a PEFT model: merge its adapters first (merge_and_unload)")
    name = getattr(teacher, "name_or_path", "") or ""
    if tokenizer is None and not Path(name).is_dir():
        raise ValueError("pass tokenizer= when the teacher is a model object not loaded from a directory")
    return teacher, tokenizer or AutoTokenizer.from_pretrained(name), name


def make_layer_subset_student(
    teacher: Any,
    layers: Sequence[int] | str,
    out_dir: str | Path,
    intermediate_keep: float = 1.0,
    tokenizer: Any = None,
) -> Path:
    """Write a student with the teacher's `layers` ("every_other" or indices) to out_dir
    (atomically) and return out_dir; `AutoModelForCausalLM.from_pretrained(out_dir)` loads it.

    teacher: a path / HF id / alias, or a loaded model (then give `tokenizer` unless it was loaded
    from a local directory). intermediate_keep in (0, 1]: share of MLP intermediate channels kept
    (the first ones). Tied embeddings stay tied (the config is copied). The caller's RNG is left
    untouched.
    """
    from transformers import AutoModelForCausalLM

    model, tok, source = _load_teacher(teacher, tokenizer)
    check_architecture(model)
    if not 0.0 < intermediate_keep <= 1.0:
        raise ValueError(f"intermediate_keep must be in (0, 1], got {intermediate_keep}")
    n = model.config.num_hidden_layers
    keep = resolve_layers(layers, n)
    width = model.config.intermediate_size
    channels = max(1, round(width * intermediate_keep))
    cfg = student_config(model.config, keep, channels)
    state = student_state_dict(model.state_dict(), keep, channels if channels < width else None)
    dtype = next(model.parameters()).dtype
    with torch.random.fork_rng():
        student = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    student.load_state_dict(state, strict=True)  # every student tensor comes from the teacher
    info = {"teacher": str(source), "teacher_layers": n, "layers": keep, "intermediate_size": channels}
    with atomic_directory(Path(out_dir)) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
    log.info("student: teacher layers %s of %d, intermediate size %d -> %s", keep, n, channels, out_dir)
    return Path(out_dir)


def best_block_layers(
    teacher: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int
) -> tuple[list[int], dict[int, float]]:
    """The `keep` layers left after dropping the contiguous block of n - keep layers whose removal
    changes the teacher's next-token distributions least, and the KL for each block start.

    The score of a block is KL(teacher || teacher without it), averaged over the real tokens of
    input_ids [B, L] (attention_mask [B, L]): the block-pruning criterion of Gromov et al. 2024
    ("The Unreasonable Ineffectiveness of the Deeper Layers"), measured on outputs rather than
    on hidden-state angles. On SmolLM2-135M (30 layers, keep 16) it picks layers 0-5 + 20-29,
    whose KL on the RL teacher's traces is 3.7 against 10.3 for every other layer.
    """
    check_architecture(teacher)
    n = teacher.config.num_hidden_layers
    if not 0 < keep <= n:
        raise ValueError(f"keep must be in [1, {n}], got {keep}")
    real = attention_mask.bool()
    with torch.no_grad():
        ref = _logprobs(teacher, input_ids, attention_mask)[real]
        scores = {}
        for start in range(keep + 1):
            kept = [i for i in range(n) if not start <= i < start + n - keep]
            with _only_layers(teacher, kept):
                cut = _logprobs(teacher, input_ids, attention_mask)[real]
            scores[start] = float(full_vocab_kl(ref, cut).mean())
    best = min(scores, key=scores.__getitem__)
    return [i for i in range(n) if not best <= i < best + n - keep], scores


def _logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return torch.log_softmax(out.logits.float(), -1)


class _only_layers:  # noqa: N801 (a context manager used as a function)
    """Run `model` with only its decoder layers `kept` (no copy; restored on exit)."""

    def __init__(self, model: Any, kept: Sequence[int]):
        self.model, self.kept = model, kept

    def __enter__(self) -> None:
        body = self.model.model
        self.saved = body.layers, self.model.config.num_hidden_layers
        body.layers = torch.nn.ModuleList([body.layers[i] for i in self.kept])
        self.model.config.num_hidden_layers = len(self.kept)

    def __exit__(self, *exc: Any) -> None:
        self.model.model.layers, self.model.config.num_hidden_layers = self.saved
