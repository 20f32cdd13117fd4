"""Pure functions over tensors: advantages, policy losses, KL estimators, loss aggregation.

Each function cites the equation it implements. Imports nothing else from the package except ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlft.ops import masked_mean


def flat_groups(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Which groups carry no signal: (flat [G] bool, True where every score of the group is equal,
    max == min; inverse [B], each row's group index 0..G-1 in sorted group-id order). A flat group
    gets advantage 0, dynamic sampling drops it, `rollout/zero_std_groups_frac` counts it."""
    scores = scores.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    zeros = torch.zeros(int(inverse.max()) + 1 if inverse.numel() else 0, device=scores.device)
    hi = zeros.scatter_reduce(0, inverse, scores, "amax", include_self=False)
    lo = zeros.scatter_reduce(0, inverse, scores, "amin", include_self=False)
    return hi == lo, inverse


def group_normalized(scores: Tensor, group_ids: Tensor, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO outcome advantage (Shao et al. 2024, DeepSeekMath eq. 4 context, sec. 4.1.2):
    A_i = (r_i - mean(r_group)) / (std(r_group) + eps).

    scores [B], group_ids [B] -> advantages [B]. ``scale``: "group" divides by the group's std,
    "batch" by the std of the whole batch (REINFORCE++-style), "none" only centres (Dr. GRPO).
    std is the unbiased sample std; a group of one, or of equal scores, gets advantage 0.
    """
    scores = scores.float()
    flat_group, inverse = flat_groups(scores, group_ids)
    zeros = torch.zeros(len(flat_group), device=scores.device)
    count = zeros.index_add(0, inverse, torch.ones_like(scores))
    mean = zeros.index_add(0, inverse, scores) / count
    centred = scores - mean[inverse]
    # equal scores give exactly 0 (float rounding of the mean must not leak a tiny advantage)
    flat = flat_group[inverse]
    if scale == "none":
        return torch.where(flat, 0.0, centred)
    if scale == "group":
        sq = zeros.index_add(0, inverse, centred**2)
        std = (sq / (count - 1).clamp(min=1)).sqrt()[inverse]
    elif scale == "batch":
        std = scores.std() if scores.numel() > 1 else torch.zeros((), device=scores.device)
    else:
        raise ValueError(f"unknown reward scaling '{scale}' (group, batch, none)")
    return torch.where(flat, 0.0, centred / (std + eps))


def clipped_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate per token (Schulman et al. 2017, eq. 7), negated to be minimised:
    loss_t = -min(rho_t * A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_t), rho_t = exp(logp - old).

    All inputs [B, T] (mask bool) -> loss [B, T], metrics (clip fraction, mean ratio).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        clip_active = (clipped < unclipped).float()
        metrics = {
            "policy/clip_frac": masked_mean(clip_active, mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
        }
    return loss, metrics


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log pi(x) - log pi_ref(x): unbiased, high variance (Schulman 2020, "Approximating KL")."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = (log pi_ref(x) - log pi(x))^2 / 2: biased, low variance (Schulman 2020)."""
    return 0.5 * (ref_logprobs - logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = r - 1 - log r with r = pi_ref(x) / pi(x): unbiased and >= 0 (Schulman 2020; GRPO eq. 4)."""
    log_r = ref_logprobs - logprobs
    return torch.expm1(log_r) - log_r  # expm1: no cancellation for small log r


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def aggregation_weights(mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """Per-token weights w such that the batch loss is sum(loss * w).

    mask [B, T] -> weights [B, T]. Modes (exactly what GRPO, DAPO and Dr. GRPO disagree on):
    - token_mean: 1 / (tokens in the batch)                       (DAPO eq. 8)
    - seq_mean:   1 / (B * tokens in sequence i)                  (GRPO eq. 3)
    - constant:   1 / (B * max_len), max_len defaults to T        (Dr. GRPO, eq. in sec. 3.1)
    Computed once over a whole minibatch, then sliced per microbatch, so gradient accumulation
    equals one big batch exactly.
    """
    m = mask.float()
    n_seqs = mask.shape[0]
    if mode == "token_mean":
        return m / m.sum().clamp(min=1)
    if mode == "seq_mean":
        return m / (m.sum(-1, keepdim=True).clamp(min=1) * n_seqs)
    if mode == "constant":
        length = max_len if max_len is not None else mask.shape[1]
        return m / (n_seqs * length)
    raise ValueError(f"unknown loss aggregation '{mode}' (token_mean, seq_mean, constant)")


def aggregate(loss: Tensor, mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """Scalar batch loss from per-token losses [B, T]; see `aggregation_weights`."""
    return (loss * aggregation_weights(mask, mode, max_len)).sum()


def rloo_advantages(scores: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO leave-one-out baseline (Ahmadian et al. 2024, eq. 5; Kool et al. 2019):
    A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean(r_group)). Groups of one get 0."""
    scores = scores.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    zeros = torch.zeros(int(inverse.max()) + 1, device=scores.device)
    count = zeros.index_add(0, inverse, torch.ones_like(scores))
    total = zeros.index_add(0, inverse, scores)
    n = count[inverse]
    others_mean = (total[inverse] - scores) / (n - 1).clamp(min=1)
    return torch.where(n > 1, scores - others_mean, torch.zeros_like(scores))


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries of the whole batch (PPO advantage whitening;
    REINFORCE++ global normalisation, Hu 2025 eq. 9). Masked-out entries come back as 0."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask, out, torch.zeros_like(out))


def token_level_rewards(
    scores: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0
) -> Tensor:
    """Per-token rewards of RLHF-style PPO (Ziegler et al. 2019 eq. 2; Ouyang et al. 2022 eq. 2):
    r_t = -kl_coef * KL_t on every response token, plus the sequence score on its last token.

    scores [B], mask [B, T] (bool, contiguous from t=0), kl [B, T] or None -> [B, T]."""
    rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl.float()
    last = (mask.long().sum(-1) - 1).clamp(min=0)
    rewards[torch.arange(mask.shape[0]), last] += scores.float()
    return torch.where(mask, rewards, torch.zeros_like(rewards))


def gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16):
    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1},
    with V = 0 past the last response token; returns R_t = A_t + V_t (the value targets).

    All [B, T]; masked-out positions get 0. -> (advantages, returns)."""
    m = mask.float()
    values = values.float() * m
    rewards = token_rewards.float() * m
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros(rewards.shape[0], device=rewards.device)
    next_value = torch.zeros_like(next_adv)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        advantages[:, t] = adv_t * m[:, t]
        # positions after the end of a sequence carry nothing backwards
        next_adv = adv_t * m[:, t]
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def discounted_returns(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """R_t = sum_{s >= t} gamma^(s-t) r_s (REINFORCE++, Hu 2025 eq. 7): GAE with V = 0, lam = 1."""
    returns, _ = gae(token_rewards, torch.zeros_like(token_rewards, dtype=torch.float32), mask, gamma, 1.0)
    return returns


def sequence_clipped_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025, eq. 5-7): one length-normalised ratio per sequence,
    s_i = exp(mean_t (logp - old)), loss_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i),
    written on every token of the sequence (aggregate with seq_mean). advantages [B, T] (constant
    along T) -> loss [B, T], metrics."""
    log_ratio = masked_mean(logprobs - old_logprobs, mask, dim=-1)  # [B]
    ratio = torch.exp(log_ratio)[:, None].expand_as(logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        metrics = {
            "policy/clip_frac": masked_mean((clipped < unclipped).float(), mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
        }
    return loss, metrics


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float) -> Tensor:
    """PPO value loss with clipping (Schulman et al. 2017 baselines; Ouyang et al. 2022):
    0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2), per token [B, T]."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
