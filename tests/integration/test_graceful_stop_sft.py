"""SIGTERM during `rlft sft` (the loop every supervised trainer shares): the step finishes, a
checkpoint of it is written, the process exits 0 saying how to resume, and --resume continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _args(out, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlft",
        "sft",
        "--config",
        str(REPO_ROOT / "configs" / "sft_tiny.yaml"),
        f"output_dir={out}",
        f"data.path={REPO_ROOT / 'examples' / 'sft_tiny.jsonl'}",
        f"train.steps={steps}",
        "train.save_every=0",
        "train.eval_every=0",
    ]


def test_sigterm_checkpoints_the_step_and_exits_zero(tmp_path, tiny_model_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _args(out, 100_000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "resume with: rlft sft ... --resume" in output
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    stopped = steps[-1]
    assert steps == list(range(1, stopped + 1)) and 2 <= stopped < 100_000
    state = json.loads((out / "checkpoints" / f"step-{stopped}" / "trainer_state.json").read_text())
    assert state["step"] == stopped and state["guard"] == {"consecutive": 0, "skipped": 0}
    assert not (out / "final").exists()
    done = subprocess.run([*_args(out, stopped + 1), "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == list(range(1, stopped + 2))
    assert (out / "final" / "config.json").exists()
