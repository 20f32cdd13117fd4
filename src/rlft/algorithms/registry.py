"""The algorithm table. The loop asks the record, never the name (docs/design.md).

An algorithm = an advantage function, a policy-loss function (its surrogate), an update rule
(optimizer steps on the gradient, or a trust-region step: `UpdateRule`, which also says whether the
surrogate needs the sampling policy's logprobs and whether it runs over several processes),
whether it needs a value model, and defaults for the config fields left unset (None).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rlft.algorithms.core import (
    KL_ESTIMATORS,
    clipped_policy_loss,
    discounted_returns,
    gae,
    group_normalized,
    kl_k3,
    masked_whiten,
    rloo_advantages,
    sequence_clipped_loss,
    token_level_rewards,
)
from rlft.algorithms.trpo import surrogate_loss
from rlft.ops import masked_mean, masked_sum

# Used where neither the config nor the algorithm sets a value.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "kl_estimator": "k3",
    "kl_in_reward": False,
    "clip_eps_low": 0.2,
    "clip_eps_high": 0.2,
    "loss_agg": "token_mean",
    "scale_rewards": "group",
    "whiten_advantages": False,
    "dynamic_sampling": False,
    "mask_truncated": False,
}


@dataclass(frozen=True)
class AdvantageInputs:
    scores: Tensor  # [B] summed reward per sequence
    group_ids: Tensor  # [B]
    mask: Tensor  # [B, T] bool
    kl: Tensor | None = None  # [B, T] per-token KL estimate to the reference (KL in reward)
    values: Tensor | None = None  # [B, T] value estimates before the update (PPO)


AdvantageFn = Callable[[AdvantageInputs, Any], "tuple[Tensor, Tensor | None]"]
PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, Any], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass(frozen=True)
class UpdateRule:
    """How an algorithm moves the policy. The RL loop maps each rule to the function that runs it
    (rlft.rl.loop.UPDATES); the record only names it, so algorithms/ stays free of models."""

    name: str
    needs_old_logprobs: bool  # the surrogate is measured against the sampling policy's logprobs
    several_processes: bool  # implemented over torchrun ranks


GRADIENT = UpdateRule("gradient", needs_old_logprobs=False, several_processes=True)
TRUST_REGION = UpdateRule("trust_region", needs_old_logprobs=True, several_processes=False)


def kl_in_loss(params: Any, has_ref: bool) -> bool:
    """The KL to the reference is a loss term (not folded into the reward, and weighted > 0)."""
    return has_ref and params.kl_coef > 0 and not params.kl_in_reward


@dataclass(frozen=True)
class Algorithm:
    name: str
    advantage_fn: AdvantageFn  # (inputs, params) -> (advantages [B,T], returns [B,T] or None)
    policy_loss_fn: PolicyLossFn  # (logprobs, old_logprobs, adv, mask, params) -> loss [B,T], metrics
    uses_value_model: bool = False
    update: UpdateRule = GRADIENT
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def uses_ref_model(self, params: Any) -> bool:
        return params.kl_coef > 0

    def needs_old_logprobs(self, params: Any, optimizer_steps: int, has_ref: bool) -> bool:
        """Whether step 4 computes the sampling policy's logprobs: the policy moves before their
        last use (several optimizer steps per RL step), the update rule measures against them, or
        a KL in the reward or an adaptive KL coefficient needs KL(old || ref). Otherwise the
        first pass's own logprobs (detached) serve as `old`."""
        kl_before_update = has_ref and (params.kl_in_reward or params.target_kl > 0)
        return optimizer_steps > 1 or self.update.needs_old_logprobs or kl_before_update

    def resolve(self, params: Any) -> Any:
        """params with every None field set from this record's defaults, then GLOBAL_DEFAULTS."""
        fill = {}
        for name, fallback in GLOBAL_DEFAULTS.items():
            if getattr(params, name) is None:
                fill[name] = self.defaults.get(name, fallback)
        return dataclasses.replace(params, **fill)

    def rows_with_gradient(self, batch: Any, params: Any) -> Tensor:
        """bool [B]: rows whose loss can have a non-zero gradient. A row with all-zero advantages
        and no KL or value term in the loss contributes exactly nothing, so the update may skip it."""
        adv = batch.advantages
        rows = (adv != 0).any(-1) if adv is not None else torch.ones_like(batch.scores, dtype=torch.bool)
        if kl_in_loss(params, batch.ref_logprobs is not None) or self.uses_value_model:
            return torch.ones_like(rows)
        return rows

    def token_loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        ref_logprobs: Tensor | None,
        advantages: Tensor,
        mask: Tensor,
        params: Any,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Per-token loss [B, T] = policy loss (+ kl_coef * KL estimate when the KL is in the loss).
        Metrics add policy/approx_kl: mean k3 estimate of KL(old || new) per token (Schulman 2020)."""
        loss, metrics = self.policy_loss_fn(logprobs, old_logprobs, advantages, mask, params)
        metrics["policy/approx_kl"] = masked_mean(kl_k3(old_logprobs, logprobs.detach()), mask)
        if kl_in_loss(params, ref_logprobs is not None):
            kl = KL_ESTIMATORS[params.kl_estimator](logprobs, ref_logprobs)
            loss = loss + params.kl_coef * kl
            metrics["policy/kl"] = masked_mean(kl.detach(), mask)
        return loss, metrics


def _scores_with_kl(x: AdvantageInputs, p: Any) -> Tensor:
    """Outcome scores, minus kl_coef * the sequence's summed KL when the KL is in the reward."""
    if x.kl is None or not p.kl_in_reward or p.kl_coef == 0:
        return x.scores
    return x.scores - p.kl_coef * masked_sum(x.kl, x.mask, dim=-1)


