"""The update phase of an RL step: epochs x minibatches x microbatches, with a non-finite guard;
with several processes, over the batch of all ranks (loss normalised by global counts)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch

from rlft.algorithms import Algorithm
from rlft.algorithms.core import aggregation_weights, clipped_value_loss
from rlft.batch import ScoredBatch, batch_indices
from rlft.dist.ranks import (
    broadcast_object,
    on_global_rows,
    rank,
    sum_gradients,
    sum_over_ranks,
    world_size,
)
from rlft.dist.sharding import clip_grad_norm, extra_passes, is_sharded
from rlft.models.critic import response_values
from rlft.models.logprobs import response_logprobs
from rlft.ops import masked_mean
from rlft.runtime.guard import NonFiniteGuard
from rlft.telemetry.perf import sync_device


def loss_mask(batch: ScoredBatch) -> torch.Tensor:
    """Tokens that count in the loss: the response mask, minus rows filtered out (e.g. truncated)."""
    return batch.extras.get("loss_mask", batch.rollouts.response_mask)


def minibatch_step(
    model: Any,
    optimizer: Any,
    algo: Algorithm,
    mb: ScoredBatch,
    params: Any,
    microbatch_size: int,
    max_grad_norm: float,
    guard: NonFiniteGuard,
    max_len: int | None = None,
    share_prompt: bool = True,
    critic: Any = None,
    filler: ScoredBatch | None = None,
    length_buckets: int = 1,
) -> dict[str, float]:
    """One optimizer step over minibatch `mb` (this rank's rows of it); loss normalised over the
    whole minibatch of every rank, gradients summed over ranks, metrics global.
    `max_len` is the constant normaliser's length (max_new_tokens; default: the batch's T);
    `share_prompt` runs each distinct prompt of a microbatch once (rlft.models.logprobs); with a `critic`,
    the clipped value loss (weight params.value.coef) joins the policy loss; `length_buckets` cuts
    each microbatch's padding (rlft.models.logprobs.response_logprobs). Under fsdp2 every
    rank must run as many forward passes as the others: extra ones run on `filler` (one row)
    with weight 0."""
    mask = loss_mask(mb)
    agg = params.loss_agg
    weights = on_global_rows(lambda m: aggregation_weights(m, agg, max_len or m.shape[1]), mask)
    optimizer.zero_grad(set_to_none=True)
    total_loss, sums, tokens = 0.0, defaultdict(float), 0.0
    # rows whose loss has zero gradient (e.g. zero advantage, no KL) skip the forward/backward:
    # exact, since the normalising weights above already count every row of the minibatch
    active = (algo.rows_with_gradient(mb, params) & mask.any(-1)).nonzero().squeeze(-1)
    chunks = [active[c] for c in batch_indices(len(active), microbatch_size)]
    extra = extra_passes(model, len(chunks), filler)  # before any pass: it is a collective
    for idx in chunks:
        loss, metrics, n = _microbatch_backward(
            model,
            algo,
            mb.select(idx),
            mask[idx],
            weights[idx],
            params,
            (share_prompt, length_buckets),
            critic,
        )
        total_loss += loss
        tokens += n
        for k, v in metrics.items():
            sums[k] += float(v) * n
    for _ in range(extra):
        fm = loss_mask(filler)
        _microbatch_backward(
            model, algo, filler, fm, torch.zeros_like(fm, dtype=torch.float), params, (False, 1), critic
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable += list(critic.parameters()) if critic is not None else []
    if len(active) == 0 and all(p.grad is None for p in trainable):  # an all-zero loss: zero grads
        for p in trainable:
            p.grad = torch.zeros_like(p)
    sum_gradients(trainable)
    grad_norm = clip_grad_norm(trainable, max_grad_norm)
    totals = sum_over_ranks(
        {**sums, "~loss": total_loss, "~tokens": tokens, "~active": len(active), "~rows": mb.rollouts.size}
    )
    total_loss, tokens = totals.pop("~loss"), totals.pop("~tokens")
    active_frac = totals.pop("~active") / max(totals.pop("~rows"), 1.0)
    start = time.perf_counter()
    if guard.check(total_loss, grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync_device()  # the step's queued CUDA kernels belong to this phase
    optimizer_s = time.perf_counter() - start
    out = {k: v / max(tokens, 1.0) for k, v in totals.items()}
    out.update(
        {
            "loss/total" if critic is not None else "loss/policy": total_loss,
            "optim/grad_norm": grad_norm,
            "perf/active_rows_frac": active_frac,
            "perf/optimizer_s": optimizer_s,
        }
    )
    return out


def _microbatch_backward(
    model: Any,
    algo: Algorithm,
    micro: ScoredBatch,
    m: torch.Tensor,
    weights: torch.Tensor,
    params: Any,
    forward: tuple[bool, int],
    critic: Any,
) -> tuple[float, dict[str, Any], float]:
    """Backward of sum(token loss * weights) over one microbatch: (loss, metrics, tokens);
    `forward` = (share_prompt, length_buckets) of rlft.models.logprobs.response_logprobs."""
    r = micro.rollouts
    logprobs, entropy = response_logprobs(model, r.input_ids, r.attention_mask, m.shape[1], True, *forward)
    old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
    token_loss, metrics = algo.token_loss(logprobs, old, micro.ref_logprobs, micro.advantages, m, params)
    if critic is not None:
        value_loss = _value_loss(critic, micro, params)
        token_loss = token_loss + params.value.coef * value_loss
        metrics["loss/value"] = masked_mean(value_loss.detach(), m)
    loss = (token_loss * weights).sum()
    loss.backward()
    metrics["policy/entropy"] = masked_mean(entropy, m)
    return loss.item(), metrics, float(m.sum())


def _value_loss(critic: Any, micro: ScoredBatch, params: Any) -> torch.Tensor:
    r = micro.rollouts
    values = response_values(critic, r.input_ids, r.attention_mask, r.response_mask.shape[1])
    return clipped_value_loss(values, micro.extras["values"], micro.extras["returns"], params.value.clip)


def update_policy(
    model: Any,
    optimizer: Any,
    algo: Algorithm,
    batch: ScoredBatch,
    params: Any,
    minibatch_size: int,
    microbatch_size: int,
    max_grad_norm: float,
    guard: NonFiniteGuard,
    max_len: int | None = None,
    share_prompt: bool = True,
    critic: Any = None,
    length_buckets: int = 1,
) -> dict[str, float]:
    """epochs x minibatches optimizer steps; returns metrics averaged over them. Minibatches are
    drawn from the batch of all ranks (rank r holds its rows r*B .. (r+1)*B - 1), so N ranks
    take the same optimizer steps as one process holding the whole batch."""
    model.train()
    size = batch.rollouts.size
    total, first = size * world_size(), size * rank()
    minibatch_size = min(minibatch_size, total)
    filler = batch.select(torch.arange(1)) if is_sharded(model) and size else None
    all_metrics: dict[str, list[float]] = defaultdict(list)
    for _ in range(params.epochs):
        order = torch.randperm(total) if params.epochs > 1 or minibatch_size < total else torch.arange(total)
        order = broadcast_object(order)  # rank 0's: dropout may have moved the ranks' RNGs apart
        for chunk in batch_indices(total, minibatch_size):
            rows = order[chunk]
            mine = rows[(rows >= first) & (rows < first + size)] - first
            step_metrics = minibatch_step(
                model,
                optimizer,
                algo,
                batch.select(mine),
                params,
                microbatch_size,
                max_grad_norm,
                guard,
                max_len,
                share_prompt,
                critic,
                filler,
                length_buckets,
            )
            for k, v in step_metrics.items():
                all_metrics[k].append(v)
    out = {k: sum(v) / len(v) for k, v in all_metrics.items()}
    out["perf/optimizer_s"] = sum(all_metrics["perf/optimizer_s"])  # seconds: summed, not averaged
    out["optim/skipped_steps"] = float(guard.skipped)
    return out
