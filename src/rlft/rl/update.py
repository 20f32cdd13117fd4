"""The update phase of an RL step: epochs x minibatches x microbatches, with a non-finite guard;
with several processes, over the batch of all ranks (loss normalised by global counts)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from rlft.algorithms import Algorithm
from rlft.algorithms.core import aggregation_weights, clipped_value_loss
from rlft.batch import ScoredBatch, batch_indices
from rlft.config.rl import AlgoConfig
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
from rlft.models.logprobs import response_logprobs, rollout_logprobs
from rlft.ops import masked_mean
from rlft.runtime.guard import NonFiniteGuard
from rlft.telemetry.perf import sync_device


@dataclass(frozen=True)
class UpdatePlan:
    """How the update phase runs, bound once per run (rlft.rl.setup.update_plan): batch sizes and
    the forward's performance settings. The algorithm functions never see it."""

    minibatch_size: int  # sequences per optimizer step, over all ranks
    microbatch_size: int  # sequences per forward/backward pass
    max_grad_norm: float = 0.0  # 0 = no clipping
    max_len: int | None = None  # the constant loss normaliser's length (max_new_tokens); None: batch T
    share_prompt: bool = True  # each distinct prompt of a microbatch runs once (rlft.models.logprobs)
    length_buckets: int = 1  # a microbatch's rows cut into buckets of similar length (less padding)

    def logprobs(self, model: Any, rollouts: Any, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs, entropy) [B, T] of a microbatch's responses, with this plan's forward."""
        t = rollouts.response_mask.shape[1]
        forward = (self.share_prompt, self.length_buckets)
        return response_logprobs(model, rollouts.input_ids, rollouts.attention_mask, t, with_grad, *forward)

    def rollout_logprobs(self, model: Any, rollouts: Any) -> torch.Tensor:
        """No-grad logprobs [B, T] of a whole batch, microbatched (old policy, reference)."""
        return rollout_logprobs(model, rollouts, self.microbatch_size, self.share_prompt, self.length_buckets)


FILLER_PLAN = UpdatePlan(minibatch_size=1, microbatch_size=1, share_prompt=False)  # fsdp2 filler pass


def loss_mask(batch: ScoredBatch) -> torch.Tensor:
    """Tokens that count in the loss: the response mask, minus rows filtered out (e.g. truncated)."""
    return batch.extras.get("loss_mask", batch.rollouts.response_mask)


def minibatch_step(
    model: Any,
    optimizer: Any,
    algo: Algorithm,
    mb: ScoredBatch,
    params: AlgoConfig,
    plan: UpdatePlan,
    guard: NonFiniteGuard,
    critic: Any = None,
    filler: ScoredBatch | None = None,
) -> dict[str, float]:
    """One optimizer step over minibatch `mb` (this rank's rows of it); loss normalised over the
    whole minibatch of every rank, gradients summed over ranks, metrics global. With a `critic`,
    the clipped value loss (weight params.value.coef) joins the policy loss. Under fsdp2 every
    rank must run as many forward passes as the others: extra ones run on `filler` (one row) with
    weight 0."""
    mask = loss_mask(mb)
    agg = params.loss_agg
    weights = on_global_rows(lambda m: aggregation_weights(m, agg, plan.max_len or m.shape[1]), mask)
    optimizer.zero_grad(set_to_none=True)
    total_loss, policy_loss, sums, tokens = 0.0, 0.0, defaultdict(float), 0.0
    # rows whose loss has zero gradient (e.g. zero advantage, no KL) skip the forward/backward:
    # exact, since the normalising weights above already count every row of the minibatch
    active = (algo.rows_with_gradient(mb, params) & mask.any(-1)).nonzero().squeeze(-1)
    chunks = [active[c] for c in batch_indices(len(active), plan.microbatch_size)]
    extra = extra_passes(model, len(chunks), filler)  # before any pass: it is a collective
    for idx in chunks:
        loss, policy, metrics, n = _microbatch_backward(
            model, algo, mb.select(idx), mask[idx], weights[idx], params, plan, critic
        )
        total_loss += loss
        policy_loss += policy
        tokens += n
        for k, v in metrics.items():
            sums[k] += float(v) * n
    for _ in range(extra):
        fm = loss_mask(filler)
        zero = torch.zeros_like(fm, dtype=torch.float)
        _microbatch_backward(model, algo, filler, fm, zero, params, FILLER_PLAN, critic)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable += list(critic.parameters()) if critic is not None else []
    if len(active) == 0 and all(p.grad is None for p in trainable):  # an all-zero loss: zero grads
        for p in trainable:
            p.grad = torch.zeros_like(p)
    sum_gradients(trainable)
    grad_norm = clip_grad_norm(trainable, plan.max_grad_norm)
    totals = sum_over_ranks(
        {**sums, "~loss": total_loss, "~policy": policy_loss, "~tokens": tokens, "~active": len(active)}
        | {"~rows": mb.rollouts.size}
    )
    total_loss, policy_loss, tokens = totals.pop("~loss"), totals.pop("~policy"), totals.pop("~tokens")
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
            "loss/policy": policy_loss,  # the critic's value loss apart: loss/value
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
    params: AlgoConfig,
    plan: UpdatePlan,
    critic: Any,
) -> tuple[float, float, dict[str, Any], float]:
    """Backward of sum(token loss * weights) over one microbatch: (loss, its policy part without
    the critic's value loss, metrics, tokens)."""
    logprobs, entropy = plan.logprobs(model, micro.rollouts, with_grad=True)
    old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
    token_loss, metrics = algo.token_loss(logprobs, old, micro.ref_logprobs, micro.advantages, m, params)
    policy_token_loss = token_loss
    if critic is not None:
        value_loss = _value_loss(critic, micro, params)
        token_loss = token_loss + params.value.coef * value_loss
        metrics["loss/value"] = masked_mean(value_loss.detach(), m)
    loss = (token_loss * weights).sum()
    loss.backward()
    metrics["policy/entropy"] = masked_mean(entropy, m)
    total = loss.item()
    policy = total if critic is None else float((policy_token_loss.detach() * weights).sum())
    return total, policy, metrics, float(m.sum())


def _value_loss(critic: Any, micro: ScoredBatch, params: AlgoConfig) -> torch.Tensor:
    r = micro.rollouts
    values = response_values(critic, r.input_ids, r.attention_mask, r.response_mask.shape[1])
    return clipped_value_loss(values, micro.extras["values"], micro.extras["returns"], params.value.clip)


def update_policy(
    model: Any,
    optimizer: Any,
    algo: Algorithm,
    batch: ScoredBatch,
    params: AlgoConfig,
    plan: UpdatePlan,
    guard: NonFiniteGuard,
    critic: Any = None,
) -> dict[str, float]:
    """epochs x minibatches optimizer steps; returns metrics averaged over them. Minibatches are
    drawn from the batch of all ranks (rank r holds its rows r*B .. (r+1)*B - 1), so N ranks
    take the same optimizer steps as one process holding the whole batch."""
    model.train()
    size = batch.rollouts.size
    total, first = size * world_size(), size * rank()
    minibatch_size = min(plan.minibatch_size, total)
    filler = batch.select(torch.arange(1)) if is_sharded(model) and size else None
    all_metrics: dict[str, list[float]] = defaultdict(list)
    for _ in range(params.epochs):
        order = torch.randperm(total) if params.epochs > 1 or minibatch_size < total else torch.arange(total)
        order = broadcast_object(order)  # rank 0's: dropout may have moved the ranks' RNGs apart
        for chunk in batch_indices(total, minibatch_size):
            rows = order[chunk]
            mine = rows[(rows >= first) & (rows < first + size)] - first
            step_metrics = minibatch_step(
                model, optimizer, algo, batch.select(mine), params, plan, guard, critic, filler
            )
            for k, v in step_metrics.items():
                all_metrics[k].append(v)
    out = {k: sum(v) / len(v) for k, v in all_metrics.items()}
    out["perf/optimizer_s"] = sum(all_metrics["perf/optimizer_s"])  # seconds: summed, not averaged
    out["optim/skipped_steps"] = float(guard.skipped)
    return out
