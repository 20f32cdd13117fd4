"""Model forward passes that return per-token logprobs of the response part of a batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlft.models.load import cache_keyword
from rlft.ops import logprobs_and_entropy, position_ids_from_mask

# causal LMs whose logits are exactly lm_head(final hidden state): no scaling or soft-capping
PLAIN_HEAD_MODELS = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)


class _Readout:
    """Runs a causal LM and returns its features at kept positions: the final hidden states when
    the model is a plain-head one (and not sharded: FSDP2 gathers parameters in the root's
    forward), so that the LM head runs on real tokens only; else the logits."""

    def __init__(self, model: Any):
        from rlft.dist.sharding import is_sharded

        plain = type(model).__name__ in PLAIN_HEAD_MODELS and not is_sharded(model)
        self.model, self.body = model, model.model if plain else model
        self.head = model.lm_head if plain else None

    def __call__(self, keep: int | Tensor, cache: Any = None, **inputs: Any) -> Tensor:
        """Features [b, k, F] at positions `keep` (a tensor) or the last `keep` (0: all); a
        `cache` is filled in place."""
        if cache is not None:
            inputs = {**inputs, "use_cache": True, cache_keyword(self.body): cache}
        if self.head is None:
            return self.body(**inputs, logits_to_keep=keep).logits
        hidden = self.body(**inputs).last_hidden_state
        return hidden[:, keep] if isinstance(keep, Tensor) else hidden[:, -keep:]

    def logits(self, features: Tensor) -> Tensor:
        return features if self.head is None else self.head(features)


def response_logits(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_len: int, share_prompt: bool = False
) -> Tensor:
    """Logits [B, T, V] at the positions that predict the last T tokens of input_ids [B, L].

    Only those T positions go through the LM head, so [B, L, V] is never built.
    Positions are counted over real tokens (left padding safe). With `share_prompt`, rows with
    identical prompt tokens run their prompt once and share its KV cache: the same maths, with
    gradients flowing into the shared pass.
    """
    readout = _Readout(model)
    prompt = _PromptPass.maybe(readout, input_ids, attention_mask, response_len, share_prompt)
    rows = torch.arange(len(input_ids), device=input_ids.device)
    return readout.logits(_features(readout, prompt, rows, input_ids, attention_mask, response_len))


def _features(
    readout: _Readout,
    prompt: _PromptPass | None,
    rows: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_len: int,
) -> Tensor:
    """Features [b, T, F] predicting the last T tokens of `rows` of the batch (their input_ids /
    attention_mask [b, L] given): on the shared prompts' KV cache when there is a prompt pass,
    else in one pass over the whole rows."""
    if prompt is not None:
        return prompt.response_features(readout, rows, input_ids, attention_mask)
    length = input_ids.shape[1]  # position j predicts token j + 1: keep L-T-1 .. L-2
    return readout(
        torch.arange(length - response_len - 1, length - 1, device=input_ids.device),
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )


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
    (and their entropy [B, T], no gradient, when asked); see `response_logits`. 0 at padding.

    The rows (responses right-padded) are sorted by response length and run in `length_buckets`
    groups, each cut to its longest response: the padded tail is never computed. For a
    plain-head model (`PLAIN_HEAD_MODELS`) only real response tokens reach the LM head and the
    log-softmax. Same values as one padded pass; the prompt is still run once."""
    readout = _Readout(model)
    lp = input_ids.shape[1] - response_len
    real = attention_mask[:, lp:].bool()
    prompt = _PromptPass.maybe(readout, input_ids, attention_mask, response_len, share_prompt)
    where, features, targets = [], [], []
    for rows, t in length_buckets_of(real.sum(-1), length_buckets):
        ids, mask = input_ids[rows, : lp + t], attention_mask[rows, : lp + t]
        f = _features(readout, prompt, rows, ids, mask, t)
        keep = real[rows, :t]
        r, c = keep.nonzero(as_tuple=True)
        where.append((rows[r], c))
        features.append(f[r, c])
        targets.append(ids[r, lp + c])
    rows, cols = (torch.cat(x) for x in zip(*where, strict=True)) if where else (real.nonzero(as_tuple=True))
    parts = [
        logprobs_and_entropy(readout.logits(f), t, with_entropy=with_entropy)
        for f, t in zip(features, targets, strict=True)
    ]
    shape = real.shape
    logprobs = _scatter(shape, rows, cols, [p[0] for p in parts])
    entropy = _scatter(shape, rows, cols, [p[1] for p in parts]) if with_entropy else None
    return logprobs, entropy


