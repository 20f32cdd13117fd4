"""`rlft rl` on 1 process vs 2 (torchrun, gloo): the same per-step numbers for ddp and fsdp2, a
checkpoint written by 2 ranks resumes on 2 ranks and on 1, a dead or hung rank fails the job
within the collective timeout, and --max-restarts with resume=true finishes the run.

Why 2 ranks must match 1 process: each rank takes 2 of the step's 4 prompts with all 4 of their
samples, and every prompt samples from its own seed (rollout.seed_per_prompt), so the 16
sequences are the same. Advantages and loss weights are computed over the 16 rows of all ranks,
the loss is divided by the global token count, and gradients are summed over ranks: each
optimizer step sees the gradient one process computes from the same 8-sequence minibatch.
Only the order of floating-point sums differs, hence a relative tolerance of 1e-5.

Run alone with: pytest -m distributed tests/distributed
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from dist_support import EXAMPLE_REWARDS, FAULTS, assert_same_steps, read_metrics, run_rl

pytestmark = pytest.mark.distributed

KEYS = ["loss/policy", "optim/grad_norm", "reward/mean", "policy/kl", "rollout/response_len"]
# every sequence of a step in samples.jsonl (a rank logs the rows it generated: 8 of 16 on 2 ranks)
ALL_SAMPLES = "log.samples_per_step=16"


def _ok(run) -> None:
    assert run.returncode == 0, run.output[-4000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_path) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    _ok(run_rl(1, out, ALL_SAMPLES))
    return out


@pytest.fixture(scope="module")
def ddp_two(tmp_path_factory, tiny_model_path) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    _ok(run_rl(2, out, "dist.strategy=ddp", ALL_SAMPLES))
    return out


@pytest.fixture(scope="module")
def fsdp2_two(tmp_path_factory, tiny_model_path) -> Path:
    out = tmp_path_factory.mktemp("fsdp2") / "run"
    _ok(run_rl(2, out, "dist.strategy=fsdp2", ALL_SAMPLES))
    return out


def test_ddp_two_ranks_match_one_process(one_process, ddp_two):
    assert_same_steps(read_metrics(one_process), read_metrics(ddp_two), KEYS, rel=1e-5)
    assert sorted(read_metrics(ddp_two)) == [1, 2, 3]


def _samples(out: Path) -> dict[int, list[tuple]]:
    """samples.jsonl of a run (or of one rank), by step: (group, prompt, completion, score)."""
    by_step: dict[int, list[tuple]] = {}
    for rec in map(json.loads, (out / "samples.jsonl").read_text().splitlines()):
        by_step.setdefault(rec["step"], []).append(
            (rec["group"], rec["prompt"], rec["completion"], rec["score"])
        )
    return by_step


@pytest.mark.parametrize("two", ["ddp_two", "fsdp2_two"])
def test_rank_one_generates_and_scores_its_half_of_the_prompts(request, one_process, two):
    # each rank takes 2 of the step's 4 prompts with their 4 samples: rank 0 the prompts the
    # single process numbers 0 and 1, rank 1 those it numbers 2 and 3 (rank-local 0 and 1); with
    # per-prompt seeds rank 1 samples and scores exactly what the single process did for them
    out = request.getfixturevalue(two)
    single, rank0, rank1 = _samples(one_process), _samples(out), _samples(out / "ranks" / "rank-1")
    assert sorted(single) == sorted(rank0) == sorted(rank1) == [1, 2, 3]
    for step in (1, 2, 3):
        assert len(single[step]) == 16 and len(rank0[step]) == len(rank1[step]) == 8
        assert Counter(g for g, *_ in rank1[step]) == {0: 4, 1: 4}  # 2 prompts x 4 samples
        prompts0, prompts1 = {p for _, p, *_ in rank0[step]}, {p for _, p, *_ in rank1[step]}
        assert len(prompts1) == 2 and not prompts0 & prompts1  # its own prompts, not rank 0's
        # the two ranks' rows are the single process's 16, split by prompt
        assert Counter(rank0[step]) == Counter(s for s in single[step] if s[0] < 2)
        assert Counter((g + 2, *rest) for g, *rest in rank1[step]) == Counter(
            s for s in single[step] if s[0] >= 2
        )


def test_fsdp2_two_ranks_match_one_process(one_process, fsdp2_two):
    assert_same_steps(read_metrics(one_process), read_metrics(fsdp2_two), KEYS, rel=1e-5)
    # rank 1 logs the same reduced (global) metrics in ranks/rank-1; rank 0 alone writes out_dir
    assert read_metrics(fsdp2_two / "ranks" / "rank-1") == read_metrics(fsdp2_two)


@pytest.mark.parametrize(
    "algo",
    [
        # REINFORCE++ whitens returns over the whole batch: the 2 ranks must whiten over all
        # 16 rows (each rank's 8 alone would give other advantages)
        ["algo.name=reinforce_pp"],
        # PPO: critic values, GAE and whitening over the batch; value loss and policy loss in one
        # backward. The value head on the trunk has no dropout (a separate critic's classifier
        # dropout draws other masks on 2 ranks than on 1: equal in distribution only)
        ["algo.name=ppo", "algo.value.kind=head"],
    ],
    ids=["reinforce_pp", "ppo"],
)
def test_batch_wide_advantages_two_ranks_match_one_process(tmp_path, tiny_model_path, algo):
    runs = {n: tmp_path / f"n{n}" for n in (1, 2)}
    for n, out in runs.items():
        _ok(run_rl(n, out, *algo, "train.save_every=0"))
    keys = ["optim/grad_norm", "reward/mean", "loss/value" if "algo.name=ppo" in algo else "loss/policy"]
    assert_same_steps(read_metrics(runs[1]), read_metrics(runs[2]), keys, rel=1e-5)


def _resume_dir(source: Path, target: Path) -> Path:
    """A fresh output_dir holding only the step-2 checkpoint of `source`."""
    shutil.copytree(source / "checkpoints" / "step-2", target / "checkpoints" / "step-2")
    return target


def test_fsdp2_checkpoint_resumes_step_3_on_two_ranks_and_on_one(tmp_path, one_process, fsdp2_two):
    # same world size and strategy: step 3 repeats exactly what the uninterrupted run logged
    again = _resume_dir(fsdp2_two, tmp_path / "two")
    _ok(run_rl(2, again, "dist.strategy=fsdp2", "resume=true"))
    assert sorted(read_metrics(again)) == [3]
    assert_same_steps(read_metrics(fsdp2_two), read_metrics(again), KEYS, rel=1e-6)
    # the checkpoint has the one-process layout: a single process resumes it and logs the
    # one-process run's step 3
    single = _resume_dir(fsdp2_two, tmp_path / "one")
    _ok(run_rl(1, single, "resume=true"))
    assert_same_steps(read_metrics(one_process), read_metrics(single), KEYS, rel=1e-5)


def _faulty(kind: str, after_calls: int) -> str:
    # grpo_tiny's two rewards, plus the fault with weight 0 (the scores stay those of the other
    # runs). Rank 1 scores 2 prompts x 4 samples = 8 completions per step, so after_calls=8
    # fails in step 2, 16 in step 3.
    fault = f"{{fn: {FAULTS}:{kind}, weight: 0, kwargs: {{after_calls: {after_calls}}}}}"
    digits = f"{{fn: {EXAMPLE_REWARDS}:digit_density, weight: 0.5}}"
    return f"rewards=[{{fn: numeric_answer}}, {digits}, {fault}]"


def test_killed_rank_fails_the_job_quickly(tmp_path):
    run = run_rl(2, tmp_path / "run", _faulty("die", 8), "dist.timeout_s=30")
    assert run.returncode != 0
    # gloo sees the closed connection at once: no need to wait for the 30 s timeout; 60 s cover
    # start-up and two steps on a busy 2-core machine
    assert run.seconds < 60 + 30, run.seconds
    assert "SIGKILL" in run.output or "Signal 9" in run.output


def test_hung_rank_fails_the_job_within_the_timeout(tmp_path):
    run = run_rl(2, tmp_path / "run", _faulty("hang", 8), "dist.timeout_s=15")
    assert run.returncode != 0
    assert "Timed out" in run.output  # rank 0's collective gave up after dist.timeout_s
    # bound: timeout (15 s) + torchrun's 30 s grace before it SIGKILLs the hung rank + 60 s
    assert run.seconds < 15 + 30 + 60, run.seconds


def test_max_restarts_resumes_and_finishes(tmp_path, ddp_two):
    # attempt 0 checkpoints steps 1 and 2, then rank 1 dies in step 3; torchrun restarts both
    # ranks, which resume from step-2 (resume=true) and finish: the log is the uninterrupted run's
    out = tmp_path / "run"
    run = run_rl(2, out, _faulty("die", 16), "train.save_every=1", "resume=true", max_restarts=1)
    _ok(run)
    assert "resumed from" in run.output
    assert sorted(read_metrics(out)) == [1, 2, 3]
    assert_same_steps(read_metrics(ddp_two), read_metrics(out), KEYS, rel=1e-6)
