"""The update phase on the tiny model: hand-computed loss, grad accumulation invariance, padding."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms import get_algorithm
from rlft.batch import ScoredBatch
from rlft.config.rl import AlgoConfig
from rlft.data.prompts import PromptExample
from rlft.models.logprobs import response_logprobs, rollout_logprobs
from rlft.rl.update import UpdatePlan, minibatch_step
from rlft.rollout.assemble import assemble
from rlft.rollout.base import Generations
from rlft.runtime.guard import NonFiniteGuard


def _params(**kw):
    """An AlgoConfig with GRPO's defaults filled in, as the loop resolves it."""
    return get_algorithm("grpo").resolve(AlgoConfig(**kw))


PROMPTS = ["What is 2 + 3?", "Hi", "What is 10 * 12?", "7-1?"]
RESPONSES = ["5", "3", "12", "66"]  # + EOS on the first three -> lengths 2, 2, 3, 2 (see below)


class GradCapture:
    """Stands in for the optimizer: step() records the accumulated grads instead of moving weights."""

    def __init__(self, model):
        self.params = dict(model.named_parameters())
        self.grads: dict[str, torch.Tensor] | None = None
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params.values():
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        self.grads = {k: p.grad.clone() for k, p in self.params.items() if p.grad is not None}


def _batch(tok, responses=RESPONSES, eos=(True, True, True, False)) -> ScoredBatch:
    examples = [
        PromptExample(text=p, ids=tok(p, add_special_tokens=False)["input_ids"], row={}) for p in PROMPTS
    ]
    resp = [
        tok(r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
        for r, e in zip(responses, eos, strict=True)
    ]
    gens = Generations(response_ids=resp, finished=list(eos))
    rollouts = assemble(examples, gens, torch.tensor([0, 0, 1, 1]), tok)
    return ScoredBatch(rollouts=rollouts, scores=torch.zeros(4))


def _with_adv(batch: ScoredBatch, per_seq: list[float]) -> ScoredBatch:
    mask = batch.rollouts.response_mask
    return batch.with_(advantages=torch.tensor(per_seq)[:, None].expand_as(mask).float())


def _step(model, batch, params, micro, max_len=8):
    # max_len plays rollout.max_new_tokens: the constant normaliser's fixed length
    opt = GradCapture(model)
    plan = UpdatePlan(minibatch_size=batch.rollouts.size, microbatch_size=micro, max_len=max_len)
    metrics = minibatch_step(model, opt, get_algorithm("grpo"), batch, params, plan, NonFiniteGuard(3))
    assert opt.steps == 1
    return opt.grads, metrics


def test_batch_layout(tiny_tok):
    r = _batch(tiny_tok).rollouts
    # char-level tokenizer: '5'+EOS = 2, '3'+EOS = 2, '12'+EOS = 3, '66' (no EOS) = 2 -> T = 3
    assert r.response_mask.sum(-1).tolist() == [2, 2, 3, 2]
    assert r.response_mask.shape == (4, 3)
    # longest prompt 'What is 10 * 12?' = 16 chars, so L = 16 + 3
    assert r.input_ids.shape == (4, 19) and r.prompt_len == 16
    assert r.truncated.tolist() == [False, False, False, True]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # advantages [1, -1, 0.5, 0] on lengths [2, 2, 3, 2] (9 tokens), ratio 1 (old = current):
        # token_mean: -(2*1 + 2*(-1) + 3*0.5 + 2*0)/9 = -1.5/9 = -0.1666667
        ("token_mean", -1.5 / 9),
        # seq_mean: -(1 + (-1) + 0.5 + 0)/4 = -0.125
        ("seq_mean", -0.125),
        # constant (max_len = max_new_tokens = 8): -(2 - 2 + 1.5 + 0)/(4*8) = -0.046875
        ("constant", -1.5 / 32),
    ],
)
def test_minibatch_loss_hand_computed(tiny_model, tiny_tok, mode, expected):
    batch = _with_adv(_batch(tiny_tok), [1.0, -1.0, 0.5, 0.0])
    _, m = _step(tiny_model, batch, _params(loss_agg=mode), micro=2)
    assert m["loss/policy"] == pytest.approx(expected, abs=1e-6)
    assert m["policy/clip_frac"] == 0.0  # ratio exactly 1 everywhere
    assert m["policy/ratio_mean"] == pytest.approx(1.0)


