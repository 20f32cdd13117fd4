"""GAE, returns, RLOO, whitening, GSPO and value losses by hand; the algorithm table's defaults and
advantage functions on hand examples; masked tokens get no gradient under any algorithm's loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlft.algorithms.core import (
    aggregation_weights,
    clipped_value_loss,
    discounted_returns,
    gae,
    masked_whiten,
    rloo_advantages,
    sequence_clipped_loss,
    token_level_rewards,
)
from rlft.algorithms.registry import (
    ALGORITHMS,
    GLOBAL_DEFAULTS,
    GRADIENT,
    TRUST_REGION,
    AdvantageInputs,
    get_algorithm,
    kl_in_loss,
)
from rlft.config.rl import AlgoConfig
from rlft.rl.collect import informative_groups

T, F = True, False


def close(a, b, atol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.tensor(b), atol=atol)


# ---------------------------------------------------------------- GAE


def test_gae_hand_worked():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])  # 5.0 sits on padding: must not leak
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])  # 9.0: critic output on padding
    mask = torch.tensor([[T, T, T], [T, T, F]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)  # gamma * lam = 0.72
    # row 0: delta_2 = 1 + 0.9*0 - 0.7 = 0.3; delta_1 = 0 + 0.9*0.7 - 0.6 = 0.03;
    #        delta_0 = 0 + 0.9*0.6 - 0.5 = 0.04
    #        A_2 = 0.3; A_1 = 0.03 + 0.72*0.3 = 0.246; A_0 = 0.04 + 0.72*0.246 = 0.21712
    # row 1 ends at t=1, so V_2 counts as 0 (not 9): delta_1 = 2 + 0 - 0.5 = 1.5;
    #        delta_0 = 0 + 0.9*0.5 - 1.0 = -0.55; A_1 = 1.5; A_0 = -0.55 + 0.72*1.5 = 0.53
    assert close(adv, [[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0]])
    # returns = A + V: [0.71712, 0.846, 1.0] and [1.53, 2.0, 0 (masked)]
    assert close(ret, [[0.71712, 0.846, 1.0], [1.53, 2.0, 0.0]])


def _gae_loops(rewards, values, lengths, gamma, lam):
    b, t = rewards.shape
    adv = [[0.0] * t for _ in range(b)]
    for i in range(b):
        for s in range(lengths[i]):
            total = 0.0
            for k in range(s, lengths[i]):  # A_s = sum_k (gamma lam)^(k-s) delta_k
                next_v = float(values[i, k + 1]) if k + 1 < lengths[i] else 0.0
                delta = float(rewards[i, k]) + gamma * next_v - float(values[i, k])
                total += (gamma * lam) ** (k - s) * delta
            adv[i][s] = total
    return torch.tensor(adv)


def test_gae_matches_double_loop_on_random_ragged_batch():
    g = torch.Generator().manual_seed(0)
    lengths = [7, 0, 3, 1, 5]
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    rewards, values = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    adv, ret = gae(rewards, values, mask, gamma=0.95, lam=0.7)
    expected = _gae_loops(rewards, values, lengths, 0.95, 0.7)
    assert torch.allclose(adv, expected, atol=1e-5)
    assert torch.allclose(ret, torch.where(mask, expected + values, 0.0), atol=1e-5)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


# ---------------------------------------------------------------- rewards, returns, baselines


def test_token_level_rewards_score_on_last_token_and_kl_everywhere():
    scores = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[T, T, T], [T, F, F]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    # -0.5 * KL per token: row 0 [-0.05, -0.1, -0.15 + 1 = 0.85]; row 1 [-0.2 - 2 = -2.2, 0, 0]
    assert close(token_level_rewards(scores, mask, kl, 0.5), [[-0.05, -0.1, 0.85], [-2.2, 0.0, 0.0]])
    assert close(token_level_rewards(scores, mask), [[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]])


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 7.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    # gamma 1: row 0 [1+0+2, 0+2, 2] = [3, 2, 2]; row 1 [3, 3, 0] (the 7 is padding)
    assert close(discounted_returns(rewards, mask, 1.0), [[3.0, 2.0, 2.0], [3.0, 3.0, 0.0]])
    # gamma 0.5: row 0 R_2 = 2, R_1 = 0 + 0.5*2 = 1, R_0 = 1 + 0.5*1 = 1.5; row 1 R_1 = 3, R_0 = 1.5
    assert close(discounted_returns(rewards, mask, 0.5), [[1.5, 1.0, 2.0], [1.5, 3.0, 0.0]])


def test_rloo_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 2.0, 4.0])
    groups = torch.tensor([3, 3, 3, 3, 7, 1, 1])  # ids need not be contiguous or sorted
    # group [1,0,0,1]: 1 - (0+0+1)/3 = 0.6667, 0 - (1+0+1)/3 = -0.6667 (= 4/3 * (r - 0.5));
    # group of one [5] -> 0; group [2,4]: 2 - 4 = -2, 4 - 2 = 2
    expected = [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, -2.0, 2.0]
    assert close(rloo_advantages(scores, groups), expected)


def test_masked_whiten_by_hand():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[T, T, F], [T, T, F]])
    out = masked_whiten(values, mask)
    # entries 1,2,3,4: mean 2.5, var (2.25+0.25+0.25+2.25)/4 = 1.25, std 1.118034
    # (1-2.5)/1.118034 = -1.341641, (2-2.5)/1.118034 = -0.447214, then +0.447214, +1.341641
    assert close(out, [[-1.341641, -0.447214, 0.0], [0.447214, 1.341641, 0.0]])
    assert abs(float(out[mask].mean())) < 1e-6 and float((out[mask] ** 2).mean()) == pytest.approx(
        1, abs=1e-5
    )
    # shift_mean=False adds the mean back: -1.341641 + 2.5 = 1.158359
    assert float(masked_whiten(values, mask, shift_mean=False)[0, 0]) == pytest.approx(1.158359, abs=1e-5)


def test_gspo_sequence_ratio_and_clipping_by_hand():
    old = torch.zeros(4, 3)
    logp = torch.tensor([[0.1, 0.1, 7.0], [0.5, 0.5, 0.5], [-0.5, 3.0, 3.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[T, T, F], [T, T, T], [T, F, F], [T, T, T]])
    adv = torch.tensor([1.0, 2.0, -1.0, 1.0])[:, None].expand(4, 3)
    loss, m = sequence_clipped_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.3)
    # s = exp(mean of the masked log-ratios), clip range [0.8, 1.3]:
    # row 0: exp((0.1+0.1)/2) = exp(0.1) = 1.105171 (the 7.0 is masked), inside -> -1.105171
    # row 1: exp(0.5) = 1.648721, A=2: min(3.297443, 1.3*2 = 2.6) = 2.6     -> -2.6 (clipped high)
    # row 2: exp(-0.5) = 0.606531, A=-1: min(-0.606531, -0.8) = -0.8      -> 0.8 (clipped low)
    # row 3: exp(-0.5) = 0.606531, A=1: min(0.606531, 0.8) = 0.606531     -> -0.606531 (pessimistic)
    expected = torch.tensor([-1.105171, -2.6, 0.8, -0.606531])[:, None].expand(4, 3)
    assert torch.allclose(loss, expected, atol=1e-5)
    # clip active on rows 1 (3 tokens) and 2 (1 token) of 2+3+1+3 = 9 tokens -> 4/9
    assert float(m["policy/clip_frac"]) == pytest.approx(4 / 9)


def test_clipped_value_loss_both_branches_by_hand():
    v = torch.tensor([1.0, 1.0, 0.6], requires_grad=True)
    old, ret = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([2.0, 0.0, 2.0])
    loss = clipped_value_loss(v, old, ret, clip=0.2)
    # clip(V) = 0.5 + clamp(V - 0.5, -0.2, 0.2): 0.7, 0.7, 0.6
    # 0: max((1-2)^2 = 1, (0.7-2)^2 = 1.69) = 1.69 -> 0.845 (clipped branch)
    # 1: max((1-0)^2 = 1, (0.7-0)^2 = 0.49) = 1 -> 0.5 (unclipped branch)
    # 2: inside the range, both (0.6-2)^2 = 1.96 -> 0.98
    assert close(loss, [0.845, 0.5, 0.98])
    loss.sum().backward()
    # dL/dV: 0 where the clipped (saturated) branch wins; V - R otherwise: 0, 1.0, 0.6 - 2 = -1.4
    assert close(v.grad, [0.0, 1.0, -1.4])


def test_informative_groups_by_hand():
    scores = torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, 2, 2, 2, 2, 0.5, 0.5, 0.5, 0.25]).float()
    # groups of 4: flat, mixed, flat, mixed (one differs by 0.25)
    assert informative_groups(scores, 4).tolist() == [False, True, False, True]


# ---------------------------------------------------------------- the table: resolve


def test_resolve_fills_algorithm_then_global_defaults():
    dr = get_algorithm("dr_grpo").resolve(AlgoConfig())
    assert (dr.scale_rewards, dr.loss_agg) == ("none", "constant")
    assert (dr.clip_eps_low, dr.clip_eps_high, dr.kl_estimator) == (0.2, 0.2, "k3")  # global
    dapo = get_algorithm("dapo").resolve(AlgoConfig())
    assert (dapo.clip_eps_low, dapo.clip_eps_high) == (0.2, 0.28)
    assert dapo.dynamic_sampling is True and dapo.mask_truncated is True
    assert dapo.scale_rewards == "group" and dapo.kl_in_reward is False  # global
    ppo = get_algorithm("ppo").resolve(AlgoConfig())
    assert (ppo.kl_in_reward, ppo.kl_estimator, ppo.whiten_advantages) == (True, "k1", True)


def test_explicit_config_value_wins_even_when_falsy():
    dapo = get_algorithm("dapo").resolve(
        AlgoConfig(clip_eps_high=0.25, dynamic_sampling=False, mask_truncated=False, loss_agg="seq_mean")
    )
    assert (dapo.clip_eps_high, dapo.dynamic_sampling, dapo.mask_truncated) == (0.25, False, False)
    assert dapo.loss_agg == "seq_mean"
    assert get_algorithm("ppo").resolve(AlgoConfig(whiten_advantages=False)).whiten_advantages is False


# what each record sets on top of GLOBAL_DEFAULTS (the papers' settings, docs/algorithms.md's table)
OWN_DEFAULTS = {
    "grpo": {},
    "dr_grpo": {"scale_rewards": "none", "loss_agg": "constant"},
    "dapo": {"clip_eps_high": 0.28, "dynamic_sampling": True, "mask_truncated": True},
    "gspo": {"clip_eps_low": 3e-4, "clip_eps_high": 4e-4, "loss_agg": "seq_mean"},
    "rloo": {"kl_in_reward": True, "kl_estimator": "k1"},
    "reinforce_pp": {"kl_in_reward": True, "kl_estimator": "k1"},
    "ppo": {"kl_in_reward": True, "kl_estimator": "k1", "whiten_advantages": True},
    "trpo": {},
}


def test_global_defaults_are_the_documented_ones():
    assert GLOBAL_DEFAULTS == {
        "kl_estimator": "k3",
        "kl_in_reward": False,
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "loss_agg": "token_mean",
        "scale_rewards": "group",
        "whiten_advantages": False,
        "dynamic_sampling": False,
        "mask_truncated": False,
    }


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_resolves_every_field(name):
    assert set(OWN_DEFAULTS) == set(ALGORITHMS)
    p = get_algorithm(name).resolve(AlgoConfig(name=name))
    expected = {**GLOBAL_DEFAULTS, **OWN_DEFAULTS[name]}  # GLOBAL_DEFAULTS pinned above
    assert {k: getattr(p, k) for k in expected} == expected


# ---------------------------------------------------------------- the table: advantages

MASK4 = torch.tensor([[T, T], [T, F], [T, T], [T, T]])
KL4 = torch.tensor([[0.2, 0.2], [0.0, 0.4], [1.0, 1.0], [0.0, 0.0]])  # masked sums 0.4, 0, 2, 0


def _adv(name, scores, mask=MASK4, kl=None, values=None, groups=None, **cfg):
    algo = get_algorithm(name)
    p = algo.resolve(AlgoConfig(name=name, std_eps=0.0, **cfg))
    g = torch.zeros(len(scores), dtype=torch.long) if groups is None else groups
    return algo.advantage_fn(AdvantageInputs(torch.tensor(scores), g, mask, kl, values), p)


def test_grpo_and_dr_grpo_differ_exactly_by_the_group_std():
    grpo, _ = _adv("grpo", [1.0, 0.0, 0.0, 0.0])
    dr, _ = _adv("dr_grpo", [1.0, 0.0, 0.0, 0.0])
    # mean 0.25, centred [0.75, -0.25, -0.25, -0.25] (Dr. GRPO), unbiased std
    # sqrt((0.5625 + 3*0.0625)/3) = sqrt(0.25) = 0.5 -> GRPO [1.5, -0.5, -0.5, -0.5]; same on each token
    assert close(dr, [[0.75] * 2, [-0.25] * 2, [-0.25] * 2, [-0.25] * 2])
    assert close(grpo, [[1.5] * 2, [-0.5] * 2, [-0.5] * 2, [-0.5] * 2])


def test_outcome_algorithms_subtract_summed_kl_from_the_score():
    s = [1.0, 0.0, 0.0, 0.0]
    # kl_coef 0.5 x masked KL sums [0.4, 0 (the 0.4 is masked), 2, 0] -> scores [0.8, 0, -1, 0]
    # mean -0.05, centred [0.85, 0.05, -0.95, 0.05]; std sqrt(1.63/3) = 0.737111
    dr, _ = _adv("dr_grpo", s, kl=KL4, kl_coef=0.5, kl_in_reward=True)
    assert close(dr[:, 0], [0.85, 0.05, -0.95, 0.05])
    grpo, _ = _adv("grpo", s, kl=KL4, kl_coef=0.5, kl_in_reward=True)
    # 0.85/0.737111 = 1.153150, 0.05/0.737111 = 0.067832, -0.95/0.737111 = -1.288815
    assert close(grpo[:, 0], [1.153150, 0.067832, -1.288815, 0.067832])
    # KL in the loss (grpo's default): the scores are left alone -> [1.5, -0.5, -0.5, -0.5]
    in_loss, _ = _adv("grpo", s, kl=KL4, kl_coef=0.5)
    assert close(in_loss[:, 0], [1.5, -0.5, -0.5, -0.5])
    # rloo (KL in reward by default) on [1,0,0,1] -> [0.8, 0, -1, 1]:
    # 0.8 - (0-1+1)/3 = 0.8; 0 - (0.8-1+1)/3 = -0.266667; -1 - (0.8+0+1)/3 = -1.6; 1 - (0.8+0-1)/3 = 1.066667
    rloo, _ = _adv("rloo", [1.0, 0.0, 0.0, 1.0], kl=KL4, kl_coef=0.5)
    assert close(rloo[:, 0], [0.8, -0.266667, -1.6, 1.066667])


def test_reinforce_pp_normalises_returns_over_the_whole_batch():
    mask = torch.tensor([[T, T], [T, F]])
    adv, _ = _adv("reinforce_pp", [1.0, 0.0], mask=mask, groups=torch.tensor([0, 1]))
    # returns (gamma 1): row 0 [1, 1], row 1 [0]; mean 2/3, var (2*(1/3)^2 + (2/3)^2)/3 = 2/9,
    # std 0.471405: (1/3)/0.471405 = 0.707107, (-2/3)/0.471405 = -1.414214 (groups play no part)
    assert close(adv, [[0.707107, 0.707107], [-1.414214, 0.0]])
    kl = torch.tensor([[0.2, 0.4], [0.6, 9.0]])
    adv, _ = _adv("reinforce_pp", [1.0, 0.0], mask=mask, kl=kl, kl_coef=0.5, groups=torch.tensor([0, 1]))
    # rewards [-0.1, -0.2 + 1 = 0.8], [-0.3]; returns [0.7, 0.8], [-0.3]; mean 0.4,
    # var (0.09 + 0.16 + 0.49)/3 = 0.246667, std 0.496655: 0.604040, 0.805387, -1.409428
    assert close(adv, [[0.604040, 0.805387], [-1.409428, 0.0]])


def test_ppo_gae_with_whitening_and_kl_in_reward():
    mask = torch.tensor([[T, T], [T, F]])
    values = torch.tensor([[0.5, 0.5], [0.25, 7.0]])
    adv, ret = _adv("ppo", [1.0, 0.0], mask=mask, values=values, gamma=1.0, gae_lambda=0.5)
    # rewards [0, 1], [0]; row 0: delta_1 = 1 - 0.5 = 0.5, delta_0 = 0 + 0.5 - 0.5 = 0,
    # A = [0 + 0.5*0.5, 0.5] = [0.25, 0.5]; row 1: A_0 = 0 + 0 - 0.25 = -0.25
    # returns = A + V = [0.75, 1.0], [0.0]; whitening [0.25, 0.5, -0.25]: mean 1/6,
    # var (0.083333^2 + 0.333333^2 + 0.416667^2)/3 = 0.097222, std 0.311805
    # -> 0.083333/0.311805 = 0.267261, 1.069045, -1.336306
    assert close(adv, [[0.267261, 1.069045], [-1.336306, 0.0]])
    assert close(ret, [[0.75, 1.0], [0.0, 0.0]])
    kl = torch.tensor([[0.2, 0.4], [0.0, 0.0]])
    adv, ret = _adv(
        "ppo",
        [1.0, 0.0],
        mask=mask,
        values=values,
        kl=kl,
        kl_coef=0.5,
        gamma=1.0,
        gae_lambda=0.5,
        whiten_advantages=False,
    )
    # rewards row 0 [-0.1, -0.2 + 1 = 0.8]: delta_1 = 0.8 - 0.5 = 0.3, delta_0 = -0.1 + 0.5 - 0.5 = -0.1,
    # A = [-0.1 + 0.5*0.3 = 0.05, 0.3], returns [0.55, 0.8]; row 1 unchanged (-0.25, return 0)
    assert close(adv, [[0.05, 0.3], [-0.25, 0.0]])
    assert close(ret, [[0.55, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------- masked tokens, every loss


@pytest.mark.parametrize("kl_in_reward", [False, True])
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_masked_tokens_get_zero_gradient(name, kl_in_reward):
    algo = get_algorithm(name)
    p = algo.resolve(AlgoConfig(name=name, kl_coef=0.1, kl_in_reward=kl_in_reward))
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[T, T, T, F], [T, F, F, F], [T, T, F, F]])
    logp = (-torch.rand(3, 4, generator=g) * 2).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(3, 4, generator=g)  # ratios around 1, some clip
    ref = logp.detach() - 0.5 * torch.rand(3, 4, generator=g)
    adv = torch.tensor([1.0, -2.0, 0.5])[:, None].expand(3, 4)
    loss, _ = algo.token_loss(logp, old, ref, adv, mask, p)
    (loss * aggregation_weights(mask, p.loss_agg, 6)).sum().backward()
    assert (logp.grad[~mask] == 0).all()
    assert (logp.grad[mask] != 0).any()  # the unmasked tokens do carry gradient


@pytest.mark.parametrize(
    "name, steps, has_ref, kl_in_reward, target_kl, expected",
    [
        ("grpo", 1, False, False, 0.0, False),  # one pass, no KL: the update's own first pass serves
        ("grpo", 2, False, False, 0.0, True),  # the policy moves before the second minibatch
        ("grpo", 1, True, False, 0.0, False),  # KL in the loss: measured against the live policy
        ("grpo", 1, True, False, 0.1, True),  # adaptive coefficient: KL(old || ref) before the update
        ("rloo", 1, True, True, 0.0, True),  # KL in the reward: needed for the advantages
        ("rloo", 1, False, True, 0.0, False),  # ... but not without a reference
        ("trpo", 1, False, False, 0.0, True),  # the trust region measures against the old policy
    ],
)
def test_needs_old_logprobs_follows_the_record_and_the_kl(
    name, steps, has_ref, kl_in_reward, target_kl, expected
):
    algo = get_algorithm(name)
    params = algo.resolve(AlgoConfig(name=name, kl_coef=0.1, kl_in_reward=kl_in_reward, target_kl=target_kl))
    assert algo.needs_old_logprobs(params, steps, has_ref) is expected


def test_kl_is_in_the_loss_only_with_a_reference_a_weight_and_not_in_the_reward():
    params = get_algorithm("grpo").resolve(AlgoConfig(kl_coef=0.1))
    assert kl_in_loss(params, has_ref=True)
    assert not kl_in_loss(params, has_ref=False)
    assert not kl_in_loss(dataclasses.replace(params, kl_coef=0.0), has_ref=True)
    assert not kl_in_loss(dataclasses.replace(params, kl_in_reward=True), has_ref=True)


def test_update_rules_say_what_the_loop_needs():
    assert get_algorithm("trpo").update is TRUST_REGION and TRUST_REGION.needs_old_logprobs
    assert not TRUST_REGION.several_processes
    assert all(get_algorithm(n).update is GRADIENT for n in ALGORITHMS if n != "trpo")
