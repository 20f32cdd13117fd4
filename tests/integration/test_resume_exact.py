"""Exact resume of the RL loop's stateful variants: DAPO's dynamic sampling (a step that refilled
flat groups from extra sampling rounds, so the prompt cursor moved by more than one batch), TRPO,
and the adaptive KL controller. A run stopped at step 2 and resumed equals a straight 3-step run:
same weights, samples, metrics and checkpointed state."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from run_support import read_metrics, saved_weights

import rlft

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=4",
    "train.microbatch_size=8",
    "train.save_every=1",
    "train.keep_checkpoints=5",
]


def half_flat(prompt, completion, example):
    """Prompts with an even hash score 0 for every sample (a flat group DAPO drops and refills);
    the others score the completion's length (informative unless all 4 lengths tie)."""
    if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2 == 0:
        return 0.0
    return float(len(completion))


VARIANTS = {
    "dapo": ["algo.name=dapo", "algo.max_sampling_rounds=4"],
    "trpo": ["algo.name=trpo", "algo.trpo.cg_iters=3"],
    "adaptive_kl": ["algo.kl_coef=0.1", "algo.target_kl=0.0001", "algo.kl_horizon=16"],
}


def _state(out, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step-{step}" / "trainer_state.json").read_text())


def _without_timings(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("perf/")} for m in metrics]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_resume_at_step_2_equals_the_straight_run(make_rl_config, tmp_path, variant):
    common, fns = [*SMALL, *VARIANTS[variant]], {"half_flat": half_flat}
    a, b = tmp_path / "straight", tmp_path / "parted"
    rlft.train_rl(make_rl_config(*common, "train.steps=3", out=a), fns)
    rlft.train_rl(make_rl_config(*common, "train.steps=2", out=b), fns)
    rlft.train_rl(make_rl_config(*common, "train.steps=3", "resume=true", out=b), fns)
    wa, wb = saved_weights(a / "final"), saved_weights(b / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "samples.jsonl").read_text() == (b / "samples.jsonl").read_text()
    ma, mb = read_metrics(a), read_metrics(b)
    assert _without_timings(ma) == _without_timings(mb)
    assert _state(a, 3) == _state(b, 3)
    if variant == "dapo":
        # the cursor after step k = prompts drawn in steps 1..k (2 per sampling round)
        drawn = [m["rollout/prompts_drawn"] for m in ma]
        assert _state(a, 2)["stream"]["index"] == drawn[0] + drawn[1]
        assert max(m["rollout/sampling_rounds"] for m in ma[:2]) > 1  # a refill before the save
    if variant == "adaptive_kl":
        # the controller moved the coefficient away from 0.1, and the resume carried it on
        assert _state(a, 2)["kl"] != _state(a, 1)["kl"]
        assert [m["policy/kl_coef"] for m in ma] == [m["policy/kl_coef"] for m in mb]
