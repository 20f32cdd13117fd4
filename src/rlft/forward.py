"""Model forward passes that return per-token logprobs of the response part of a batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlft.models import cache_keyword
from rlft.ops import logprobs_and_entropy, position_ids_from_mask


def response_logits(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_len: int, share_prompt: bool = False
) -> Tensor:
    """Logits [B, T, V] at the positions that predict the last T tokens of input_ids [B, L].

    Only those T positions go through the LM head (logits_to_keep as positions), so [B, L, V] is
    never built.
    Positions are counted over real tokens (left padding safe). With `share_prompt`, rows with
    identical prompt tokens run their prompt once and share its KV cache: the same maths, with
    gradients flowing into the shared pass.
    """
    inverse = _shares_prompt(model, input_ids, response_len, share_prompt)
    if inverse is not None:
        return _shared_prompt_logits(model, input_ids, attention_mask, response_len, inverse)
    length = input_ids.shape[1]  # position j predicts token j + 1: keep L-T-1 .. L-2
    keep = torch.arange(length - response_len - 1, length - 1, device=input_ids.device)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=keep,
        use_cache=False,
    )
    return out.logits  # [B, T, V], contiguous (a slice would make reshapes copy it)


def response_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
    with_entropy: bool = False,
    share_prompt: bool = False,
    length_buckets: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Logprobs [B, T] of the last T tokens of input_ids [B, L] given everything before them
    (and their entropy [B, T] under no_grad when asked); see `response_logits`.

    With `length_buckets` > 1 the rows (responses right-padded) are sorted by response length and
    run in that many groups, each cut to its longest response: the padded tail is never computed
    (0 in the outputs there). Same values as the padded pass; the prompt is still run once."""
    if length_buckets <= 1:
        logits = response_logits(model, input_ids, attention_mask, response_len, share_prompt)
        return logprobs_and_entropy(logits, input_ids[:, -response_len:], with_entropy=with_entropy)
    lp = input_ids.shape[1] - response_len
    buckets = length_buckets_of(attention_mask[:, lp:].sum(-1), length_buckets)
    prompt = _PromptPass.maybe(model, input_ids, attention_mask, response_len, share_prompt)
    parts, entropies, order = [], [], []
    for rows, t in buckets:
        ids = input_ids[rows, : lp + t]
        if prompt is not None:
            logits = prompt.response_logits(model, rows, ids, attention_mask[rows, : lp + t])
        else:
            logits = response_logits(model, ids, attention_mask[rows, : lp + t], t)
        logprobs, entropy = logprobs_and_entropy(logits, ids[:, lp:], with_entropy=with_entropy)
        parts.append(torch.nn.functional.pad(logprobs, (0, response_len - t)))
        if entropy is not None:
            entropies.append(torch.nn.functional.pad(entropy, (0, response_len - t)))
        order.append(rows)
    restore = torch.argsort(torch.cat(order))  # bucket order -> row order
    entropy = torch.cat(entropies)[restore] if with_entropy else None
    return torch.cat(parts)[restore], entropy


def length_buckets_of(lengths: Tensor, buckets: int) -> list[tuple[Tensor, int]]:
    """Rows sorted by length [B] and split into `buckets` groups of near-equal size:
    [(row indices, longest length in the group)]; empty groups dropped, lengths at least 1."""
    order = torch.argsort(lengths, stable=True)
    groups = [g for g in torch.tensor_split(order, min(buckets, len(order))) if len(g)]
    return [(g, max(1, int(lengths[g].max()))) for g in groups]


