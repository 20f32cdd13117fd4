"""rlft.runtime.checkpoint: round trip of weights / optimizer / scheduler / RNG, completeness, pruning."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlft.config.common import OptimConfig
from rlft.models.load import load_causal_lm
from rlft.runtime.checkpoint import (
    COMPLETE,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from rlft.runtime.optim import make_optimizer

OPT = OptimConfig(lr=1e-2, warmup_steps=3, lr_schedule="linear")


def _train_one_step(model, opt, sched, value: float) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, value)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def _fresh(path: str):
    model = load_causal_lm(path)
    opt, sched = make_optimizer(model.parameters(), OPT, total_steps=10)
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path: Path, tiny_model_path: str):
    model, opt, sched = _fresh(tiny_model_path)
    _train_one_step(model, opt, sched, 0.1)
    _train_one_step(model, opt, sched, -0.2)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() aliases the live tensors
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(9)
    ckpt = save_checkpoint(tmp_path / "ckpt", 2, model, opt, sched, {"step": 2, "x": [1, 2]})
    expected_rand = (torch.rand(3), random.random(), np.random.rand())

    # move everything on: weights, optimizer moments, schedule, RNGs
    _train_one_step(model, opt, sched, 0.3)
    torch.rand(10)
    random.random()

    model2, opt2, sched2 = _fresh(tiny_model_path)
    state = load_checkpoint(ckpt, model2, opt2, sched2)
    assert state == {"step": 2, "x": [1, 2]}
    for k, v in model2.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # tied embeddings stay tied after loading (lm_head is not stored separately)
    assert model2.lm_head.weight.data_ptr() == model2.model.embed_tokens.weight.data_ptr()
    st2 = opt2.state_dict()
    assert st2["param_groups"] == saved_opt["param_groups"]
    for i, s in saved_opt["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(st2["state"][i][name], s[name])
    # two scheduler steps taken: last_epoch 2, lr = 1e-2 * (2+1)/3 = 1e-2 (last warm-up step)
    assert sched2.last_epoch == 2
    assert sched2.get_last_lr()[0] == pytest.approx(1e-2)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected_rand[0]) and got[1:] == expected_rand[1:]


def test_checkpoint_dir_is_from_pretrained_loadable(tmp_path: Path, tiny_model):
    from transformers import AutoModelForCausalLM

    opt, sched = make_optimizer(tiny_model.parameters(), OPT, 10)
    ckpt = save_checkpoint(tmp_path, 1, tiny_model, opt, sched, {"step": 1})
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        [
            COMPLETE,
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "optimizer.pt",
            "rng.pt",
            "scheduler.pt",
            "signature.json",
            "trainer_state.json",
        ]
    )
    assert (ckpt / COMPLETE).read_text() == "1"
    loaded = AutoModelForCausalLM.from_pretrained(ckpt)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def _fake(root: Path, name: str, complete: bool) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if complete:
        (d / COMPLETE).write_text(name)
    return d


def test_latest_ignores_temp_and_incomplete_dirs(tmp_path: Path):
    _fake(tmp_path, "step-2", True)
    _fake(tmp_path, "step-10", True)  # numeric, not lexicographic, order: 10 > 9
    _fake(tmp_path, "step-9", True)
    _fake(tmp_path, ".tmp-step-11-abc", True)  # a crashed save, even with a marker
    _fake(tmp_path, "step-12", False)  # renamed without marker: not complete
    _fake(tmp_path, "step-x", True)
    (tmp_path / "step-13").write_text("a file, not a dir")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-10"
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2, 9, 10]
    assert latest_checkpoint(tmp_path / "missing") is None


def test_load_incomplete_checkpoint_refuses(tmp_path: Path, tiny_model):
    d = _fake(tmp_path, "step-3", False)
    opt, sched = make_optimizer(tiny_model.parameters(), OPT, 10)
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        load_checkpoint(d, tiny_model, opt, sched)


def test_prune_keeps_newest_and_removes_stale_temp(tmp_path: Path):
    for s in (1, 2, 3, 4):
        _fake(tmp_path, f"step-{s}", True)
    _fake(tmp_path, "step-5", False)
    _fake(tmp_path, ".tmp-step-6-zz", False)
    prune_checkpoints(tmp_path, keep=2)
    # complete 1..4, keep 2 -> 3 and 4 stay; the incomplete step-5 is not counted nor deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3", "step-4", "step-5"]
    prune_checkpoints(tmp_path, keep=0)  # keep is at least 1: the newest is never deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-4", "step-5"]


def test_save_prunes_and_overwrites_same_step(tmp_path: Path, tiny_model):
    opt, sched = make_optimizer(tiny_model.parameters(), OPT, 10)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, tiny_model, opt, sched, {"step": step}, keep=2)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2, 3]
    # re-saving step 3 (a resumed run) replaces it, leaving no temp dir behind
    save_checkpoint(tmp_path, 3, tiny_model, opt, sched, {"step": 3, "again": True}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2", "step-3"]
    assert '"again": true' in (tmp_path / "step-3" / "trainer_state.json").read_text()
