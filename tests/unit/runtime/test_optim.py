"""rlft.runtime.optim: LR multiplier for warm-up and constant / linear / cosine decay."""

from __future__ import annotations

import pytest
import torch

from rlft.config.common import OptimConfig
from rlft.runtime.optim import lr_factor, make_optimizer


def test_warmup_is_linear_from_one_over_warmup():
    # warmup 4: steps 0..3 -> (s+1)/4 = 0.25, 0.5, 0.75, 1.0
    got = [lr_factor(s, total=10, warmup=4, schedule="constant", min_ratio=0.0) for s in range(4)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_constant_after_warmup():
    # no decay: 1.0 at every step after warm-up, including past the end
    assert lr_factor(2, 10, 2, "constant", 0.5) == 1.0
    assert lr_factor(50, 10, 2, "constant", 0.5) == 1.0


def test_linear_decay():
    # warmup 2, total 10: progress = (s-2)/8
    # s=2 -> 0 -> 1.0; s=6 -> 4/8 = 0.5 -> 1 - 1*0.5 = 0.5; s=10 -> 1 -> 0.0
    assert lr_factor(2, 10, 2, "linear", 0.0) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, "linear", 0.0) == pytest.approx(0.0)
    # min_ratio 0.2, s=6: 1 - (1-0.2)*0.5 = 0.6; past the end clamps at progress 1 -> 0.2
    assert lr_factor(6, 10, 2, "linear", 0.2) == pytest.approx(0.6)
    assert lr_factor(25, 10, 2, "linear", 0.2) == pytest.approx(0.2)


def test_cosine_decay():
    # no warm-up, total 12: progress = s/12
    # s=0: 0.5*(1+cos 0) = 1; s=6: 0.5*(1+cos(pi/2)) = 0.5; s=12: 0.5*(1+cos pi) = 0
    assert lr_factor(0, 12, 0, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(6, 12, 0, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(12, 12, 0, "cosine", 0.0) == pytest.approx(0.0, abs=1e-12)
    # min_ratio 0.1, s=4: progress 1/3, cos(pi/3) = 0.5 -> 0.1 + 0.9*0.5*1.5 = 0.1 + 0.675 = 0.775
    assert lr_factor(4, 12, 0, "cosine", 0.1) == pytest.approx(0.775)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        lr_factor(3, 10, 0, "step", 0.0)


def test_scheduler_applies_factor_to_peak_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    cfg = OptimConfig(lr=0.1, warmup_steps=2, lr_schedule="linear", min_lr_ratio=0.0)
    opt, sched = make_optimizer([p], cfg, total_steps=6)
    lrs = []
    for _ in range(5):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # s=0: 0.1*1/2 = 0.05; s=1: 0.1*2/2 = 0.1; then progress (s-2)/4: s=2 -> 0.1, s=3 -> 0.075, s=4 -> 0.05
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.05])


def test_adamw_is_fused_and_its_first_step_is_adams():
    # step 1 of AdamW: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps) = lr * sign(g),
    # after the decoupled decay p *= 1 - lr * wd. p = [1, -2], g = [0.5, -4], lr 0.1, wd 0.01:
    # [1 * 0.999 - 0.1, -2 * 0.999 + 0.1] = [0.899, -1.898]
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([0.5, -4.0])
    cfg = OptimConfig(lr=0.1, weight_decay=0.01, warmup_steps=0)
    optimizer, _ = make_optimizer([p], cfg, total_steps=10)
    assert optimizer.defaults["fused"] is True
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.899, -1.898]))
