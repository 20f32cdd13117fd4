"""The update phase of an RL step: epochs x minibatches x microbatches, with a non-finite guard."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from rlft.algorithms import Algorithm
from rlft.algorithms.core import aggregation_weights, clipped_value_loss
from rlft.batch import ScoredBatch, batch_indices
from rlft.forward import response_logprobs
from rlft.ops import masked_mean
from rlft.value import response_values


class NonFiniteError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or grad norm."""


class NonFiniteGuard:
    """Skips optimizer steps whose loss or grad norm is not finite; aborts after `limit` in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.consecutive = 0
        self.skipped = 0

    def check(self, loss: float, grad_norm: float) -> bool:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.limit:
            raise NonFiniteError(
                f"{self.consecutive} consecutive steps with non-finite loss/grad norm "
                f"(last loss={loss}, grad_norm={grad_norm}); lower the LR or check the rewards"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, s: dict[str, int]) -> None:
        self.consecutive, self.skipped = int(s["consecutive"]), int(s["skipped"])


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
) -> dict[str, float]:
    """One optimizer step over minibatch `mb`; loss normalised over the whole minibatch.
    `max_len` is the constant normaliser's length (max_new_tokens; default: the batch's T);
    `share_prompt` runs each distinct prompt of a microbatch once (rlft.forward); with a `critic`,
    the clipped value loss (weight params.value.coef) joins the policy loss."""
    mask = loss_mask(mb)
    weights = aggregation_weights(mask, params.loss_agg, max_len or mask.shape[1])
    optimizer.zero_grad(set_to_none=True)
    total_loss, sums, tokens = 0.0, defaultdict(float), 0.0
    # rows whose loss has zero gradient (e.g. zero advantage, no KL) skip the forward/backward:
    # exact, since the normalising weights above already count every row of the minibatch
    active = (algo.rows_with_gradient(mb, params) & mask.any(-1)).nonzero().squeeze(-1)
    for chunk in batch_indices(len(active), microbatch_size):
        idx = active[chunk]
        micro = mb.select(idx)
        r, m = micro.rollouts, mask[idx]
        logprobs, entropy = response_logprobs(
            model, r.input_ids, r.attention_mask, m.shape[1], with_entropy=True, share_prompt=share_prompt
        )
        old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
        token_loss, metrics = algo.token_loss(logprobs, old, micro.ref_logprobs, micro.advantages, m, params)
        if critic is not None:
            value_loss = _value_loss(critic, micro, params)
            token_loss = token_loss + params.value.coef * value_loss
            metrics["loss/value"] = masked_mean(value_loss.detach(), m)
        loss = (token_loss * weights[idx]).sum()
        loss.backward()
        total_loss += loss.item()
        n = float(m.sum())
        tokens += n
        metrics["policy/entropy"] = masked_mean(entropy, m)
        for k, v in metrics.items():
            sums[k] += float(v) * n
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable += list(critic.parameters()) if critic is not None else []
    if len(active) == 0:  # what a full backward of an all-zero loss gives: zero gradients
        for p in trainable:
            p.grad = torch.zeros_like(p)
    grad_norm = float(
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm if max_grad_norm > 0 else float("inf"))
    )
    if guard.check(total_loss, grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    out = {k: v / max(tokens, 1.0) for k, v in sums.items()}
    out.update(
        {
            "loss/total" if critic is not None else "loss/policy": total_loss,
            "optim/grad_norm": grad_norm,
            "perf/active_rows_frac": len(active) / max(mb.rollouts.size, 1),
        }
    )
    return out


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
) -> dict[str, float]:
    """epochs x minibatches optimizer steps; returns metrics averaged over them."""
    model.train()
    size = batch.rollouts.size
    minibatch_size = min(minibatch_size, size)
    all_metrics: dict[str, list[float]] = defaultdict(list)
    for _ in range(params.epochs):
        order = torch.randperm(size) if params.epochs > 1 or minibatch_size < size else torch.arange(size)
        for chunk in batch_indices(size, minibatch_size):
            mb = batch.select(order[chunk])
            step_metrics = minibatch_step(
                model,
                optimizer,
                algo,
                mb,
                params,
                microbatch_size,
                max_grad_norm,
                guard,
                max_len,
                share_prompt,
                critic,
            )
            for k, v in step_metrics.items():
                all_metrics[k].append(v)
    out = {k: sum(v) / len(v) for k, v in all_metrics.items()}
    out["optim/skipped_steps"] = float(guard.skipped)
    return out
