"""Distillation losses on hand-computed distributions (V = 2 or 3): forward / reverse KL, the
generalized JSD and its endpoints, temperature scaling, masks, and the sampled-token estimator."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.distill import (
    forward_kl,
    full_vocab_kl,
    generalized_jsd,
    reverse_kl,
    token_divergence,
    token_level_reverse_kl_from_samples,
)

LN3 = math.log(3.0)


def _one(*logits: float) -> torch.Tensor:
    """A single position [1, 1, V] and its mask [1, 1]."""
    return torch.tensor([[list(logits)]], dtype=torch.float32)


MASK1 = torch.ones(1, 1, dtype=torch.bool)
# Student logits (ln 3, 0) -> p_s = (3/4, 1/4); teacher logits (0, 0) -> p_t = (1/2, 1/2).
STUDENT = _one(LN3, 0.0)
TEACHER = _one(0.0, 0.0)


def test_forward_kl_v2_by_hand():
    # KL(p_t || p_s) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(2/3) + 1/2 ln 2
    #                = 1/2 ln(4/3) = 0.143841
    got = forward_kl(STUDENT, TEACHER, MASK1)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_reverse_kl_v2_by_hand():
    # KL(p_s || p_t) = 3/4 ln((3/4)/(1/2)) + 1/4 ln((1/4)/(1/2)) = 3/4 ln(3/2) - 1/4 ln 2 = 0.130812
    got = reverse_kl(STUDENT, TEACHER, MASK1).item()
    assert got == pytest.approx(0.75 * math.log(1.5) - 0.25 * math.log(2), abs=1e-6)


def test_kl_v3_by_hand():
    # teacher logits (ln 2, 0, 0) -> p_t = (1/2, 1/4, 1/4); student (0, 0, 0) -> p_s = (1/3, 1/3, 1/3)
    teacher, student = _one(math.log(2), 0.0, 0.0), _one(0.0, 0.0, 0.0)
    # forward: 1/2 ln((1/2)/(1/3)) + 2 * 1/4 ln((1/4)/(1/3)) = 1/2 ln(3/2) + 1/2 ln(3/4) = 1/2 ln(9/8)
    assert forward_kl(student, teacher, MASK1).item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)
    # reverse: 1/3 ln((1/3)/(1/2)) + 2 * 1/3 ln((1/3)/(1/4)) = 1/3 (ln(2/3) + 2 ln(4/3)) = 1/3 ln(32/27)
    assert reverse_kl(student, teacher, MASK1).item() == pytest.approx(math.log(32 / 27) / 3, abs=1e-6)


def test_jsd_half_by_hand_and_symmetric():
    # beta = 1/2: M = 1/2 p_t + 1/2 p_s = (5/8, 3/8)
    # KL(p_t || M) = 1/2 ln((1/2)/(5/8)) + 1/2 ln((1/2)/(3/8)) = 1/2 ln(4/5) + 1/2 ln(4/3) = 1/2 ln(16/15)
    # KL(p_s || M) = 3/4 ln((3/4)/(5/8)) + 1/4 ln((1/4)/(3/8)) = 3/4 ln(6/5) + 1/4 ln(2/3)
    # JSD = 1/2 (1/2 ln(16/15)) + 1/2 (3/4 ln(6/5) + 1/4 ln(2/3)) = 0.016135 + 0.017687 = 0.033822
    want = 0.25 * math.log(16 / 15) + 0.5 * (0.75 * math.log(1.2) + 0.25 * math.log(2 / 3))
    assert generalized_jsd(STUDENT, TEACHER, MASK1, beta=0.5).item() == pytest.approx(want, abs=1e-6)
    # symmetric at beta = 1/2: swapping student and teacher changes nothing (here and on random logits)
    assert generalized_jsd(TEACHER, STUDENT, MASK1, beta=0.5).item() == pytest.approx(want, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    mask = torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(generalized_jsd(a, b, mask, 0.5), generalized_jsd(b, a, mask, 0.5))


def test_jsd_endpoints_are_forward_and_reverse_kl():
    # beta -> 0: M -> p_s and JSD ~ beta KL(p_t || p_s) (forward); beta -> 1: JSD ~ (1 - beta) KL(p_s || p_t)
    fwd, rev = forward_kl(STUDENT, TEACHER, MASK1), reverse_kl(STUDENT, TEACHER, MASK1)
    assert torch.equal(generalized_jsd(STUDENT, TEACHER, MASK1, beta=0.0), fwd)
    assert torch.equal(generalized_jsd(STUDENT, TEACHER, MASK1, beta=1.0), rev)
    eps = 1e-3
    near0 = generalized_jsd(STUDENT, TEACHER, MASK1, beta=eps) / eps
    near1 = generalized_jsd(STUDENT, TEACHER, MASK1, beta=1 - eps) / eps
    assert near0.item() == pytest.approx(fwd.item(), rel=1e-2)
    assert near1.item() == pytest.approx(rev.item(), rel=1e-2)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(STUDENT, TEACHER, MASK1, beta=1.5)


def test_jsd_half_is_at_most_ln2():
    # nearly disjoint distributions (1, 0) vs (0, 1): M = (1/2, 1/2), JSD = 1/2 ln 2 + 1/2 ln 2 = ln 2
    got = generalized_jsd(_one(-30.0, 30.0), _one(30.0, -30.0), MASK1, beta=0.5).item()
    assert got == pytest.approx(math.log(2), abs=1e-5)


def test_temperature_softens_and_scales_by_tau_squared():
    # tau = 2: student logits (2 ln 3, 0) / 2 = (ln 3, 0) -> p_s = (3/4, 1/4); teacher stays (1/2, 1/2).
    # loss = tau^2 * 1/2 ln(4/3) = 4 * 0.143841 = 0.575364
    student = _one(2 * LN3, 0.0).requires_grad_(True)
    loss = forward_kl(student, TEACHER, MASK1, temperature=2.0)
    assert loss.item() == pytest.approx(4 * 0.5 * math.log(4 / 3), abs=1e-6)
    # d/dz [tau^2 KL(p_t || softmax(z / tau))] = tau^2 * (p_s - p_t) / tau = 2 * (1/4, -1/4) = (1/2, -1/2)
    loss.sum().backward()
    torch.testing.assert_close(student.grad, torch.tensor([[[0.5, -0.5]]]))
    # the same factor on the other divergences
    rev = reverse_kl(_one(2 * LN3, 0.0), TEACHER, MASK1, temperature=2.0).item()
    assert rev == pytest.approx(4 * (0.75 * math.log(1.5) - 0.25 * math.log(2)), abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(STUDENT, TEACHER, MASK1, temperature=0.0)


def test_teacher_logprobs_equal_teacher_logits_at_any_temperature():
    # logits (ln 3, 0) and logprobs (ln 3/4, ln 1/4) differ by a constant, which softmax ignores
    logits, logprobs = _one(LN3, 0.0), _one(math.log(0.75), math.log(0.25))
    student = _one(0.3, -0.2)
    for tau in (1.0, 2.0, 0.5):
        for fn in (forward_kl, reverse_kl):
            torch.testing.assert_close(fn(student, logits, MASK1, tau), fn(student, logprobs, MASK1, tau))


def test_mask_zeroes_positions_and_token_mean():
    # [B=1, T=3]: positions 0 and 2 are the V=2 example (forward KL 1/2 ln(4/3)), position 1 is
    # masked and holds garbage logits; token mean over the mask = 1/2 ln(4/3)
    student = torch.tensor([[[LN3, 0.0], [50.0, -50.0], [LN3, 0.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [-50.0, 50.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True]])
    loss = forward_kl(student, teacher, mask)
    assert loss[0, 1].item() == 0.0
    assert (loss.sum() / mask.sum()).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_kl_nonnegative_and_exactly_zero_for_identical_logits():
    g = torch.Generator().manual_seed(1)
    s, t = 3 * torch.randn(4, 6, 7, generator=g), 3 * torch.randn(4, 6, 7, generator=g)
    mask = torch.rand(4, 6, generator=g) > 0.3
    for name in ("forward_kl", "reverse_kl", "jsd"):
        assert (token_divergence(name, s, t, mask) >= -1e-6).all()
    # p (log p - log p) is exactly 0 for the KLs (the integration tests rely on it); the JSD's
    # mixture log M = logsumexp(...) is log p only up to rounding
    for name in ("forward_kl", "reverse_kl"):
        assert torch.equal(token_divergence(name, s, s.clone(), mask), torch.zeros(4, 6))
    torch.testing.assert_close(
        token_divergence("jsd", s, s.clone(), mask), torch.zeros(4, 6), atol=1e-6, rtol=0
    )


def test_full_vocab_kl_by_hand_zero_log_zero_and_gradient_in_q():
    # p = (1/2, 1/2, 0), q = (1/4, 1/4, 1/2) as logprobs [2, V=3] (two equal rows):
    # KL(p || q) = 1/2 ln 2 + 1/2 ln 2 + 0 (0 log 0 = 0, even with log p = -inf) = ln 2
    logp = torch.tensor([[math.log(0.5), math.log(0.5), -math.inf]] * 2)
    logq = torch.tensor([[math.log(0.25), math.log(0.25), math.log(0.5)]] * 2, requires_grad=True)
    got = full_vocab_kl(logp, logq)
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.full((2,), math.log(2.0)))
    # d KL / d log q(v) = -p(v) with p fixed (TRPO passes logp.detach())
    got.sum().backward()
    torch.testing.assert_close(logq.grad, torch.tensor([[-0.5, -0.5, 0.0]] * 2))
    # the direction is the argument order: KL(q || p) is infinite here (q has mass where p has none)
    assert full_vocab_kl(logq.detach(), logp)[0].item() == math.inf


def test_sampled_reverse_kl_estimator():
    # per token log p_s(y) - log p_t(y): (-1) - (-1.5) = 0.5 and (-2) - (-0.5) = -1.5; masked -> 0
    s = torch.tensor([[-1.0, -2.0, -3.0]])
    t = torch.tensor([[-1.5, -0.5, -0.1]])
    got = token_level_reverse_kl_from_samples(s, t, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(got, torch.tensor([[0.5, -1.5, 0.0]]))
    # unbiased: with p_s = (3/4, 1/4), p_t = (1/2, 1/2), E_{y ~ p_s}[estimate] = the exact reverse KL
    est = token_level_reverse_kl_from_samples(
        torch.tensor([math.log(0.75), math.log(0.25)]), torch.tensor([math.log(0.5), math.log(0.5)])
    )
    expectation = 0.75 * est[0] + 0.25 * est[1]
    assert expectation.item() == pytest.approx(reverse_kl(STUDENT, TEACHER, MASK1).item(), abs=1e-6)


def test_dispatch_and_shape_errors():
    assert torch.equal(
        token_divergence("jsd", STUDENT, TEACHER, MASK1, jsd_beta=0.0), forward_kl(STUDENT, TEACHER, MASK1)
    )
    with pytest.raises(ValueError, match="unknown distillation loss 'kl'"):
        token_divergence("kl", STUDENT, TEACHER, MASK1)
    with pytest.raises(ValueError, match="vocabulary"):
        forward_kl(STUDENT, _one(0.0, 0.0, 0.0), MASK1)
