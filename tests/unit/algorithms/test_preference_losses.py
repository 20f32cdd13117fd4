"""rlft.algorithms.preference: pair layout, Bradley-Terry, Plackett-Luce, centering, pair
calibration error and DPO / IPO, every expected value worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.preference import (
    bradley_terry_nll,
    centering_penalty,
    dpo_loss,
    pair_accuracy,
    pair_calibration_error,
    pair_tensors,
    plackett_luce_nll,
)
from rlft.data.preferences import ranked_pairs

# ---------------------------------------------------------------- ranked_pairs


def test_ranked_pairs_strict_k4_is_all_six_pairs_best_first():
    # C(4,2) = 6; levels equal the indices, so every pair is (smaller index, larger index)
    assert ranked_pairs((0, 1, 2, 3)) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_ranked_pairs_orients_each_pair_better_first():
    # levels (2, 0, 1): response 1 best, then 2, then 0
    # (0,1): level 2 > 0 -> (1,0); (0,2): 2 > 1 -> (2,0); (1,2): 0 < 1 -> (1,2)
    assert ranked_pairs((2, 0, 1)) == [(1, 0), (2, 0), (1, 2)]


def test_ranked_pairs_ties_form_no_pair():
    # ranking [2, [0, 3], 1] -> levels (1, 2, 0, 1); the tied pair (0, 3) is dropped: 6 - 1 = 5
    # (0,1): 1<2 -> (0,1); (0,2): 1>0 -> (2,0); (0,3) tie; (1,2): 2>0 -> (2,1);
    # (1,3): 2>1 -> (3,1); (2,3): 0<1 -> (2,3)
    assert ranked_pairs((1, 2, 0, 1)) == [(0, 1), (2, 0), (2, 1), (3, 1), (2, 3)]
    assert ranked_pairs((0, 0, 0)) == []  # all tied: nothing to learn
    assert ranked_pairs((0, 0, 1)) == [(0, 2), (1, 2)]


# ---------------------------------------------------------------- pair_tensors


def test_pair_tensors_offsets_and_per_ranking_weights():
    levels = [(0, 1, 2), (0, 1)]
    better, worse, weight = pair_tensors(levels, [ranked_pairs(lv) for lv in levels])
    # ranking 0 (responses 0..2): pairs (0,1),(0,2),(1,2), each 1/3
    # ranking 1 starts at offset 3: its pair (0,1) -> (3,4), weight 1/1
    assert better.tolist() == [0, 0, 1, 3]
    assert worse.tolist() == [1, 2, 2, 4]
    assert torch.allclose(weight, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]))
    assert better.dtype == torch.long and worse.dtype == torch.long


def test_pair_tensors_offset_counts_responses_not_pairs():
    # ranking 0 = [[0, 1], 2]: 3 responses but only 2 pairs (0,2),(1,2) -> weights 1/2;
    # ranking 1 starts at offset 3 (its response count), not 2 (the pair count)
    levels = [(0, 0, 1), (1, 0)]
    better, worse, weight = pair_tensors(levels, [ranked_pairs(lv) for lv in levels])
    assert better.tolist() == [0, 1, 4]
    assert worse.tolist() == [2, 2, 3]
    assert torch.allclose(weight, torch.tensor([0.5, 0.5, 1.0]))


def test_pair_tensors_each_ranking_weighs_one_in_total():
    # one strict K=4 ranking (6 pairs) and one pair: weights sum to 1 per ranking -> 2 in total
    levels = [(3, 1, 0, 2), (0, 1)]
    _, _, weight = pair_tensors(levels, [ranked_pairs(lv) for lv in levels])
    assert len(weight) == 7
    assert torch.allclose(weight[:6].sum(), torch.tensor(1.0))
    assert torch.allclose(weight.sum(), torch.tensor(2.0))


def test_pair_tensors_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        pair_tensors([(0, 1), (0, 1)], [[(0, 1)]])


# ---------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_hand_values():
    scores = torch.tensor([2.0, 0.5])
    nll = bradley_terry_nll(scores, torch.tensor([0]), torch.tensor([1]))
    # -log sigmoid(2 - 0.5) = log(1 + e^-1.5) = log(1.2231302) = 0.2014133
    assert torch.allclose(nll, torch.tensor([0.2014133]), atol=1e-6)
    reversed_ = bradley_terry_nll(scores, torch.tensor([1]), torch.tensor([0]))
    # -log sigmoid(-1.5) = 1.5 + log(1 + e^-1.5) = 1.7014133
    assert torch.allclose(reversed_, torch.tensor([1.7014133]), atol=1e-6)


def test_bradley_terry_margin_is_subtracted_inside_the_sigmoid():
    scores = torch.tensor([2.0, 0.5])
    nll = bradley_terry_nll(scores, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]))
    # -log sigmoid(1.5 - 0.5) = log(1 + e^-1) = log(1.3678794) = 0.3132617
    assert torch.allclose(nll, torch.tensor([0.3132617]), atol=1e-6)
    # a zero margin changes nothing
    zero = bradley_terry_nll(scores, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.0]))
    assert torch.allclose(zero, torch.tensor([0.2014133]), atol=1e-6)


def test_bradley_terry_equal_scores_is_log2_per_pair():
    nll = bradley_terry_nll(torch.tensor([0.3, 0.3, 0.3]), torch.tensor([0, 1]), torch.tensor([1, 2]))
    # diff 0: -log sigmoid(0) = log 2 = 0.6931472
    assert torch.allclose(nll, torch.full((2,), math.log(2)), atol=1e-7)


def test_bradley_terry_gradient_is_minus_sigmoid_of_minus_diff():
    scores = torch.tensor([2.0, 0.5], requires_grad=True)
    bradley_terry_nll(scores, torch.tensor([0]), torch.tensor([1])).sum().backward()
    # d/d s_better [-log sigmoid(d)] = -(1 - sigmoid(d)) = -sigmoid(-d); sigmoid(-1.5) = 0.1824255
    # d/d s_worse = +sigmoid(-d): the better response is pushed up, the worse one down
    assert torch.allclose(scores.grad, torch.tensor([-0.1824255, 0.1824255]), atol=1e-6)


def test_bradley_terry_gathers_scores_of_many_pairs():
    scores = torch.tensor([1.0, 0.0, -1.0])
    nll = bradley_terry_nll(scores, torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]))
    # diffs 1, 2, 1: log(1+e^-1) = 0.3132617, log(1+e^-2) = log(1.1353353) = 0.1269280
    assert torch.allclose(nll, torch.tensor([0.3132617, 0.1269280, 0.3132617]), atol=1e-6)


# ---------------------------------------------------------------- Plackett-Luce


def test_plackett_luce_strict_k3_hand_value():
    scores = torch.tensor([1.0, 0.0, -1.0])
    nll = plackett_luce_nll(scores, (0, 1, 2))
    # L = logsumexp(1, 0, -1) = log(e + 1 + e^-1) = log(4.0861613) = 1.4076060
    # first choice: 0 out of {0,1,2}: L - 1 = 0.4076060
    # second choice: 1 out of {1,2}: log(e^0 + e^-1) - 0 = log(1.3678794) = 0.3132617
    # last: 2 out of {2}: s2 - s2 = 0
    # total 0.7208677
    assert torch.allclose(nll, torch.tensor(0.7208677), atol=1e-6)


def test_plackett_luce_follows_levels_not_index_order():
    scores = torch.tensor([1.0, 0.0, -1.0])
    nll = plackett_luce_nll(scores, (2, 0, 1))
    # best is response 1 (score 0), out of all: L - 0 = 1.4076060
    # then response 2 (score -1) out of {0, 2}: log(e^1 + e^-1) - (-1) = log(3.0861613) + 1 = 2.1269280
    # then 0 alone: 0; total 3.5345340
    assert torch.allclose(nll, torch.tensor(3.5345340), atol=1e-6)


def test_plackett_luce_tie_group_shares_one_choice_set_breslow():
    scores = torch.tensor([1.0, 0.0, -1.0])
    nll = plackett_luce_nll(scores, (0, 0, 1))
    # level 0 = {0, 1}, both against the full set: (L - 1) + (L - 0) = 2L - 1 = 1.8152119
    # level 1 = {2} against {2}: 0
    assert torch.allclose(nll, torch.tensor(1.8152119), atol=1e-6)


@pytest.mark.parametrize("a,b", [(2.0, 0.5), (-1.0, 3.0), (0.0, 0.0)])
def test_plackett_luce_k2_equals_bradley_terry(a, b):
    scores = torch.tensor([a, b])
    # -(a - log(e^a + e^b)) = log(1 + e^(b-a)) = -log sigmoid(a - b)
    pl = plackett_luce_nll(scores, (0, 1))
    bt = bradley_terry_nll(scores, torch.tensor([0]), torch.tensor([1]))[0]
    assert torch.allclose(pl, bt, atol=1e-6)
    # the other order is the other pair
    pl_rev = plackett_luce_nll(scores, (1, 0))
    bt_rev = bradley_terry_nll(scores, torch.tensor([1]), torch.tensor([0]))[0]
    assert torch.allclose(pl_rev, bt_rev, atol=1e-6)


def test_plackett_luce_gradient_and_shift_invariance():
    scores = torch.tensor([1.0, 0.0, -1.0], requires_grad=True)
    plackett_luce_nll(scores, (0, 1, 2)).backward()
    # term 1: L - s0 -> softmax over all minus one-hot(0); softmax0 = e / 4.0861613 = 0.6652410
    # term 2: log(e^s1 + e^s2) - s1 -> softmax over {1,2} minus one-hot(1)
    # d/ds0 = 0.6652410 - 1 = -0.3347590 (the best response only appears in term 1)
    assert torch.allclose(scores.grad[0], torch.tensor(-0.3347590), atol=1e-6)
    # adding a constant to every score leaves each log-softmax unchanged: gradients sum to 0
    assert abs(float(scores.grad.sum())) < 1e-6
    shifted = plackett_luce_nll(torch.tensor([11.0, 10.0, 9.0]), (0, 1, 2))
    assert torch.allclose(shifted, torch.tensor(0.7208677), atol=1e-5)


def test_plackett_luce_all_tied_is_the_same_for_any_scores_spread():
    # one level: sum_i (logsumexp(s) - s_i) = K * L - sum(s); for [1,0,-1]: 3 * 1.4076060 - 0 = 4.2228179
    nll = plackett_luce_nll(torch.tensor([1.0, 0.0, -1.0]), (0, 0, 0))
    assert torch.allclose(nll, torch.tensor(4.2228179), atol=1e-6)


# ---------------------------------------------------------------- centering


def test_centering_penalty_two_groups_unsorted_ids():
    scores = torch.tensor([1.0, 3.0, -2.0, 0.0, 5.0])
    groups = torch.tensor([7, 7, 3, 3, 3])
    # group 7: mean (1 + 3) / 2 = 2 -> 4; group 3: mean (-2 + 0 + 5) / 3 = 1 -> 1; mean (4 + 1) / 2 = 2.5
    assert torch.allclose(centering_penalty(scores, groups), torch.tensor(2.5))


def test_centering_penalty_zero_when_each_group_is_centred_and_gradient():
    assert centering_penalty(torch.tensor([1.0, -1.0, 4.0, -4.0]), torch.tensor([0, 0, 1, 1])).item() == 0.0
    scores = torch.tensor([1.0, 3.0, -2.0, 0.0, 5.0], requires_grad=True)
    centering_penalty(scores, torch.tensor([7, 7, 3, 3, 3])).backward()
    # P = (m7^2 + m3^2) / 2; dP/ds_i = m_g * (1 / n_g) for i in g (2 m_g / 2 groups / n_g)
    # group 7: 2 / 2 = 1.0 each; group 3: 1 / 3 = 0.3333333 each
    assert torch.allclose(scores.grad, torch.tensor([1.0, 1.0, 1 / 3, 1 / 3, 1 / 3]), atol=1e-6)


# ---------------------------------------------------------------- pair_calibration_error


def test_pair_calibration_error_overconfident_hand_case():
    # each pair both ways: points (0.75, outcome 1) x2 in bin 7, (0.25, outcome 0) x2 in bin 2
    # bin 7: |1 - 0.75| * 2/4 = 0.125; bin 2: |0 - 0.25| * 2/4 = 0.125 -> ECE 0.25
    assert pair_calibration_error(torch.tensor([0.75, 0.75])) == pytest.approx(0.25, abs=1e-12)


def test_pair_calibration_error_perfectly_calibrated_is_zero():
    # 3 of 4 pairs predicted 0.75 and one pair got backwards (0.25):
    # points at p = 0.75: pairs 0,1,2 (outcome 1) and pair 3 flipped (outcome 0) -> mean 3/4 = p
    # points at p = 0.25: pairs 0,1,2 flipped (outcome 0) and pair 3 (outcome 1) -> mean 1/4 = p
    assert pair_calibration_error(torch.tensor([0.75, 0.75, 0.75, 0.25])) == pytest.approx(0.0, abs=1e-12)
    # p = 0.5 is calibrated by symmetry: bin 5 holds (0.5, 1) and (0.5, 0), mean outcome 0.5
    assert pair_calibration_error(torch.tensor([0.5, 0.5])) == pytest.approx(0.0, abs=1e-12)


def test_pair_calibration_error_certain_and_right_is_zero_and_p_one_is_clamped_to_last_bin():
    # p = 1.0 -> bin index 10 clamped to 9, outcome 1: |1 - 1| = 0; flipped (0.0, outcome 0) bin 0: 0
    assert pair_calibration_error(torch.tensor([1.0, 1.0])) == pytest.approx(0.0, abs=1e-12)


def test_pair_calibration_error_mixed_bins_weighted_by_count():
    # probs [0.9, 0.6]: points (0.9,1) bin 9, (0.6,1) bin 6, (0.1,0) bin 1, (0.4,0) bin 4 -> 1/4 each
    # errors: 0.1, 0.4, 0.1, 0.4 -> ECE = (0.1 + 0.4 + 0.1 + 0.4) / 4 = 0.25
    assert pair_calibration_error(torch.tensor([0.9, 0.6])) == pytest.approx(0.25, abs=1e-6)
    # with 2 bins: bin 1 = {(0.9,1), (0.6,1)}: |1 - 0.75| * 2/4; bin 0 = {(0.1,0),(0.4,0)}: |0 - 0.25| * 2/4
    assert pair_calibration_error(torch.tensor([0.9, 0.6]), bins=2) == pytest.approx(0.25, abs=1e-6)


# ---------------------------------------------------------------- dpo_loss

# pair 0: chosen ratio -1 - (-2) = 1, rejected ratio -3 - (-2) = -1 -> h = 2
# pair 1: chosen ratio -2 - (-1.5) = -0.5, rejected ratio -1 - (-1.5) = 0.5 -> h = -1
CHOSEN = torch.tensor([-1.0, -2.0])
REJECTED = torch.tensor([-3.0, -1.0])
REF_CHOSEN = torch.tensor([-2.0, -1.5])
REF_REJECTED = torch.tensor([-2.0, -1.5])


def test_dpo_loss_hand_values():
    loss, _ = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1)
    # pair 0: -log sigmoid(0.1 * 2) = log(1 + e^-0.2) = log(1.8187308) = 0.5981389
    # pair 1: -log sigmoid(0.1 * -1) = log(1 + e^0.1) = 0.1 + log(1 + e^-0.1) = 0.1 + 0.6443967 = 0.7443967
    assert torch.allclose(loss, torch.tensor([0.5981389, 0.7443967]), atol=1e-6)


def test_dpo_label_smoothing_hand_values():
    loss, _ = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, label_smoothing=0.1)
    # with l = -log sigmoid(bh): -log sigmoid(-bh) = l + bh, so
    # (1 - e) l + e (l + bh) = l + e * b * h
    # pair 0: 0.5981389 + 0.1 * 0.2 = 0.6181389; pair 1: 0.7443967 + 0.1 * (-0.1) = 0.7343967
    assert torch.allclose(loss, torch.tensor([0.6181389, 0.7343967]), atol=1e-6)


def test_dpo_label_smoothing_half_is_flat_at_log2_plus_half_margin():
    # e = 0.5: l + 0.5 b h; at h = 0 both terms are log 2
    zero = torch.zeros(1)
    loss, _ = dpo_loss(zero, zero, zero, zero, beta=0.3, label_smoothing=0.5)
    assert torch.allclose(loss, torch.tensor([math.log(2)]), atol=1e-7)


def test_ipo_hand_values():
    loss, _ = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, loss_type="ipo")
    # 1 / (2 * 0.1) = 5; pair 0: (2 - 5)^2 = 9; pair 1: (-1 - 5)^2 = 36
    assert torch.allclose(loss, torch.tensor([9.0, 36.0]), atol=1e-5)
    # at h = 0 (policy = reference): (0 - 5)^2 = 25
    zero = torch.zeros(1)
    at_ref, _ = dpo_loss(zero, zero, zero, zero, beta=0.1, loss_type="ipo")
    assert torch.allclose(at_ref, torch.tensor([25.0]), atol=1e-5)


def test_dpo_at_reference_is_log2_whatever_beta():
    logps = torch.tensor([-4.0, -7.5])
    for beta in (0.01, 0.1, 1.0):
        loss, metrics = dpo_loss(logps, logps - 1, logps, logps - 1, beta=beta)
        # h = 0 -> -log sigmoid(0) = log 2 = 0.6931472
        assert torch.allclose(loss, torch.full((2,), math.log(2)), atol=1e-7)
        assert metrics["rewards/accuracy"].tolist() == [0.5, 0.5]  # h = 0: a tie counts half


def test_pair_accuracy_counts_ties_half():
    # margins 2, -1e-9, 0, 0 -> 1, 0, 1/2, 1/2; mean 0.5
    acc = pair_accuracy(torch.tensor([2.0, -1e-9, 0.0, -0.0]))
    assert acc.tolist() == [1.0, 0.0, 0.5, 0.5]


def test_dpo_metrics_are_beta_times_log_ratios():
    _, m = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1)
    # rewards/chosen = 0.1 * [1, -0.5]; rewards/rejected = 0.1 * [-1, 0.5]; margin = 0.1 * h = [0.2, -0.1]
    assert torch.allclose(m["rewards/chosen"], torch.tensor([0.1, -0.05]), atol=1e-7)
    assert torch.allclose(m["rewards/rejected"], torch.tensor([-0.1, 0.05]), atol=1e-7)
    assert torch.allclose(m["rewards/margin"], torch.tensor([0.2, -0.1]), atol=1e-7)
    assert m["rewards/accuracy"].tolist() == [1.0, 0.0]
    assert all(not v.requires_grad for v in m.values())


def test_dpo_gradients():
    chosen = CHOSEN.clone().requires_grad_(True)
    rejected = REJECTED.clone().requires_grad_(True)
    loss, _ = dpo_loss(chosen, rejected, REF_CHOSEN, REF_REJECTED, beta=0.1)
    loss.sum().backward()
    # d/d log pi(y+) of -log sigmoid(b h) = -b sigmoid(-b h)
    # pair 0: -0.1 * sigmoid(-0.2) = -0.1 * 0.4501660 = -0.0450166
    # pair 1: -0.1 * sigmoid(0.1) = -0.1 * 0.5249792 = -0.0524979; rejected gets the opposite sign
    expected = torch.tensor([-0.0450166, -0.0524979])
    assert torch.allclose(chosen.grad, expected, atol=1e-6)
    assert torch.allclose(rejected.grad, -expected, atol=1e-6)

    chosen = CHOSEN.clone().requires_grad_(True)
    loss, _ = dpo_loss(chosen, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, loss_type="ipo")
    loss.sum().backward()
    # d/dh (h - 5)^2 = 2 (h - 5): pair 0: 2 * (2 - 5) = -6; pair 1: 2 * (-1 - 5) = -12
    assert torch.allclose(chosen.grad, torch.tensor([-6.0, -12.0]), atol=1e-5)


def test_dpo_unknown_loss_type_raises():
    with pytest.raises(ValueError, match="unknown preference loss 'kto'"):
        dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.1, loss_type="kto")
