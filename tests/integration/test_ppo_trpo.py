"""TRPO and PPO on the tiny model with a hand-made batch: the Fisher-vector product is the KL's
Hessian, a TRPO step stays in its trust region and improves the surrogate (or changes nothing),
and PPO's value loss falls over epochs."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from rlft.algorithms import get_algorithm
from rlft.algorithms.core import kl_k3
from rlft.batch import ScoredBatch
from rlft.config.rl import AlgoConfig, TRPOConfig, ValueConfig
from rlft.data.prompts import PromptExample
from rlft.models.critic import TrunkHeadCritic, response_values, rollout_values
from rlft.models.logprobs import response_logits, rollout_logprobs
from rlft.ops import masked_mean, position_ids_from_mask
from rlft.rl import trpo as rl_trpo
from rlft.rl.trpo import _fisher_vector_product, trpo_update
from rlft.rl.update import UpdatePlan, minibatch_step, update_policy
from rlft.rollout.assemble import assemble
from rlft.rollout.base import Generations
from rlft.runtime.guard import NonFiniteGuard

PROMPTS = ["What is 2 + 3?", "Hi", "What is 10 * 12?", "7-1?"]
RESPONSES = ["5", "3", "12", "66"]  # + EOS on the first three: lengths 2, 2, 3, 2 (9 tokens), T = 3
ADV = [1.0, -1.0, 0.5, -0.5]


def _batch(tok, adv=ADV) -> ScoredBatch:
    examples = [
        PromptExample(text=p, ids=tok(p, add_special_tokens=False)["input_ids"], row={}) for p in PROMPTS
    ]
    eos = [True, True, True, False]
    resp = [
        tok(r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
        for r, e in zip(RESPONSES, eos, strict=True)
    ]
    rollouts = assemble(examples, Generations(resp, eos), torch.tensor([0, 0, 1, 1]), tok)
    mask = rollouts.response_mask
    assert mask.sum(-1).tolist() == [2, 2, 3, 2]
    return ScoredBatch(
        rollouts, torch.zeros(4), advantages=torch.tensor(adv)[:, None].expand_as(mask).float()
    )


@torch.no_grad()
def _full_logp(model, batch) -> torch.Tensor:
    """float64 log-softmax over the vocabulary [B, T, V] at the response positions."""
    r = batch.rollouts
    logits = response_logits(model.eval(), r.input_ids, r.attention_mask, r.response_mask.shape[1])
    return torch.log_softmax(logits.double(), -1)


def _full_kl(old_full, new_full, mask) -> float:
    """mean over response tokens of KL(old || new) = sum_v p_old (log p_old - log p_new), float64."""
    return float(masked_mean((old_full.exp() * (old_full - new_full)).sum(-1), mask))


# ---------------------------------------------------------------- Fisher-vector product


@pytest.mark.parametrize("rows", [[0, 1, 2, 3], [0, 2]])
def test_fisher_vector_product_is_the_hessian_of_the_kl(tiny_model, tiny_tok, rows):
    batch = _batch(tiny_tok)
    r = batch.rollouts
    t = r.response_mask.shape[1]
    name = "model.layers.0.input_layernorm.weight"  # 64 weights feeding every later layer
    tiny_model.requires_grad_(False)
    w0 = dict(tiny_model.named_parameters())[name].requires_grad_(True)
    idx = torch.tensor(rows)
    ids, att, mask = r.input_ids[idx], r.attention_mask[idx], r.response_mask[idx]

    def logp_at(w):
        out = functional_call(
            tiny_model,
            {name: w},
            (),
            {
                "input_ids": ids,
                "attention_mask": att,
                "position_ids": position_ids_from_mask(att),
                "logits_to_keep": t + 1,
                "use_cache": False,
            },
        )
        return torch.log_softmax(out.logits[:, :-1].float(), -1)

    old = logp_at(w0.detach()).detach()

    def mean_kl(w):  # mean over the rows' response tokens of KL(old || new), full vocabulary
        return masked_mean((old.exp() * (old - logp_at(w))).sum(-1), mask)

    # the math SDPA kernel has a double backward (the fused CPU kernels have none)
    with sdpa_kernel(SDPBackend.MATH):
        hessian = torch.autograd.functional.hessian(mean_kl, w0.detach())  # [64, 64], explicit
    v = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(0))
    # micro=1: one row per chunk, so the token_mean weights must be sliced per chunk correctly
    fvp = _fisher_vector_product(tiny_model, [w0], batch, idx, 1, 0.0)
    expected = hessian @ v
    assert expected.norm() > 0
    assert torch.allclose(fvp(v), expected, rtol=1e-3, atol=1e-6 * float(expected.abs().max()))
    damped = _fisher_vector_product(tiny_model, [w0], batch, idx, 2, 0.1)
    assert torch.allclose(damped(v), expected + 0.1 * v, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------- a TRPO step


def _trpo(model, tok, max_kl):
    batch = _batch(tok)
    batch = batch.with_(old_logprobs=rollout_logprobs(model, batch.rollouts, 4))
    algo = get_algorithm("trpo")
    params = algo.resolve(AlgoConfig(name="trpo", trpo=TRPOConfig(max_kl=max_kl)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    old_full = _full_logp(model, batch)
    plan = UpdatePlan(minibatch_size=batch.rollouts.size, microbatch_size=2, max_len=8)
    metrics = trpo_update(model, algo, batch, params, plan, NonFiniteGuard(3))
    return batch, before, old_full, metrics


def _surrogate(model, batch) -> float:
    """S = sum_t w_t exp(logp - old) A_t with token_mean weights (1/9 on each of the 9 tokens)."""
    new = rollout_logprobs(model, batch.rollouts, 4)
    mask = batch.rollouts.response_mask
    return float((torch.exp(new - batch.old_logprobs) * batch.advantages)[mask].sum() / 9)


def test_trpo_step_improves_the_surrogate_inside_the_trust_region(tiny_model, tiny_tok):
    batch, before, old_full, m = _trpo(tiny_model, tiny_tok, max_kl=0.01)
    # at the old parameters the ratio is 1: S = (2*1 + 2*(-1) + 3*0.5 + 2*(-0.5))/9 = 0.5/9 = 0.055556
    assert m["loss/policy"] == pytest.approx(-0.5 / 9, abs=1e-6)
    assert m["trpo/accepted"] == 1.0  # a descent direction exists and the region is not tiny
    gain = _surrogate(tiny_model, batch) - 0.5 / 9
    assert gain > 0 and gain == pytest.approx(m["trpo/surrogate_gain"], rel=1e-3)
    new = rollout_logprobs(tiny_model, batch.rollouts, 4)
    mask = batch.rollouts.response_mask
    k3 = float(masked_mean(kl_k3(batch.old_logprobs.double(), new.double()), mask))
    assert k3 == pytest.approx(m["trpo/kl"], rel=1e-3) and k3 <= 0.01
    assert m["policy/approx_kl"] == m["trpo/kl"]  # the accepted step's KL(old || new)
    assert _full_kl(old_full, _full_logp(tiny_model, batch), mask) <= 0.01
    # the accepted fraction is one of 1, 1/2, 1/4, ... and matches the number of tries
    assert m["trpo/step_fraction"] == 0.5 ** (m["trpo/line_search_tries"] - 1)
    assert any(not torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


@pytest.mark.parametrize("max_kl", [1e-6, 1e-8])
def test_trpo_tiny_trust_region_is_respected_or_nothing_moves(tiny_model, tiny_tok, max_kl):
    batch, before, old_full, m = _trpo(tiny_model, tiny_tok, max_kl)
    after = tiny_model.state_dict()
    if m["trpo/accepted"] == 0.0:
        assert all(torch.equal(before[k], after[k]) for k in before)
    else:
        new = rollout_logprobs(tiny_model, batch.rollouts, 4)
        mask = batch.rollouts.response_mask
        # the line search's own measure (k3 on the batch's tokens), computed in float64
        assert float(masked_mean(kl_k3(batch.old_logprobs.double(), new.double()), mask)) <= max_kl
        assert _full_kl(old_full, _full_logp(tiny_model, batch), mask) <= max_kl
        assert _surrogate(tiny_model, batch) > 0.5 / 9


def test_trpo_rejected_step_restores_parameters_bitwise(tiny_model, tiny_tok, monkeypatch):
    calls = []

    def kl_always_too_big(*args):  # every fraction then breaks the trust region
        calls.append(1)
        return 1.0

    monkeypatch.setattr(rl_trpo, "_kl_old_new", kl_always_too_big)
    _, before, _, m = _trpo(tiny_model, tiny_tok, max_kl=0.01)
    # max_backtracks = 10 tries (fractions 1 .. 1/512), all rejected, then restored by evaluate(0.0)
    assert len(calls) == 10 and m["trpo/line_search_tries"] == 10.0
    assert (m["trpo/accepted"], m["trpo/step_fraction"], m["policy/approx_kl"]) == (0.0, 0.0, 0.0)
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- PPO value loss


def _value_mse(critic, batch, returns) -> float:
    r = batch.rollouts
    with torch.no_grad():
        v = response_values(critic, r.input_ids, r.attention_mask, r.response_mask.shape[1])
    return float(0.5 * masked_mean((v - returns) ** 2, r.response_mask))


def test_ppo_value_loss_falls_over_epochs(tiny_model, tiny_tok):
    torch.manual_seed(0)
    batch = _batch(tiny_tok, adv=[0.0, 0.0, 0.0, 0.0])  # no policy signal: only the critic learns
    critic = TrunkHeadCritic(tiny_model)
    values = rollout_values(critic, batch.rollouts, 4)
    assert (values == 0).all()  # zero-initialised head
    returns = torch.where(batch.rollouts.response_mask, 1.0, 0.0)
    batch = batch.with_(old_logprobs=rollout_logprobs(tiny_model, batch.rollouts, 4))
    batch = batch.with_(extras={"values": values, "returns": returns})
    algo = get_algorithm("ppo")
    # clip 10: the clipped branch never binds here, so the loss is the plain 0.5 (V - R)^2
    params = algo.resolve(AlgoConfig(name="ppo", epochs=4, value=ValueConfig(clip=10.0, coef=0.5)))
    opt = torch.optim.Adam([*tiny_model.parameters(), *critic.parameters()], lr=1e-2)
    guard = NonFiniteGuard(3)
    plan = UpdatePlan(minibatch_size=4, microbatch_size=4, max_len=8)
    first = minibatch_step(tiny_model, opt, algo, batch, params, plan, guard, critic)
    # V = 0, R = 1 on every response token: 0.5 * (0 - 1)^2 = 0.5; policy part 0 (A = 0, ratio 1)
    assert first["loss/value"] == pytest.approx(0.5, abs=1e-6)
    # the policy part alone: A = 0 and ratio 1 give -min(1 * 0, clip(1) * 0) = 0 on every token
    assert first["loss/policy"] == 0.0
    losses = [_value_mse(critic, batch, returns)]
    for _ in range(3):
        update_policy(tiny_model, opt, algo, batch, params, plan, guard, critic)
        losses.append(_value_mse(critic, batch, returns))
    assert losses[0] < 0.5  # the first step already moved V towards R
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.25 * 0.5
