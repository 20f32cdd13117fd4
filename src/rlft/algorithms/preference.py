"""Pure preference losses: reward-model training (Bradley-Terry, Plackett-Luce, centering) and
offline preference optimisation (DPO, IPO), plus pair-level metrics.

Scores are flat over all responses of a batch; pairs index into them (`better`, `worse`).
Imports nothing else from the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def pair_tensors(
    rankings: Sequence[Sequence[int]], pairs_per_ranking: Sequence[Sequence[tuple[int, int]]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Flat (better, worse, weight) over all rankings of a batch, whose responses are laid out one
    ranking after another. Each ranking's pairs weigh 1 / its number of pairs, so every prompt
    counts once however large K is (InstructGPT, Ouyang et al. 2022, sec. 3.5, eq. 1's 1/C(K,2))."""
    better, worse, weight, offset = [], [], [], 0
    for levels, pairs in zip(rankings, pairs_per_ranking, strict=True):
        for b, w in pairs:
            better.append(offset + b)
            worse.append(offset + w)
            weight.append(1.0 / len(pairs))
        offset += len(levels)
    return torch.tensor(better, dtype=torch.long), torch.tensor(worse, dtype=torch.long), torch.tensor(weight)


def bradley_terry_nll(scores: Tensor, better: Tensor, worse: Tensor, margins: Tensor | None = None) -> Tensor:
    """Per-pair -log sigma(r_better - r_worse - margin) (Bradley & Terry 1952; InstructGPT eq. 1;
    the margin as in Llama 2, Touvron et al. 2023, eq. 2). scores [N] -> nll [M]."""
    diff = scores[better] - scores[worse]
    if margins is not None:
        diff = diff - margins
    return -F.logsigmoid(diff)


def plackett_luce_nll(scores: Tensor, levels: Sequence[int]) -> Tensor:
    """Listwise -log P(ranking) under Plackett-Luce (Plackett 1975): at each rank level the chosen
    responses compete with all not yet placed, -sum_i [s_i - logsumexp(s_j : level_j >= level_i)].
    Tied responses share one choice set (Breslow's approximation). scores [K] -> scalar."""
    lv = torch.tensor(levels, device=scores.device)
    nll = scores.new_zeros(())
    for level in sorted(set(levels)):
        chosen = lv == level
        remaining = lv >= level
        nll = nll - (scores[chosen] - torch.logsumexp(scores[remaining], dim=0)).sum()
    return nll


def centering_penalty(scores: Tensor, group_ids: Tensor) -> Tensor:
    """Mean over prompts of (mean score of the prompt's responses)^2: keeps rewards centred at 0
    per prompt (Eisenstein et al. 2023, 'Helping or Herding?', sec. 3: (r+ + r-)^2 for K=2, which
    is 4x this term, so their eta is centering_coef / 4)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n = int(inverse.max()) + 1
    zeros = scores.new_zeros(n)
    means = zeros.index_add(0, inverse, scores) / zeros.index_add(0, inverse, torch.ones_like(scores))
    return (means**2).mean()


def pair_accuracy(margins: Tensor) -> Tensor:
    """Per pair: 1 where the better response scores higher (margin > 0), 0 where lower, 1/2 for an
    exact tie. A tie is no evidence either way (e.g. a DPO policy equal to its reference at step
    1), so it counts half instead of being decided by which side float noise falls on."""
    return (margins > 0).float() + 0.5 * (margins == 0).float()


def pair_calibration_error(prob_better: Tensor, bins: int = 10) -> float:
    """Expected calibration error of the predicted P(better beats worse) over pairs. Each pair is
    counted both ways ((p, outcome 1) and (1-p, outcome 0)), so the reliability diagram is symmetric:
    ECE = sum_b (n_b / N) |mean outcome_b - mean p_b| (Guo et al. 2017, eq. 3)."""
    p = torch.cat([prob_better, 1 - prob_better]).double()
    outcome = torch.cat([torch.ones_like(prob_better), torch.zeros_like(prob_better)]).double()
    idx = (p * bins).long().clamp(max=bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += float(sel.sum()) / len(p) * abs(float(outcome[sel].mean() - p[sel].mean()))
    return ece


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    loss_type: str = "dpo",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair offline preference loss from sequence logprobs [M].

    h = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-)).
    dpo: -log sigma(beta h) (Rafailov et al. 2023, eq. 7); with label smoothing e (conservative
    DPO): -(1-e) log sigma(beta h) - e log sigma(-beta h).
    ipo: (h - 1 / (2 beta))^2 (Azar et al. 2023, eq. 17, beta = tau).
    Metrics: implicit rewards beta * log-ratio of each side, and their accuracy (ties count half:
    pair_accuracy).
    """
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    h = chosen_ratio - rejected_ratio
    if loss_type == "dpo":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss '{loss_type}' (dpo, ipo)")
    metrics = {
        "rewards/chosen": beta * chosen_ratio.detach(),
        "rewards/rejected": beta * rejected_ratio.detach(),
        "rewards/accuracy": pair_accuracy(h.detach()),
        "rewards/margin": beta * h.detach(),
    }
    return loss, metrics
