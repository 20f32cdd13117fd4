"""Value models (critics) for PPO: a separate model with a scalar head per token, initialised from
the policy or from a reward model, or a scalar head on the policy's own trunk."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rlft.ops import position_ids_from_mask


class SeparateCritic(nn.Module):
    """AutoModelForTokenClassification with one label: a value per position. Loading a reward
    model (AutoModelForSequenceClassification) keeps its backbone and its `score` head."""

    def __init__(self, path: str, dtype: torch.dtype, trust_remote_code: bool = False):
        super().__init__()
        from transformers import AutoModelForTokenClassification

        self.model = AutoModelForTokenClassification.from_pretrained(
            path, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
        )
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = 0

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
        return out.logits[..., 0]


class TrunkHeadCritic(nn.Module):
    """A linear value head on the policy's decoder (shared trunk): only the head is this module's
    own parameter; value-loss gradients also flow into the shared trunk."""

    def __init__(self, policy: Any):
        super().__init__()
        object.__setattr__(self, "trunk", policy.get_decoder())  # not registered: the policy owns it
        hidden = policy.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=next(policy.parameters()).dtype)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
        return self.head(out.last_hidden_state)[..., 0]


def build_critic(
    kind: str, init_from: str, policy: Any, policy_path: str, dtype: str, trust_remote_code: bool = False
) -> nn.Module:
    if kind == "head":
        if init_from:
            raise ValueError("algo.value.init_from applies to a separate critic, not kind=head")
        return TrunkHeadCritic(policy)
    if kind == "separate":
        return SeparateCritic(init_from or policy_path, getattr(torch, dtype), trust_remote_code)
    raise ValueError(f"unknown value model kind 'algo.value.kind={kind}' (separate, head)")


def response_values(
    critic: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_len: int
) -> Tensor:
    """V_t [B, T]: the value of the state before response token t, read at the position whose
    logits predict that token (the last prompt token, then response tokens 0 .. T-2)."""
    values = critic(input_ids, attention_mask)
    return values[:, -response_len - 1 : -1].float()


@torch.no_grad()
def rollout_values(critic: nn.Module, rollouts: Any, microbatch_size: int) -> Tensor:
    was_training = critic.training
    critic.eval()
    t = rollouts.response_mask.shape[1]
    try:
        parts = [
            response_values(
                critic,
                rollouts.input_ids[i : i + microbatch_size],
                rollouts.attention_mask[i : i + microbatch_size],
                t,
            )
            for i in range(0, rollouts.size, microbatch_size)
        ]
    finally:
        critic.train(was_training)
    return torch.cat(parts)
