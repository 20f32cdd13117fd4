"""The TRPO update rule over a batch of rollouts (maths in rlft.algorithms.trpo).

Cost, honestly: each conjugate-gradient iteration is one Fisher-vector product, i.e. a forward,
a backward with create_graph and a second backward over the FVP rows (about 3-4x a plain
forward+backward); the line search adds one no-grad forward per try. With cg_iters=10 a TRPO
step costs roughly 30-40 PPO microbatch passes over the FVP share of the batch, so
`algo.trpo.fvp_fraction` < 1 is the usual lever.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from rlft.algorithms.core import aggregation_weights, kl_k3
from rlft.algorithms.distill import full_vocab_kl
from rlft.algorithms.trpo import backtracking_line_search, conjugate_gradient, max_step
from rlft.batch import ScoredBatch, batch_indices
from rlft.config.rl import AlgoConfig
from rlft.models.logprobs import response_logits, response_logprobs
from rlft.ops import gather_logprobs, masked_mean, masked_sum
from rlft.rl.update import UpdatePlan, loss_mask
from rlft.runtime.guard import NonFiniteGuard


def _surrogate_loss(
    model: Any,
    algo: Any,
    batch: ScoredBatch,
    rows: torch.Tensor,
    weights: torch.Tensor,
    params: AlgoConfig,
    plan: UpdatePlan,
    backward: bool,
) -> tuple[float, float]:
    """sum_t w_t * the algorithm's token loss (its surrogate, + the KL term when in the loss);
    accumulates grads if `backward`. Returns (loss, mean policy entropy per loss token; 0 unless
    `backward`)."""
    total, entropy_sum, tokens = 0.0, 0.0, 0.0
    for chunk in batch_indices(len(rows), plan.microbatch_size):
        idx = rows[chunk]
        mb = batch.select(idx)
        r = mb.rollouts
        with torch.set_grad_enabled(backward):
            logp, entropy = response_logprobs(
                model, r.input_ids, r.attention_mask, r.response_mask.shape[1], backward, plan.share_prompt
            )
            m = loss_mask(mb)
            tok, _ = algo.token_loss(logp, mb.old_logprobs, mb.ref_logprobs, mb.advantages, m, params)
            loss = (tok * weights[idx]).sum()
        if backward:
            loss.backward()
            entropy_sum += float(masked_sum(entropy, m))
            tokens += float(m.sum())
        total += float(loss.detach())
    return total, entropy_sum / max(tokens, 1.0)


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Plain-PyTorch attention while inside: fused SDPA kernels have no double backward, which the
    Fisher-vector product needs."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _fisher_vector_product(
    model: Any, trainable: list, batch: ScoredBatch, rows: torch.Tensor, micro: int, damping: float
):
    """v -> (F + damping I) v, F = Hessian of the mean per-token KL(old || new) over the vocabulary
    at the old parameters (the Fisher information of the token distributions)."""
    mask = loss_mask(batch)
    weights = aggregation_weights(mask[rows], "token_mean")

    def fvp(v: torch.Tensor) -> torch.Tensor:
        with eager_attention(model):
            return _fvp(v)

    def _fvp(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for chunk in batch_indices(len(rows), micro):
            mb = batch.select(rows[chunk])
            r = mb.rollouts
            logits = response_logits(model, r.input_ids, r.attention_mask, r.response_mask.shape[1])
            logp = torch.log_softmax(logits.float(), dim=-1)
            kl = (full_vocab_kl(logp.detach(), logp) * weights[chunk]).sum()  # KL(old || new)
            grads = torch.autograd.grad(kl, trainable, create_graph=True)
            flat = torch.cat([g.reshape(-1) for g in grads])
            hv = torch.autograd.grad((flat * v).sum(), trainable)
            out += torch.cat([h.reshape(-1) for h in hv])
        return out + damping * v

    return fvp


@torch.no_grad()
def _kl_old_new(model: Any, batch: ScoredBatch, rows: torch.Tensor, micro: int, share: bool) -> float:
    """Mean per-token KL(old || new) from the sampled tokens (k3, unbiased and >= 0)."""
    total, count = 0.0, 0.0
    mask = loss_mask(batch)
    for chunk in batch_indices(len(rows), micro):
        idx = rows[chunk]
        mb = batch.select(idx)
        r = mb.rollouts
        logits = response_logits(model, r.input_ids, r.attention_mask, r.response_mask.shape[1], share)
        new = gather_logprobs(logits, r.input_ids[:, -r.response_mask.shape[1] :])
        m = mask[idx]
        total += float(masked_mean(kl_k3(mb.old_logprobs, new), m)) * float(m.sum())
        count += float(m.sum())
    return total / max(count, 1.0)


def trpo_update(
    model: Any,
    algo: Any,
    batch: ScoredBatch,
    params: AlgoConfig,
    plan: UpdatePlan,
    guard: NonFiniteGuard,
) -> dict[str, float]:
    """One natural-gradient step on the whole batch, inside the KL trust region."""
    model.train()
    t = params.trpo
    trainable = [p for p in model.parameters() if p.requires_grad]
    mask = loss_mask(batch)
    weights = aggregation_weights(mask, params.loss_agg, plan.max_len or mask.shape[1])
    everything = torch.arange(batch.rollouts.size)
    active = (algo.rows_with_gradient(batch, params) & mask.any(-1)).nonzero().squeeze(-1)
    for p in trainable:
        p.grad = None
    loss_old, entropy = _surrogate_loss(model, algo, batch, active, weights, params, plan, backward=True)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
    g = torch.cat([x.reshape(-1) for x in grads])
    for p in trainable:
        p.grad = None
    metrics = {
        "loss/policy": loss_old,
        "optim/grad_norm": float(g.norm()),
        "policy/approx_kl": 0.0,  # KL(old || new) per token: 0 until a step is accepted
        "trpo/accepted": 0.0,
    }
    if len(active):
        metrics["policy/entropy"] = entropy  # of the rows with a gradient, before the step
    if not guard.check(loss_old, float(g.norm())) or float(g.norm()) == 0.0:
        return metrics
    stride = max(1, round(1 / max(t.fvp_fraction, 1e-6)))
    fvp = _fisher_vector_product(
        model, trainable, batch, everything[::stride], plan.microbatch_size, t.damping
    )
    direction = conjugate_gradient(fvp, -g, t.cg_iters)
    step = max_step(direction, fvp(direction), t.max_kl)
    start = parameters_to_vector(trainable).detach().clone()

    def evaluate(frac: float) -> tuple[float, float]:
        vector_to_parameters(start + frac * step, trainable)
        if frac == 0.0:
            return 0.0, 0.0
        with torch.no_grad():
            loss_new, _ = _surrogate_loss(model, algo, batch, active, weights, params, plan, backward=False)
        return loss_old - loss_new, _kl_old_new(
            model, batch, everything, plan.microbatch_size, plan.share_prompt
        )

    res = backtracking_line_search(evaluate, t.max_kl, t.backtrack_ratio, t.max_backtracks)
    metrics.update(
        {
            "trpo/accepted": float(res.accepted),
            "trpo/step_fraction": res.step_fraction,
            "trpo/surrogate_gain": res.surrogate_gain,
            "trpo/kl": res.kl,
            "trpo/line_search_tries": float(res.tries),
            "policy/approx_kl": res.kl if res.accepted else 0.0,
        }
    )
    return metrics