def test_kl_term_hand_computed(tiny_model, tiny_tok):
    batch = _with_adv(_batch(tiny_tok), [1.0, -1.0, 0.5, 0.0])
    r = batch.rollouts
    logp = rollout_logprobs(tiny_model, r, 4)
    batch = batch.with_(ref_logprobs=logp + math.log(0.5))  # pi_ref = pi / 2 on every token
    _, m = _step(tiny_model, batch, _params(kl_coef=0.1, kl_estimator="k3"), micro=4)
    # k3 with r = pi_ref/pi = 0.5: 0.5 - 1 - log 0.5 = 0.193147 on every token
    assert m["policy/kl"] == pytest.approx(0.193147, abs=1e-5)
    # token_mean weights sum to 1: -1.5/9 + 0.1 * 0.193147 = -0.1666667 + 0.0193147 = -0.1473520
    assert m["loss/policy"] == pytest.approx(-0.1473520, abs=1e-5)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean", "constant"])
def test_grad_accumulation_equals_one_big_batch(tiny_model, tiny_tok, mode):
    batch = _with_adv(_batch(tiny_tok), [1.3, -0.7, 0.4, -1.0])
    r = batch.rollouts
    logp = rollout_logprobs(tiny_model, r, 4)
    # old logprobs shifted so ratios exp(-0.5)=0.61, 1, exp(0.3)=1.35 occur: some tokens clip
    shift = torch.tensor([[-0.5, 0.0, 0.3]]).expand_as(logp)
    batch = batch.with_(old_logprobs=logp + shift, ref_logprobs=logp - 0.2)
    params = _params(kl_coef=0.05, loss_agg=mode)
    g1, m1 = _step(tiny_model, batch, params, micro=1)
    g4, m4 = _step(tiny_model, batch, params, micro=4)
    assert g1.keys() == g4.keys() and len(g1) > 0
    for k in g4:
        assert torch.allclose(g1[k], g4[k], rtol=1e-4, atol=1e-7), k
    assert m1["policy/clip_frac"] > 0  # the clipped branch really is exercised
    for key in ("loss/policy", "optim/grad_norm", "policy/clip_frac", "policy/kl", "policy/entropy"):
        assert m1[key] == pytest.approx(m4[key], rel=1e-4, abs=1e-7), key


def test_left_padding_does_not_change_logprobs(tiny_model, tiny_tok):
    batch = _batch(tiny_tok)
    r = batch.rollouts
    padded = rollout_logprobs(tiny_model, r, 4)
    # row 1 ('Hi', 2 chars) carries 16 - 2 = 14 left pads; alone it has none (its response '3'+EOS
    # is 2 of T=3, so only the last position is right padding, which a causal model never sees)
    alone_ids = r.input_ids[1:2, 14:]
    alone_mask = r.attention_mask[1:2, 14:]
    assert alone_mask.tolist() == [[1, 1, 1, 1, 0]]
    with torch.no_grad():
        alone, _ = response_logprobs(tiny_model.eval(), alone_ids, alone_mask, 3)
    m = r.response_mask[1]
    assert torch.allclose(padded[1][m], alone[0][m], atol=1e-5)


def test_constant_aggregation_ignores_padding_width(tiny_model, tiny_tok):
    batch = _with_adv(_batch(tiny_tok), [1.0, -1.0, 0.5, 0.0])
    # the same batch, except row 2 answers '123' (4 tokens with EOS), which widens T from 3 to 4
    wide = _with_adv(_batch(tiny_tok, responses=["5", "3", "123", "66"]), [1.0, -1.0, 0.5, 0.0])
    assert wide.rollouts.response_mask.shape[1] == 4  # '123' + EOS
    params = _params(loss_agg="constant")
    _, m3 = _step(tiny_model, batch, params, micro=4)
    _, m4 = _step(tiny_model, wide, params, micro=4)
    # token counts 2,2,3,2 vs 2,2,4,2: sum A*len = 2 - 2 + 1.5 = 1.5 vs 2 - 2 + 2 = 2.0
    # with one fixed constant C: -1.5/(4C) vs -2.0/(4C), ratio exactly 0.75 whatever C is;
    # with C = T per batch: -1.5/12 = -0.125 vs -2/16 = -0.125, ratio 1.0
    assert m3["loss/policy"] / m4["loss/policy"] == pytest.approx(0.75, rel=1e-5)


