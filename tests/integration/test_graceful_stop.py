"""SIGTERM / SIGINT mid-run: the step finishes, a checkpoint is written, exit 0, resume continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.conftest import EXAMPLE_REWARDS, REPO_ROOT, TINY_CONFIG


def _args(out, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlft",
        "rl",
        "--config",
        str(TINY_CONFIG),
        f"output_dir={out}",
        f"train.steps={steps}",
        "train.save_every=0",
        "eval.before=false",
        "eval.after=false",
        "log.progress=false",
        "log.tensorboard=false",
        f"rewards=[{{fn: {EXAMPLE_REWARDS}:digit_density}}]",
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_and_exits_zero_then_resume_continues(tmp_path, tiny_model_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _args(out, 500),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "resume with" in output
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    stopped = steps[-1]
    assert 2 <= stopped < 500 and steps == list(range(1, stopped + 1))
    assert (out / "checkpoints" / f"step-{stopped}" / "COMPLETE").exists()  # the last step is saved
    assert not (out / "final").exists()  # a stopped run is not final
    done = subprocess.run(
        [*_args(out, stopped + 1), "--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(1, stopped + 2))  # exactly one more step, nothing redone
    assert (out / "final" / "config.json").exists()
