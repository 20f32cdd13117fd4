"""The algorithm table. The loop asks the record, never the name (DESIGN.md "Where algorithms differ")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from rlft.algorithms.core import KL_ESTIMATORS, clipped_policy_loss, group_normalized
from rlft.ops import masked_mean


class AlgoParams(Protocol):
    """The config fields algorithms read (satisfied by rlft.schema.rl.AlgoConfig)."""

    kl_coef: float
    kl_estimator: str
    clip_eps_low: float
    clip_eps_high: float
    loss_agg: str
    scale_rewards: str
    std_eps: float
    epochs: int


AdvantageFn = Callable[[Tensor, Tensor, Tensor, AlgoParams], Tensor]
PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, AlgoParams], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass(frozen=True)
class Algorithm:
    name: str
    advantage_fn: AdvantageFn  # (scores[B], group_ids[B], response_mask[B,T], params) -> adv[B,T]
    policy_loss_fn: PolicyLossFn  # (logprobs, old_logprobs, adv, mask, params) -> loss[B,T], metrics
    uses_value_model: bool = False
    kl_in_reward: bool = False

    def uses_ref_model(self, params: AlgoParams) -> bool:
        return params.kl_coef > 0

    def rows_with_gradient(self, batch: Any, params: AlgoParams) -> Tensor:
        """bool [B]: rows whose loss can have a non-zero gradient. A row with all-zero advantages
        and no KL term in the loss contributes exactly nothing, so the update may skip it."""
        adv = batch.advantages
        rows = (adv != 0).any(-1) if adv is not None else torch.ones(batch.rollouts.size, dtype=torch.bool)
        kl_in_loss = batch.ref_logprobs is not None and params.kl_coef > 0 and not self.kl_in_reward
        if kl_in_loss or self.uses_value_model:
            return torch.ones_like(rows)
        return rows

    def token_loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        ref_logprobs: Tensor | None,
        advantages: Tensor,
        mask: Tensor,
        params: AlgoParams,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Per-token loss [B, T] = policy loss + kl_coef * KL estimate (KL in the loss)."""
        loss, metrics = self.policy_loss_fn(logprobs, old_logprobs, advantages, mask, params)
        if ref_logprobs is not None and not self.kl_in_reward and params.kl_coef > 0:
            kl = KL_ESTIMATORS[params.kl_estimator](logprobs, ref_logprobs)
            loss = loss + params.kl_coef * kl
            metrics["policy/kl"] = masked_mean(kl.detach(), mask)
        return loss, metrics


def outcome_advantages(scores: Tensor, group_ids: Tensor, mask: Tensor, p: AlgoParams) -> Tensor:
    """Group-normalised sequence advantage broadcast to every response token."""
    adv = group_normalized(scores, group_ids, p.scale_rewards, p.std_eps)
    return adv[:, None].expand_as(mask).float()


def ppo_clip_loss(logprobs: Tensor, old: Tensor, adv: Tensor, mask: Tensor, p: AlgoParams):
    return clipped_policy_loss(logprobs, old, adv, mask, p.clip_eps_low, p.clip_eps_high)


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm("grpo", outcome_advantages, ppo_clip_loss),
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        import difflib

        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown algorithm 'algo.name={name}'{hint} (available: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
