"""TRPO maths (conjugate gradient, the trust-region step size, the backtracking line search) and
the adaptive KL controller, on hand examples."""

from __future__ import annotations

import pytest
import torch

from rlft.algorithms.core import kl_k3
from rlft.algorithms.kl_control import AdaptiveKLController
from rlft.algorithms.trpo import backtracking_line_search, conjugate_gradient, max_step, surrogate_loss


class CountingMatvec:
    def __init__(self, a: torch.Tensor):
        self.a, self.calls = a, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.a @ x


def test_cg_one_iteration_on_a_multiple_of_identity():
    mv = CountingMatvec(2.0 * torch.eye(2, dtype=torch.float64))
    x = conjugate_gradient(mv, torch.tensor([2.0, 4.0], dtype=torch.float64), iters=10)
    # r = p = b = [2, 4], rr = 20, Ap = [4, 8], p.Ap = 40, alpha = 0.5 -> x = [1, 2], r = 0: stop
    assert x.tolist() == [1.0, 2.0]
    assert mv.calls == 1


def test_cg_solves_3x3_spd_system_in_3_iterations():
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    mv = CountingMatvec(a)
    x = conjugate_gradient(mv, b, iters=3)  # exact in n = 3 steps (up to rounding)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-10)
    assert mv.calls <= 3
    # by hand (Cramer): det = 4*(6-1) - 1*(2-0) = 18; x0 = (1*5 - 1*(4-3))/18 = 4/18 = 0.222222
    assert float(x[0]) == pytest.approx(4 / 18, abs=1e-10)


def test_cg_zero_rhs_returns_zero_without_matvecs():
    mv = CountingMatvec(torch.eye(3))
    assert conjugate_gradient(mv, torch.zeros(3), iters=5).tolist() == [0.0, 0.0, 0.0]
    assert mv.calls == 0


def test_max_step_puts_the_quadratic_kl_on_the_boundary():
    fisher = torch.diag(torch.tensor([2.0, 4.0], dtype=torch.float64))
    s = torch.tensor([1.0, 2.0], dtype=torch.float64)
    step = max_step(s, fisher @ s, max_kl=0.01)
    # F s = [2, 8], s^T F s = 2 + 16 = 18; beta = sqrt(2 * 0.01 / 18) = 0.0333333
    assert torch.allclose(step, torch.tensor([1 / 30, 2 / 30], dtype=torch.float64))
    # 0.5 step^T F step = 0.5 * beta^2 * 18 = 0.5 * (0.02 / 18) * 18 = 0.01 exactly
    assert float(0.5 * step @ fisher @ step) == pytest.approx(0.01, rel=1e-12)


class FakeEvaluate:
    """Records the fractions asked for and answers (gain, kl) from a table."""

    def __init__(self, table: dict[float, tuple[float, float]]):
        self.table, self.calls = table, []

    def __call__(self, frac: float) -> tuple[float, float]:
        self.calls.append(frac)
        return self.table.get(frac, (0.0, 0.0))


def test_line_search_accepts_the_first_fraction_meeting_both_conditions():
    ev = FakeEvaluate(
        {
            1.0: (0.5, 0.05),  # improves, but KL 0.05 > 0.01
            0.5: (-0.1, 0.005),  # inside the region, but the surrogate got worse
            0.25: (0.2, 0.01),  # gain > 0 and KL == max_kl (<= is allowed): accept
            0.125: (0.3, 0.001),  # better, but never asked for
        }
    )
    res = backtracking_line_search(ev, max_kl=0.01, ratio=0.5, max_backtracks=5)
    assert ev.calls == [1.0, 0.5, 0.25]  # no restore call: the accepted parameters stay
    assert (res.accepted, res.step_fraction, res.surrogate_gain, res.kl, res.tries) == (
        True,
        0.25,
        0.2,
        0.01,
        3,
    )


def test_line_search_rejects_zero_gain_and_restores():
    # gain exactly 0 is not an improvement; fractions 1, 0.5, 0.25 (exact in binary), then restore
    ev = FakeEvaluate({1.0: (0.0, 0.0), 0.5: (-1.0, 0.0), 0.25: (1.0, 0.02)})
    res = backtracking_line_search(ev, max_kl=0.01, ratio=0.5, max_backtracks=3)
    assert ev.calls == [1.0, 0.5, 0.25, 0.0]
    assert res.accepted is False and res.step_fraction == 0.0 and res.tries == 3
    # the last try's numbers are reported: gain 1.0 with KL 0.02
    assert (res.surrogate_gain, res.kl) == (1.0, 0.02)


# ---------------------------------------------------------------- adaptive KL controller


def test_adaptive_kl_moves_up_and_down_by_the_clipped_factor():
    c = AdaptiveKLController(init_coef=0.1, target=1.0, horizon=640)
    # KL 2: e = clip(2/1 - 1 = 1, -0.2, 0.2) = 0.2; K = 64/640 = 0.1; beta = 0.1 * (1 + 0.02) = 0.102
    assert c.update(2.0, 64) == pytest.approx(0.102, rel=1e-12)
    # KL 0.5: e = clip(-0.5) = -0.2; beta = 0.102 * (1 - 0.02) = 0.09996
    assert c.update(0.5, 64) == pytest.approx(0.09996, rel=1e-12)
    # KL 1.1: e = 0.1 (inside the clip); n = 320: K = 0.5; beta = 0.09996 * 1.05 = 0.104958
    assert c.update(1.1, 320) == pytest.approx(0.104958, rel=1e-9)
    # KL on target: e = 0, unchanged
    assert c.update(1.0, 64) == pytest.approx(0.104958, rel=1e-9)


def test_adaptive_kl_with_no_target_is_fixed_and_state_round_trips():
    fixed = AdaptiveKLController(init_coef=0.05, target=0.0, horizon=100)
    assert fixed.update(10.0, 64) == 0.05
    c = AdaptiveKLController(0.1, 1.0, 640)
    c.update(2.0, 64)
    d = AdaptiveKLController(0.7, 1.0, 640)
    d.load_state_dict(c.state_dict())
    assert d.value == c.value == pytest.approx(0.102)


# ---------------------------------------------------------------- the KL measure of the line search


def test_k3_is_accurate_and_non_negative_for_small_log_ratios():
    # k3 = e^x - 1 - x = x^2/2 + x^3/6 + ...; x = 1e-4: 5e-9 + 1.7e-13 = 5.0002e-9
    k3 = kl_k3(torch.zeros(1), torch.tensor([1e-4]))
    assert float(k3) == pytest.approx(5.0002e-9, rel=1e-3)
    # documented ">= 0": r - 1 - log r >= 0 for every r > 0 (e^x >= 1 + x)
    x = torch.linspace(-1e-3, 1e-3, 2001)
    assert (kl_k3(torch.zeros_like(x), x) >= 0).all()


def test_surrogate_is_the_unclipped_importance_weighted_advantage():
    # ratios exp(log 2) = 2 and exp(-log 4) = 1/4; advantages 0.5 and -2:
    # loss = -(2 * 0.5), -(0.25 * -2) = -1, 0.5 (no clip: the trust region bounds the step)
    logp = torch.tensor([[0.0, -1.0]])
    old = logp - torch.tensor([[0.6931472, -1.3862944]])
    loss, metrics = surrogate_loss(logp, old, torch.tensor([[0.5, -2.0]]))
    assert torch.allclose(loss, torch.tensor([[-1.0, 0.5]]), atol=1e-6) and metrics == {}