def _scatter(shape: torch.Size, rows: Tensor, cols: Tensor, values: list[Tensor]) -> Tensor:
    """[B, T] zeros with `values` (concatenated) at (rows, cols): differentiable in the values."""
    flat = torch.cat(values) if values else torch.zeros(0, device=rows.device)
    return torch.zeros(shape, device=rows.device, dtype=flat.dtype).index_put((rows, cols), flat)


def length_buckets_of(lengths: Tensor, buckets: int) -> list[tuple[Tensor, int]]:
    """Rows sorted by length [B] and split into `buckets` groups of near-equal size:
    [(row indices, longest length in the group)]; empty groups dropped, lengths at least 1."""
    if len(lengths) == 0:
        return []
    order = torch.argsort(lengths, stable=True)
    groups = [g for g in torch.tensor_split(order, min(max(buckets, 1), len(order))) if len(g)]
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


class _PromptPass:
    """Each distinct prompt of a batch run once (with grad when enabled); any subset of the rows
    then runs its responses on those prompts' KV cache."""

    def __init__(self, readout: _Readout, input_ids: Tensor, attention_mask: Tensor, t: int, inverse: Tensor):
        from transformers import DynamicCache

        b, self.lp = input_ids.shape[0], input_ids.shape[1] - t
        rows = torch.arange(b, device=input_ids.device)
        first = torch.full((int(inverse.max()) + 1,), b, device=input_ids.device)
        first = first.scatter_reduce(0, inverse, rows, "amin")  # one row per distinct prompt
        prompt_mask = attention_mask[first, : self.lp]
        self.cache = DynamicCache(config=readout.model.config)
        self.first = readout(  # [P, 1, F]: each prompt's last position predicts response token 0
            1,
            self.cache,
            input_ids=input_ids[first, : self.lp],
            attention_mask=prompt_mask,
            position_ids=position_ids_from_mask(prompt_mask),
        )
        self.inverse = inverse
        self.prompt_len = prompt_mask.sum(-1)  # real tokens per distinct prompt

    @classmethod
    def maybe(
        cls, readout: _Readout, input_ids: Tensor, attention_mask: Tensor, t: int, share: bool
    ) -> _PromptPass | None:
        inverse = _shares_prompt(readout.model, input_ids, t, share)
        return None if inverse is None else cls(readout, input_ids, attention_mask, t, inverse)

    def response_features(
        self, readout: _Readout, rows: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> Tensor:
        """Features [b, t, F] predicting the response tokens of `rows` of the batch, whose
        input_ids/attention_mask [b, lp + t] are given (responses cut to any length t >= 1)."""
        from transformers import DynamicCache

        which = self.inverse[rows]
        first = self.first[which]
        t = input_ids.shape[1] - self.lp
        if t == 1:
            return first
        cache = DynamicCache(config=readout.model.config)
        for i, layer in enumerate(self.cache.layers):  # each row gets its prompt's keys/values
            cache.update(layer.keys[which], layer.values[which], i)
        positions = self.prompt_len[which][:, None] + torch.arange(t - 1, device=input_ids.device)[None, :]
        rest = readout(
            0,
            cache,
            input_ids=input_ids[:, self.lp : self.lp + t - 1],
            attention_mask=attention_mask[:, : self.lp + t - 1],
            position_ids=positions,
        )
        return torch.cat([first, rest], dim=1)


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
