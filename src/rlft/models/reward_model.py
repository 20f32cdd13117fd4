"""Scalar reward models: a causal LM with a one-output head (`AutoModelForSequenceClassification`,
num_labels=1), the (prompt, response) text they read, and batched scoring.

The score is read at each row's last real token, found from the attention mask, so left and right
padding give the same result whatever the pad token is (HF's own pooling looks for the pad id,
which is ambiguous when pad = EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlft.data.preferences import encode_conversation
from rlft.ops import position_ids_from_mask


def load_reward_model(
    path: str, tok: Any, dtype: str = "float32", trust_remote_code: bool = False, device: Any = "cpu"
) -> Any:
    """A reward model from a saved RM, or a fresh scalar head on a causal LM checkpoint."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    )
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device)


def score_head(model: Any) -> torch.nn.Module:
    for name in ("score", "classifier", "v_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise ValueError(f"{type(model).__name__} has no scalar head (score / classifier)")


def sequence_scores(model: Any, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Reward [B] of each row of input_ids [B, L], read at its last attended position."""
    out = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask).argmax(dim=1)
    hidden = out.last_hidden_state[torch.arange(len(last)), last]
    return score_head(model)(hidden).squeeze(-1).float()


def encode_pairs(
    tok: Any, prompts: Sequence[Any], responses: Sequence[str], max_length: int, system_prompt: str | None
) -> list[list[int]]:
    """Token ids of each (prompt, response) conversation (`encode_conversation`)."""
    return [
        encode_conversation(tok, p, r, max_length, system_prompt)[0]
        for p, r in zip(prompts, responses, strict=True)
    ]


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def score_texts(
    model: Any,
    tok: Any,
    prompts: Sequence[Any],
    responses: Sequence[str],
    batch_size: int = 16,
    max_length: int = 1024,
    system_prompt: str | None = None,
) -> list[float]:
    """Scores of (prompt, response) pairs, in eval mode, in batches of similar length."""
    was_training = model.training
    model.eval()
    ids = encode_pairs(tok, prompts, responses, max_length, system_prompt)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    scores = [0.0] * len(ids)
    device = next(model.parameters()).device
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            x, mask = right_pad([ids[i] for i in chunk], tok.pad_token_id)
            values = sequence_scores(model, x.to(device), mask.to(device)).tolist()
            for i, s in zip(chunk, values, strict=True):
                scores[i] = s
    finally:
        model.train(was_training)
    return scores