def _shares_prompt(model: Any, input_ids: Tensor, response_len: int, share_prompt: bool) -> Tensor | None:
    """inverse [B] (row -> distinct prompt) when sharing pays off and is allowed, else None."""
    # HF drops the KV cache under gradient checkpointing in train mode, so no sharing there
    flag = (
        "is_activation_checkpointing"
        if hasattr(model, "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    if not share_prompt or (model.training and getattr(model, flag, False)):
        return None
    prompts = input_ids[:, : input_ids.shape[1] - response_len]
    distinct, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    return inverse if len(distinct) < len(prompts) else None


def _shared_prompt_logits(
    model: Any, input_ids: Tensor, attention_mask: Tensor, t: int, inverse: Tensor
) -> Tensor:
    """Logits [B, T, V] predicting the response tokens, running each distinct prompt once;
    inverse [B] maps each row to its distinct prompt."""
    prompt = _PromptPass(model, input_ids, attention_mask, t, inverse)
    return prompt.response_logits(model, torch.arange(len(input_ids)), input_ids, attention_mask)


class _PromptPass:
    """Each distinct prompt of a batch run once (with grad when enabled); any subset of the rows
    then runs its responses on those prompts' KV cache."""

    def __init__(self, model: Any, input_ids: Tensor, attention_mask: Tensor, t: int, inverse: Tensor):
        from transformers import DynamicCache

        b, self.lp = input_ids.shape[0], input_ids.shape[1] - t
        rows = torch.arange(b, device=input_ids.device)
        first = torch.full((int(inverse.max()) + 1,), b, device=input_ids.device)
        first = first.scatter_reduce(0, inverse, rows, "amin")  # one row per distinct prompt
        prompt_mask = attention_mask[first, : self.lp]
        self.cache = DynamicCache(config=model.config)
        out = model(
            input_ids=input_ids[first, : self.lp],
            attention_mask=prompt_mask,
            position_ids=position_ids_from_mask(prompt_mask),
            use_cache=True,
            logits_to_keep=1,
            **{cache_keyword(model): self.cache},
        )
        self.inverse, self.logits = inverse, out.logits
        self.prompt_len = prompt_mask.sum(-1)  # real tokens per distinct prompt

    @classmethod
    def maybe(
        cls, model: Any, input_ids: Tensor, attention_mask: Tensor, t: int, share: bool
    ) -> _PromptPass | None:
        inverse = _shares_prompt(model, input_ids, t, share)
        return None if inverse is None else cls(model, input_ids, attention_mask, t, inverse)

    def response_logits(self, model: Any, rows: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits [b, t, V] for `rows` of the batch, whose input_ids/attention_mask [b, lp + t] are
        given (responses cut to any length t >= 1)."""
        from transformers import DynamicCache

        which = self.inverse[rows]
        first_logits = self.logits[which]  # [b, 1, V]: the last prompt position predicts token 0
        t = input_ids.shape[1] - self.lp
        if t == 1:
            return first_logits
        cache = DynamicCache(config=model.config)
        for i, layer in enumerate(self.cache.layers):  # each row gets its prompt's keys/values
            cache.update(layer.keys[which], layer.values[which], i)
        positions = self.prompt_len[which][:, None] + torch.arange(t - 1, device=input_ids.device)[None, :]
        rest = model(
            input_ids=input_ids[:, self.lp : self.lp + t - 1],
            attention_mask=attention_mask[:, : self.lp + t - 1],
            position_ids=positions,
            use_cache=True,
            **{cache_keyword(model): cache},
        )
        return torch.cat([first_logits, rest.logits], dim=1)


@torch.no_grad()
def rollout_logprobs(
    model: Any, rollouts: Any, microbatch_size: int, share_prompt: bool = True, length_buckets: int = 1
) -> Tensor:
    """Logprobs [B, T] of a `Rollouts` batch under no_grad in eval mode, microbatched (reference
    and old-policy passes)."""
    was_training = model.training
    model.eval()
    t = rollouts.response_mask.shape[1]
    parts = []
    try:
        for i in range(0, rollouts.size, microbatch_size):
            rows = slice(i, i + microbatch_size)
            ids, mask = rollouts.input_ids[rows], rollouts.attention_mask[rows]
            parts.append(response_logprobs(model, ids, mask, t, False, share_prompt, length_buckets)[0])
    finally:
        model.train(was_training)
    return torch.cat(parts)
