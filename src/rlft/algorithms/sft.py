"""Pure supervised loss: the next-token cross entropy of SFT on a batch's target tokens.

Shapes: logits [B, L, V] (position j predicts token j + 1), input_ids [B, L], loss_mask [B, L]
(bool, True on the tokens that are targets). Imports nothing from the package.
"""

from __future__ import annotations

import torch
from torch import Tensor


def next_token_cross_entropy_sum(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """Summed negative log-likelihood of the masked target tokens under the next-token
    distributions (the maximum-likelihood objective of causal language modelling, e.g. Radford
    et al. 2018, "Improving Language Understanding by Generative Pre-Training", eq. 1):

        sum_{b, j: loss_mask[b, j + 1]} -log softmax(logits[b, j])[input_ids[b, j + 1]],

    a scalar in float32 (the logits of the targets are cast before the log-softmax). loss_mask[:, 0]
    is never read: nothing predicts the first token. The sum, not the mean: the caller divides by
    the target count of the whole optimizer step (every microbatch, every rank)."""
    targets = loss_mask[:, 1:].bool()
    return torch.nn.functional.cross_entropy(
        logits[:, :-1][targets].float(), input_ids[:, 1:][targets], reduction="sum"
    )
