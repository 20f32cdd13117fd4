"""The supervised loop (`rlft sft`, `rlft rm`; DPO and logit distillation share it) on 1 process
vs 2 (torchrun, gloo, ddp): the same per-step loss, grad norm and held-out metrics.

Why they must match: every rank draws the same step items from the seeded stream and trains on
its half; the gradient is normalised by the count over all ranks (SFT: assistant tokens, summed
over ranks before any backward; RM: rankings) and summed over ranks, so it equals the one-process
gradient of the whole step. SFT packs each rank's examples separately, which changes no loss
(block-diagonal attention, positions restart per example). Floating-point sums run in another
order: relative tolerance 1e-5.
"""

from __future__ import annotations

import pytest
from dist_support import REPO_ROOT, assert_same_steps, read_metrics, run_rlft

pytestmark = pytest.mark.distributed

CASES = {
    "sft": ("sft_tiny.yaml", ["loss/sft", "grad_norm", "sft/assistant_tokens", "eval/loss"]),
    "rm": ("rm_tiny.yaml", ["loss/reward_model", "grad_norm", "train/pair_accuracy", "eval/pair_accuracy"]),
}


@pytest.mark.parametrize("command", sorted(CASES))
def test_two_ranks_match_one_process(tmp_path, tiny_model_path, command):
    config, keys = CASES[command]
    metrics = []
    for nproc in (1, 2):
        out = tmp_path / f"n{nproc}"
        args = [command, "--config", str(REPO_ROOT / "configs" / config), f"output_dir={out}"]
        run = run_rlft(nproc, [*args, "train.steps=4", "train.save_every=2", "train.eval_every=2"])
        assert run.returncode == 0, run.output[-4000:]
        metrics.append(read_metrics(out))
    assert sorted(metrics[1]) == [1, 2, 3, 4]
    assert_same_steps(metrics[0], metrics[1], keys, rel=1e-5)