def _per_token(adv: Tensor, mask: Tensor) -> Tensor:
    return adv[:, None].expand_as(mask).float()


def outcome_advantages(x: AdvantageInputs, p: Any) -> tuple[Tensor, None]:
    """GRPO family: group-normalised sequence advantage on every token (scale per config)."""
    return _per_token(
        group_normalized(_scores_with_kl(x, p), x.group_ids, p.scale_rewards, p.std_eps), x.mask
    ), None


def leave_one_out_advantages(x: AdvantageInputs, p: Any) -> tuple[Tensor, None]:
    """RLOO: score minus the mean of the other samples of the prompt."""
    return _per_token(rloo_advantages(_scores_with_kl(x, p), x.group_ids), x.mask), None


def reinforce_pp_advantages(x: AdvantageInputs, p: Any) -> tuple[Tensor, None]:
    """REINFORCE++: per-token rewards (KL penalty + final score), discounted returns, then
    normalised over the whole batch (no group baseline, no critic)."""
    kl = x.kl if p.kl_in_reward else None
    returns = discounted_returns(token_level_rewards(x.scores, x.mask, kl, p.kl_coef), x.mask, p.gamma)
    return masked_whiten(returns, x.mask), None


def gae_advantages(x: AdvantageInputs, p: Any) -> tuple[Tensor, Tensor]:
    """PPO: per-token rewards, GAE over the critic's values, optional whitening; returns = targets."""
    if x.values is None:
        raise ValueError("PPO advantages need value estimates")
    kl = x.kl if p.kl_in_reward else None
    rewards = token_level_rewards(x.scores, x.mask, kl, p.kl_coef)
    adv, returns = gae(rewards, x.values, x.mask, p.gamma, p.gae_lambda)
    return (masked_whiten(adv, x.mask) if p.whiten_advantages else adv), returns


def ppo_clip_loss(logprobs: Tensor, old: Tensor, adv: Tensor, mask: Tensor, p: Any):
    return clipped_policy_loss(logprobs, old, adv, mask, p.clip_eps_low, p.clip_eps_high)


def trust_region_surrogate(logprobs: Tensor, old: Tensor, adv: Tensor, mask: Tensor, p: Any):
    return surrogate_loss(logprobs, old, adv)


def gspo_loss(logprobs: Tensor, old: Tensor, adv: Tensor, mask: Tensor, p: Any):
    return sequence_clipped_loss(logprobs, old, adv, mask, p.clip_eps_low, p.clip_eps_high)


def _table() -> dict[str, Algorithm]:
    grpo = Algorithm("grpo", outcome_advantages, ppo_clip_loss)
    return {
        "grpo": grpo,
        "dr_grpo": dataclasses.replace(
            grpo, name="dr_grpo", defaults={"scale_rewards": "none", "loss_agg": "constant"}
        ),
        "dapo": dataclasses.replace(
            grpo,
            name="dapo",
            defaults={
                "clip_eps_high": 0.28,
                "loss_agg": "token_mean",
                "dynamic_sampling": True,
                "mask_truncated": True,
            },
        ),
        "gspo": Algorithm(
            "gspo",
            outcome_advantages,
            gspo_loss,
            defaults={"clip_eps_low": 3e-4, "clip_eps_high": 4e-4, "loss_agg": "seq_mean"},
        ),
        "rloo": Algorithm(
            "rloo",
            leave_one_out_advantages,
            ppo_clip_loss,
            defaults={"kl_in_reward": True, "kl_estimator": "k1"},
        ),
        "reinforce_pp": Algorithm(
            "reinforce_pp",
            reinforce_pp_advantages,
            ppo_clip_loss,
            defaults={"kl_in_reward": True, "kl_estimator": "k1"},
        ),
        "ppo": Algorithm(
            "ppo",
            gae_advantages,
            ppo_clip_loss,
            uses_value_model=True,
            defaults={"kl_in_reward": True, "kl_estimator": "k1", "whiten_advantages": True},
        ),
        "trpo": Algorithm("trpo", outcome_advantages, trust_region_surrogate, update=TRUST_REGION),
    }


ALGORITHMS: dict[str, Algorithm] = _table()


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown algorithm 'algo.name={name}'{hint} (available: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