def test_zero_advantage_rows_are_skipped_exactly(tiny_model, tiny_tok, monkeypatch):
    # rows 1 and 3 have advantage 0 and there is no KL term: their loss -min(r*0, clip(r)*0) = 0
    # has zero gradient, so skipping their forward/backward must leave every grad unchanged, while
    # token_mean still divides by all 9 tokens: loss = -(2*1 + 3*0.5)/9 = -3.5/9
    batch = _with_adv(_batch(tiny_tok), [1.0, 0.0, 0.5, 0.0])
    algo = get_algorithm("grpo")
    assert algo.rows_with_gradient(batch, _params()).tolist() == [True, False, True, False]
    skipped, m_skip = _step(tiny_model, batch, _params(), micro=4)
    monkeypatch.setattr(type(algo), "rows_with_gradient", lambda self, b, p: torch.ones(4, dtype=torch.bool))
    full, m_full = _step(tiny_model, batch, _params(), micro=4)
    assert m_skip["perf/active_rows_frac"] == 0.5 and m_full["perf/active_rows_frac"] == 1.0
    assert m_skip["loss/policy"] == pytest.approx(-3.5 / 9, abs=1e-6)
    for k in full:
        assert torch.allclose(skipped[k], full[k], rtol=1e-5, atol=1e-8), k


def test_all_rows_zero_advantage_still_steps_with_zero_grads(tiny_model, tiny_tok):
    # a full backward of an all-zero loss gives zero (not missing) grads, and AdamW's momentum
    # would still move the weights; skipping every row must keep those semantics
    batch = _with_adv(_batch(tiny_tok), [0.0, 0.0, 0.0, 0.0])
    grads, m = _step(tiny_model, batch, _params(), micro=4)
    assert m["perf/active_rows_frac"] == 0.0 and m["optim/grad_norm"] == 0.0
    assert len(grads) == len(dict(tiny_model.named_parameters()))
    assert all(float(g.abs().max()) == 0.0 for g in grads.values())


def test_shared_prompt_forward_equals_plain_forward(tiny_model, tiny_tok):
    # give rows 0,1 one prompt and rows 2,3 another, so the shared path runs 2 distinct prompts
    # once each and repeats their KV caches for the pairs
    batch = _batch(tiny_tok)
    r = batch.rollouts
    ids = r.input_ids.clone()
    mask = r.attention_mask.clone()
    lp = ids.shape[1] - 3
    ids[1, :lp], mask[1, :lp] = ids[0, :lp], mask[0, :lp]
    ids[3, :lp], mask[3, :lp] = ids[2, :lp], mask[2, :lp]
    grads = []
    for share in (False, True):
        tiny_model.zero_grad()
        logp, _ = response_logprobs(tiny_model, ids, mask, 3, share_prompt=share)
        (logp * r.response_mask).sum().backward()
        grads.append({k: p.grad.clone() for k, p in tiny_model.named_parameters()})
        if not share:
            plain = logp.detach()
    m = r.response_mask
    assert torch.allclose(logp.detach()[m], plain[m], atol=1e-5)
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6), k


def test_gradient_checkpointing_gives_the_same_grads(tiny_model, tiny_tok):
    # recomputing activations in backward changes memory, not maths; the shared-prompt path is
    # turned off under checkpointing (HF drops the KV cache there) and must fall back cleanly
    batch = _with_adv(_batch(tiny_tok), [1.0, -1.0, 0.5, 0.0])
    plain, m_plain = _step(tiny_model, batch, _params(), micro=4)
    tiny_model.gradient_checkpointing_enable()
    tiny_model.train()
    ckpt, m_ckpt = _step(tiny_model, batch, _params(), micro=4)
    assert m_ckpt["loss/policy"] == pytest.approx(m_plain["loss/policy"], abs=1e-6)
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], rtol=1e-4, atol=1e-7), k
