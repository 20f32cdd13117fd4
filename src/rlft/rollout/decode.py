"""A lean sampling loop over a transformers causal LM and its KV cache.

Differences from `generate` that matter for RL rollouts on a CPU:
- the prompt is prefilled once and its KV cache repeated for the G samples of that prompt;
- finished sequences leave the batch (their cache rows are dropped), so the batch shrinks as
  completions end instead of decoding padding;
- only the last position's logits are computed, and sampling works on that [N, V] row only;
- the KV cache is reserved for the whole completion up front (rlft.rollout.kv_cache), not grown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlft.models.load import cache_keyword
from rlft.ops import position_ids_from_mask
from rlft.rollout.base import Generations, SamplingParams
from rlft.rollout.kv_cache import reserved_cache


def filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Mask logits [N, V] outside the top-k and the top-p nucleus with -inf."""
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of probs [N, V] (rows may be unnormalised) by inverting the CDF:
    u ~ U[0, total), token = first index whose cumulative mass exceeds u. Same distribution as
    torch.multinomial (zero-mass tokens are never drawn), ~30x cheaper on a CPU at V=49k since
    it needs one uniform per row instead of one exponential per vocabulary entry."""
    cdf = probs.cumsum(-1)  # CPU cumsum accumulates in double, stores float: error ~1 ulp of total
    total = cdf[:, -1:].contiguous()
    u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device, generator=generator) * total
    drawn = torch.searchsorted(cdf, u, right=True)
    last_with_mass = torch.searchsorted(cdf, total)  # guards u rounding up to the total
    return torch.minimum(drawn, last_with_mass).squeeze(-1)


def next_tokens(
    logits: Tensor,
    params: SamplingParams,
    generators: Sequence[torch.Generator] | None = None,
    owners: Tensor | None = None,
) -> Tensor:
    """Greedy (temperature 0) or sampled next tokens from logits [N, V] -> [N]. With per-prompt
    `generators`, row i samples from generators[owners[i]] (rows of one owner in row order)."""
    if params.temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    if generators is None or owners is None:
        return sample_categorical(probs)
    tokens = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    for owner in owners.unique().tolist():
        rows = owners == owner
        tokens[rows] = sample_categorical(probs[rows], generators[owner])
    return tokens


@torch.no_grad()
def decode(
    model: Any,
    prompts: Tensor,
    prompt_mask: Tensor,
    repeats: int,
    params: SamplingParams,
    eos_ids: Sequence[int],
) -> Generations:
    """Sample `repeats` completions for each left-padded prompt row: prompts [P, Lp] -> P*repeats
    completions, in prompt-major order (all samples of prompt 0 first)."""
    cache = reserved_cache(model.config, prompts.shape[1] + params.max_new_tokens)
    cache_kw = cache_keyword(model)
    out = model(
        input_ids=prompts,
        attention_mask=prompt_mask,
        position_ids=position_ids_from_mask(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    logits = out.logits[:, -1, :]
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
        logits = logits.repeat_interleave(repeats, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(repeats, dim=0)
    n = prompt_mask.shape[0]
    device = prompt_mask.device
    alive = torch.arange(n, device=device)  # original row of each live cache row
    mask = prompt_mask
    positions = prompt_mask.sum(-1)  # next position per live row
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    responses: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    generators = None
    if params.seeds is not None:
        if len(params.seeds) != prompts.shape[0]:
            raise ValueError(f"{len(params.seeds)} sampling seeds for {prompts.shape[0]} prompts")
        generators = [torch.Generator(device=device).manual_seed(s) for s in params.seeds]
    for step in range(params.max_new_tokens):
        tokens = next_tokens(logits, params, generators, alive // repeats)
        for row, tok in zip(alive.tolist(), tokens.tolist(), strict=True):
            responses[row].append(tok)
        done = torch.isin(tokens, eos)
        for row in alive[done].tolist():
            finished[row] = True
        if step == params.max_new_tokens - 1:
            break
        keep = ~done
        if not bool(keep.any()):
            break
        if not bool(keep.all()):
            idx = keep.nonzero().squeeze(-1)
            cache.batch_select_indices(idx)
            alive, tokens, mask, positions = alive[idx], tokens[idx], mask[idx], positions[idx]
        mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype, device=device)], dim=1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=positions[:, None],
            use_cache=True,
            **{cache_kw: cache},
        )
        logits = out.logits[:, -1, :]
        positions = positions + 1
    return Generations(response_ids=responses, finished=finished)
