"""SIGTERM / SIGINT mid-run: the step finishes, a checkpoint is written, exit 0, resume continues;
a second SIGINT stops at once (exit 130) and the last complete checkpoint still loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.conftest import EXAMPLE_REWARDS, REPO_ROOT, TINY_CONFIG, tiny_rl_config

from rlft.models.load import load_causal_lm
from rlft.runtime.checkpoint import latest_checkpoint, load_checkpoint, rng_state, set_rng_state
from rlft.runtime.optim import make_optimizer


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


# A plugin reward that stalls the run in the middle of a step: its call number `after_calls + 1`
# writes a marker next to this file, then sleeps far longer than any test waits.
STALL_REWARD = """
import time
from pathlib import Path

_calls = 0


def stall(prompt, completion, example, after_calls=0):
    global _calls
    _calls += 1
    if _calls == after_calls + 1:
        Path(__file__).with_name("stalled").write_text(str(_calls))
        time.sleep(600)
    return float(len(completion))
"""


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_second_sigint_stops_at_once_and_the_last_checkpoint_loads(tmp_path, tiny_model_path):
    plugin = tmp_path / "stall_reward.py"
    plugin.write_text(STALL_REWARD)
    out, log_path = tmp_path / "run", tmp_path / "output.log"
    # 2 prompts x 2 samples = 4 reward calls per step: call 9 is the first of step 3, after
    # steps 1 and 2 are logged and checkpointed (save_every=1)
    args = [
        *_args(out, 5),
        "train.save_every=1",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=4",
        f"rewards=[{{fn: {plugin}:stall, kwargs: {{after_calls: 8}}}}]",
    ]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
        )
        try:
            assert _wait_for(lambda: (tmp_path / "stalled").exists() or proc.poll() is not None, 180)
            assert proc.poll() is None, log_path.read_text()  # stalled in step 3's rewards
            proc.send_signal(signal.SIGINT)
            # the first SIGINT only asks for a stop after the step: the run says so and goes on
            assert _wait_for(lambda: "SIGINT received: finishing this step" in log_path.read_text(), 30)
            time.sleep(1.0)
            assert proc.poll() is None, log_path.read_text()
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            returncode = proc.wait(timeout=60)  # TimeoutExpired: it did not stop at once
            stopped_in = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    # the second SIGINT interrupts the step at once (about 1 s here): the reward's 600 s sleep
    # is cut short
    assert returncode == 130, output
    assert stopped_in < 60, stopped_in
    assert "rlft: interrupted; resume with --resume" in output
    assert "stopped after step" not in output  # not the graceful path: step 3 never finished
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    ckpt_root = out / "checkpoints"
    assert latest_checkpoint(ckpt_root) == ckpt_root / "step-2"
    assert not list(ckpt_root.glob("*step-3*"))  # nothing of the interrupted step was written
    assert not (out / "final").exists()
    # the step-2 checkpoint loads as a resume loads it: weights, optimizer, scheduler, loop state
    cfg = tiny_rl_config(out)
    model = load_causal_lm(tiny_model_path)
    optimizer, scheduler = make_optimizer([{"params": list(model.parameters())}], cfg.train.optim, 5)
    rngs = rng_state()  # a load restores the run's RNG states: keep this process's
    try:
        state = load_checkpoint(
            ckpt_root / "step-2", model, optimizer, scheduler, None, {"algorithm": "grpo"}
        )
    finally:
        set_rng_state(rngs)
    # 2 steps x 2 prompts drawn from the built-in prompts; one optimizer step per RL step
    assert state["step"] == 2 and state["stream"] == {"epoch": 0, "index": 4}
    assert {int(s["step"]) for s in optimizer.state_dict()["state"].values()} == {2}
    assert scheduler.last_epoch == 2
