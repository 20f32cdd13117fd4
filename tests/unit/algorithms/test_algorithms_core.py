"""rlft.algorithms.core: advantages, clipped surrogate, KL estimators, loss aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.core import (
    aggregate,
    aggregation_weights,
    clipped_policy_loss,
    flat_groups,
    group_normalized,
    kl_k1,
    kl_k2,
    kl_k3,
)

# ---------------------------------------------------------------- group_normalized


def test_flat_groups_by_hand():
    # group ids 7, 3, 7, 3, 9 -> sorted 3, 7, 9 = indices 0, 1, 2; scores per group:
    # 3: (1, 1) flat; 7: (0.5, 2) not flat; 9: (4) a group of one is flat
    flat, inverse = flat_groups(torch.tensor([0.5, 1.0, 2.0, 1.0, 4.0]), torch.tensor([7, 3, 7, 3, 9]))
    assert flat.tolist() == [True, False, True] and inverse.tolist() == [1, 0, 1, 0, 2]


SCORES = torch.tensor([0.0, 1.0, 2.0, 0.0, 2.0, 4.0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_group_scale_uses_unbiased_group_std():
    adv = group_normalized(SCORES, GROUPS, "group", eps=0.0)
    # group 0: [0,1,2], mean 1, centred [-1,0,1], unbiased var (1+0+1)/(3-1) = 1, std 1 -> [-1,0,1]
    # group 1: [0,2,4], mean 2, centred [-2,0,2], unbiased var (4+0+4)/2 = 4, std 2 -> [-1,0,1]
    # (a biased std would give sqrt(2/3)=0.8165 and +-1.2247 instead)
    assert torch.allclose(adv, torch.tensor([-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]), atol=1e-6)


def test_group_scale_adds_eps_to_std():
    adv = group_normalized(SCORES, GROUPS, "group", eps=0.5)
    # std 1 and 2 from above: [-1/1.5, 0, 1/1.5, -2/2.5, 0, 2/2.5]
    expected = torch.tensor([-1 / 1.5, 0.0, 1 / 1.5, -0.8, 0.0, 0.8])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_batch_scale_divides_group_centred_by_batch_std():
    adv = group_normalized(SCORES, GROUPS, "batch", eps=0.0)
    # centred by group means: [-1,0,1,-2,0,2]
    # batch mean 9/6 = 1.5; deviations [-1.5,-.5,.5,-1.5,.5,2.5]; squares 2.25+.25+.25+2.25+.25+6.25 = 11.5
    # unbiased var 11.5/5 = 2.3; std sqrt(2.3) = 1.5165750
    s = math.sqrt(2.3)
    expected = torch.tensor([-1 / s, 0.0, 1 / s, -2 / s, 0.0, 2 / s])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_none_scale_only_centres():
    adv = group_normalized(SCORES, GROUPS, "none")
    # group means 1 and 2: [0-1, 1-1, 2-1, 0-2, 2-2, 4-2]
    assert torch.equal(adv, torch.tensor([-1.0, 0.0, 1.0, -2.0, 0.0, 2.0]))


def test_group_of_one_gets_zero_and_other_groups_unaffected():
    adv = group_normalized(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([5, 5, 2]), "group", eps=0.0)
    # group 5: [1,3] mean 2, centred [-1,1], unbiased var (1+1)/1 = 2, std sqrt 2 -> [-1/sqrt2, 1/sqrt2]
    # group 2: [7] alone: centred 7 - 7 = 0, checked with the default eps below
    r = 1 / math.sqrt(2)
    assert torch.allclose(adv[:2], torch.tensor([-r, r]), atol=1e-6)
    single = group_normalized(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([5, 5, 2]), "group")
    assert single[2].item() == 0.0  # 7 - 7 = 0 exactly; 0 / (0 + 1e-4) = 0


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_all_equal_integer_group_is_exactly_zero(scale):
    adv = group_normalized(torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 1, 1]), scale)
    # group 0 = [1,1,1]: mean 3/3 = 1 exactly, centred [0,0,0] -> 0 whatever the std
    assert torch.equal(adv[:3], torch.zeros(3))
    assert torch.isfinite(adv).all()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_all_equal_fractional_group_is_exactly_zero(scale):
    # [0.9, 0.9, 0.9]: every score equals the mean, so A = 0 / (std + eps) = 0 exactly
    adv = group_normalized(torch.full((3,), 0.9), torch.zeros(3, dtype=torch.long), scale)
    assert torch.equal(adv, torch.zeros(3))


def test_all_equal_group_with_zero_eps_is_not_nan():
    adv = group_normalized(torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), "group", eps=0.0)
    # centred [0,0], std 0: the docstring promises advantage 0 for equal scores, never NaN
    assert torch.equal(adv, torch.zeros(2))


def test_unknown_scale_raises():
    with pytest.raises(ValueError, match="unknown reward scaling 'bogus'"):
        group_normalized(SCORES, GROUPS, "bogus")


# ---------------------------------------------------------------- clipped_policy_loss

# token:  0 inside range | 1 above, A>0 | 2 below, A<0 | 3 above, A<0 | 4 below, A>0 | 5 masked
RATIOS = torch.tensor([[1.1, 1.5, 0.5, 1.5, 0.5, 2.0]])
ADV = torch.tensor([[2.0, 1.0, -1.0, -1.0, 1.0, 1.0]])
MASK = torch.tensor([[True, True, True, True, True, False]])


def _loss(eps_low=0.2, eps_high=0.2):
    old = torch.zeros_like(RATIOS)
    logp = torch.log(RATIOS).requires_grad_(True)
    loss, metrics = clipped_policy_loss(logp, old, ADV, MASK, eps_low, eps_high)
    return logp, loss, metrics


def test_clipped_loss_values():
    _, loss, _ = _loss()
    # 0: min(1.1*2, clip(1.1)*2) = 2.2                 -> -2.2
    # 1: min(1.5*1, 1.2*1) = 1.2 (clipped above)        -> -1.2
    # 2: min(0.5*-1, 0.8*-1) = min(-0.5,-0.8) = -0.8    -> 0.8 (clipped below)
    # 3: min(1.5*-1, 1.2*-1) = min(-1.5,-1.2) = -1.5    -> 1.5 (not clipped: pessimistic side)
    # 4: min(0.5*1, 0.8*1) = 0.5                        -> -0.5
    # 5: min(2*1, 1.2*1) = 1.2                          -> -1.2 (masking happens in aggregation)
    expected = torch.tensor([[-2.2, -1.2, 0.8, 1.5, -0.5, -1.2]])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_clip_frac_and_ratio_mean_count_only_masked_tokens():
    _, _, m = _loss()
    # clip active on tokens 1 and 2 of the 5 unmasked ones -> 2/5 = 0.4 (token 5 is clipped but masked)
    assert m["policy/clip_frac"].item() == pytest.approx(0.4)
    # ratio mean over unmasked: (1.1+1.5+0.5+1.5+0.5)/5 = 5.1/5 = 1.02
    assert m["policy/ratio_mean"].item() == pytest.approx(1.02, abs=1e-6)


def test_clipped_tokens_get_zero_gradient():
    logp, loss, _ = _loss()
    loss.sum().backward()
    # d(-rho*A)/d logp = -A*rho where unclipped is the min; 0 where the clipped (constant) term wins
    # 0: -2*1.1 = -2.2 | 1: 0 | 2: 0 | 3: -(-1)*1.5 = 1.5 | 4: -1*0.5 = -0.5 | 5: 0 (clipped)
    expected = torch.tensor([[-2.2, 0.0, 0.0, 1.5, -0.5, 0.0]])
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_asymmetric_clip_range():
    _, loss, _ = _loss(eps_low=0.2, eps_high=0.28)
    # token 1: ratio 1.5, A=1 -> clip at 1 + 0.28 = 1.28 -> loss -1.28; token 2 still clips at 0.8
    assert loss[0, 1].item() == pytest.approx(-1.28)
    assert loss[0, 2].item() == pytest.approx(0.8)


def test_masked_tokens_get_zero_gradient_after_aggregation():
    logp, loss, _ = _loss()
    aggregate(loss, MASK, "token_mean").backward()
    # token_mean weight 1/5 on the 5 unmasked tokens, 0 on the masked one:
    # grads = [-2.2, 0, 0, 1.5, -0.5] / 5 = [-0.44, 0, 0, 0.3, -0.1], masked token exactly 0
    assert torch.allclose(logp.grad, torch.tensor([[-0.44, 0.0, 0.0, 0.3, -0.1, 0.0]]), atol=1e-6)
    assert logp.grad[0, 5].item() == 0.0


# ---------------------------------------------------------------- KL estimators

LOGP = torch.tensor([math.log(0.5)])
REF = torch.tensor([math.log(0.25)])


def test_kl_k1():
    # log 0.5 - log 0.25 = log 2 = 0.693147
    assert kl_k1(LOGP, REF).item() == pytest.approx(0.693147, abs=1e-6)


def test_kl_k2():
    # 0.5 * (log 0.25 - log 0.5)^2 = 0.5 * (log 0.5)^2 = 0.5 * 0.480453 = 0.240227
    assert kl_k2(LOGP, REF).item() == pytest.approx(0.240227, abs=1e-6)


def test_kl_k3():
    # r = 0.25/0.5 = 0.5; r - 1 - log r = 0.5 - 1 + 0.693147 = 0.193147
    assert kl_k3(LOGP, REF).item() == pytest.approx(0.193147, abs=1e-6)


def test_kl_estimators_zero_when_equal():
    x = torch.tensor([math.log(0.3)])
    # identical policies: k1 = 0, k2 = 0, k3 = 1 - 1 - log 1 = 0
    for fn in (kl_k1, kl_k2, kl_k3):
        assert fn(x, x).item() == 0.0


# ---------------------------------------------------------------- aggregation

RAGGED = torch.tensor([[True, True, True], [True, False, False]])
TOKEN_LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])


def test_token_mean_weights():
    w = aggregation_weights(RAGGED, "token_mean")
    # 4 tokens in the batch -> 1/4 on each real token
    assert torch.allclose(w, torch.tensor([[0.25, 0.25, 0.25], [0.25, 0.0, 0.0]]))
    # (1+2+3+4)/4 = 2.5
    assert aggregate(TOKEN_LOSS, RAGGED, "token_mean").item() == pytest.approx(2.5)


def test_seq_mean_weights():
    w = aggregation_weights(RAGGED, "seq_mean")
    # row 0: 1/(3 tokens * 2 seqs) = 1/6; row 1: 1/(1 * 2) = 1/2
    assert torch.allclose(w, torch.tensor([[1 / 6, 1 / 6, 1 / 6], [0.5, 0.0, 0.0]]))
    # mean of per-seq means: ((1+2+3)/3 + 4/1)/2 = (2 + 4)/2 = 3
    assert aggregate(TOKEN_LOSS, RAGGED, "seq_mean").item() == pytest.approx(3.0)


def test_constant_weights_default_and_explicit_max_len():
    w = aggregation_weights(RAGGED, "constant")
    # 1/(B*T) = 1/(2*3) = 1/6 on every real token
    assert torch.allclose(w, torch.tensor([[1 / 6, 1 / 6, 1 / 6], [1 / 6, 0.0, 0.0]]))
    # (1+2+3+4)/6 = 10/6
    assert aggregate(TOKEN_LOSS, RAGGED, "constant").item() == pytest.approx(10 / 6)
    # max_len=5: (1+2+3+4)/(2*5) = 1.0
    assert aggregate(TOKEN_LOSS, RAGGED, "constant", max_len=5).item() == pytest.approx(1.0)


def test_all_masked_batch_gives_zero_not_nan():
    empty = torch.zeros(2, 3, dtype=torch.bool)
    for mode in ("token_mean", "seq_mean", "constant"):
        # denominators are clamped to >= 1, numerators are 0 -> weights 0
        assert torch.equal(aggregation_weights(empty, mode), torch.zeros(2, 3))


def test_unknown_aggregation_raises():
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregation_weights(RAGGED, "sum")
