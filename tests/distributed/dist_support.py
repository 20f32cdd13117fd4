"""Helpers of the multi-process tests: the same `rlft` command on one process (plain python) or
on N under torchrun (gloo, localhost), and the per-step numbers two runs must agree on."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TINY_CONFIG = REPO_ROOT / "configs" / "grpo_tiny.yaml"
FAULTS = HERE / "fault_rewards.py"
EXAMPLE_REWARDS = REPO_ROOT / "examples" / "rewards.py"

# grpo_tiny with two optimizer steps per RL step (minibatches of 8 of the 16 sequences, drawn in
# a random order) and microbatches of 2: the global-batch bookkeeping has to be right, not only
# the single-minibatch case. A KL term to the reference model is on (kl_coef 0.04 in the file).
RL_OVERRIDES = [
    "train.steps=3",
    "train.save_every=2",
    "train.minibatch_size=8",
    "train.microbatch_size=2",
    "rollout.seed_per_prompt=true",
    "eval.before=false",
    "eval.after=false",
    "log.progress=false",
    "log.tensorboard=false",
    "dist.timeout_s=60",
]


@dataclass
class Run:
    returncode: int
    seconds: float
    output: str


def rlft_command(nproc: int, args: list[str], max_restarts: int = 0) -> list[str]:
    """`python -m rlft ...` on one process; under torchrun --standalone on several."""
    if nproc == 1:
        return [sys.executable, "-m", "rlft", *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, f"--max-restarts={max_restarts}", "-m", "rlft", *args]


def run_rlft(nproc: int, args: list[str], max_restarts: int = 0, timeout: float = 600) -> Run:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(
        rlft_command(nproc, args, max_restarts),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, time.monotonic() - start, proc.stdout + proc.stderr)


def run_rl(nproc: int, out: Path, *overrides: str, max_restarts: int = 0) -> Run:
    args = ["rl", "--config", str(TINY_CONFIG), f"output_dir={out}", *RL_OVERRIDES, *overrides]
    return run_rlft(nproc, args, max_restarts)


def read_metrics(out: Path) -> dict[int, dict]:
    """metrics.jsonl of a run, by step."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m for m in map(json.loads, lines)}


def assert_same_steps(a: dict[int, dict], b: dict[int, dict], keys: list[str], rel: float) -> None:
    """Both runs logged the same steps and, at every step where run `a` logged a key (eval/*
    keys: eval steps only), run `b` logged the same value within `rel` (relative: fp32 sums
    over a different split of the batch differ in the last bits), or within 1e-6 absolute: a
    policy loss of whitened advantages is a sum of terms of both signs near 0 (e.g. -0.0053203087
    vs -0.0053204391 for REINFORCE++, where chunked log-softmax kernels over 1 vs 2 ranks' row
    counts reduce in another order), so its relative error is no measure of agreement."""
    shared = sorted(set(a) & set(b))
    assert shared, "no step in common"
    for k in keys:
        steps = [s for s in shared if k in a[s]]
        assert steps, f"{k} never logged"
        for step in steps:
            x, y = a[step][k], b[step][k]
            assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-6), f"step {step} {k}: {x} vs {y}"
