"""The transformers-backed generator (KV cache, batched, stop at EOS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from rlft.accel.onednn import maybe
from rlft.accel.packed import packed_linears
from rlft.models.load import model_device
from rlft.rollout.base import Generations, SamplingParams
from rlft.rollout.decode import decode


def eos_token_ids(model: Any, tok: Any) -> list[int]:
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] lists -> input_ids [N, Lmax], attention_mask [N, Lmax] (left-padded)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def cut_at_eos(row: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(row):
        if t in eos:
            return row[: i + 1], True
    return row, False


class HFGenerator:
    """Samples from the policy module itself, so weight sync is a no-op.

    By default it runs the lean loop of rlft.rollout.decode (shared prompt prefill, finished rows
    leave the batch) with the linear layers on packed oneDNN weights where they qualify
    (rlft.accel.onednn: CPU, fp32; `packed=False` keeps aten's matmul); `use_generate=True`
    calls transformers' `generate` instead (the reference, never packed).
    """

    def __init__(
        self,
        model: Any,
        tok: Any,
        batch_size: int = 64,
        use_generate: bool = False,
        packed: bool = True,
    ):
        self.model = model
        self.tok = tok
        self.batch_size = batch_size
        self.use_generate = use_generate
        self.packed = packed and not use_generate
        self.eos = eos_token_ids(model, tok)

    def sync_weights(self, model: Any) -> None:
        self.model = model

    @torch.no_grad()
    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, samples_per_prompt: int = 1
    ) -> Generations:
        was_training = self.model.training
        self.model.eval()  # dropout off, and KV cache on even with gradient checkpointing
        per_call = max(1, self.batch_size // samples_per_prompt)  # prompts per call
        responses: list[list[int]] = []
        finished: list[bool] = []
        try:
            with maybe(self.packed, packed_linears, self.model):
                for start in range(0, len(prompt_ids), per_call):
                    chunk = prompt_ids[start : start + per_call]
                    out = self._generate_chunk(chunk, params, start, samples_per_prompt)
                    responses.extend(out.response_ids)
                    finished.extend(out.finished)
        finally:
            self.model.train(was_training)
        return Generations(response_ids=responses, finished=finished)

    def _generate_chunk(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, start: int, repeats: int
    ) -> Generations:
        ids, mask = left_pad(prompt_ids, self.tok.pad_token_id)
        device = model_device(self.model)
        ids, mask = ids.to(device), mask.to(device)
        if params.seeds is not None:  # the seeds of this chunk's prompts
            params = replace(params, seeds=params.seeds[start : start + len(prompt_ids)])
        if self.use_generate:
            return self._hf_generate(ids, mask, params, repeats)
        return decode(self.model, ids, mask, repeats, params, self.eos)

    def _hf_generate(self, ids: torch.Tensor, mask: torch.Tensor, params: SamplingParams, repeats: int):
        if params.seeds is not None:  # one call per prompt, each from its own seed
            parts = []
            for i, seed in enumerate(params.seeds):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    parts.append(
                        self._hf_generate(
                            ids[i : i + 1], mask[i : i + 1], replace(params, seeds=None), repeats
                        )
                    )
            return Generations(
                response_ids=[r for p in parts for r in p.response_ids],
                finished=[f for p in parts for f in p.finished],
            )
        from transformers import GenerationConfig

        greedy = params.temperature <= 0
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else params.top_k,
            eos_token_id=self.eos,
            pad_token_id=self.tok.pad_token_id,
            use_cache=True,
        )
        ids, mask = ids.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
        out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        cut = [cut_at_eos(row, set(self.eos)) for row in out[:, ids.shape[1] :].tolist()]
        return Generations(response_ids=[c[0] for c in cut], finished=[c[1] for c in cut])
