"""Chaos test: SIGKILL a tiny `rlft rl` / `rlft sft` run at random moments (every other kill forced
inside a checkpoint write), resume it after each kill, then let it finish and compare a hash of its
final weights with an uninterrupted run of the same config.

    .venv/bin/python bench/chaos.py --kind rl --kills 25      # a few minutes each on 2 cores
    .venv/bin/python bench/chaos.py --kind sft --kills 25

Kill moments cycle through: inside a save (RLFT_FAULT_SAVE_SLEEP_S widens the save window), at a
random point of the steps after a checkpoint, and during start-up. After every kill the newest
complete checkpoint must load. Exits 0 when the final weights (and the logged metrics, timings
aside) equal the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["log.progress=false", "log.tensorboard=false"]
COMMANDS = {
    "rl": ["rl", "--config", "configs/grpo_tiny.yaml", "eval.before=false", "eval.after=false", *QUIET],
    "sft": ["sft", "--config", "configs/sft_tiny.yaml", "train.eval_every=0", *QUIET],
}
KILL_MODES = ("save", "step", "save", "startup", "step")


@dataclass
class ChaosResult:
    reference_sha: str
    final_sha: str
    kills: int = 0
    torn_saves: int = 0  # kills that left a half-written temp dir behind
    resumed_from: list[int] = field(default_factory=list)  # newest complete step at each restart
    metrics_match: bool = False

    @property
    def identical(self) -> bool:
        return self.final_sha == self.reference_sha and self.metrics_match


def command(kind: str, out: Path, steps: int, save_every: int) -> list[str]:
    extra = [f"output_dir={out}", f"train.steps={steps}", f"train.save_every={save_every}"]
    return [sys.executable, "-m", "rlft", *COMMANDS[kind], *extra]


def run_env(save_sleep: float = 0.0) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if save_sleep > 0:
        env["RLFT_FAULT_SAVE_SLEEP_S"] = str(save_sleep)
    return env


def weights_sha(model_dir: Path) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) of the safetensors files, by name."""
    import torch
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def logged_metrics(out: Path) -> list[dict]:
    """metrics.jsonl without timings (perf/*), which differ between any two runs."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.startswith("perf/")} for x in lines]


def newest_step(ckpt_root: Path) -> int:
    from rlft.runtime.checkpoint import complete_checkpoints

    found = complete_checkpoints(ckpt_root)
    return found[-1][0] if found else 0


def assert_loadable(ckpt_root: Path) -> None:
    """The newest complete checkpoint reads back: weights, optimizer, RNG, trainer state."""
    import torch
    from safetensors.torch import load_file

    from rlft.runtime.checkpoint import latest_checkpoint

    path = latest_checkpoint(ckpt_root)
    if path is None:
        return
    load_file(path / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.load(path / name, weights_only=True)
    json.loads((path / "trainer_state.json").read_text())


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float) -> bool:
    """Poll until `condition` holds (True) or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.01)
    return False


def kill_once(cmd: list[str], out: Path, mode: str, rng: random.Random, save_sleep: float) -> bool | None:
    """Start (resuming), SIGKILL at a `mode` moment; True if the kill tore a save, None if the run
    finished first."""
    root = out / "checkpoints"
    start = newest_step(root)
    log = open(out.parent / f"{out.name}.log", "a")  # noqa: SIM115 (kept for the child)
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(save_sleep), stdout=log, stderr=log)
    if mode == "startup":
        time.sleep(rng.uniform(0.2, 3.0))
    elif wait_for(lambda: newest_step(root) > start, proc, 300):  # progress since the restart
        if mode == "save":
            wait_for(lambda: any(root.glob(".tmp-step-*")), proc, 60)
            time.sleep(rng.uniform(0.0, 3 * save_sleep))
        else:
            time.sleep(rng.uniform(0.0, 0.5))
    if proc.poll() is not None:
        log.close()
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    return any(root.glob(".tmp-step-*"))


def chaos(
    kind: str, out: Path, steps: int, save_every: int, kills: int, seed: int, save_sleep: float
) -> ChaosResult:
    """The uninterrupted reference in out/reference, then the killed and resumed run in out/chaos."""
    ref, run = out / "reference", out / "chaos"
    subprocess.run(
        command(kind, ref, steps, save_every), cwd=REPO, env=run_env(), check=True, capture_output=True
    )
    result = ChaosResult(weights_sha(ref / "final"), "")
    cmd = [*command(kind, run, steps, save_every), "--resume"]
    rng = random.Random(seed)
    run.mkdir(parents=True, exist_ok=True)
    for i in range(kills):
        result.resumed_from.append(newest_step(run / "checkpoints"))
        torn = kill_once(cmd, run, KILL_MODES[i % len(KILL_MODES)], rng, save_sleep)
        if torn is None:
            break
        result.kills += 1
        result.torn_saves += int(torn)
        assert_loadable(run / "checkpoints")
    result.resumed_from.append(newest_step(run / "checkpoints"))
    subprocess.run(cmd, cwd=REPO, env=run_env(), check=True, capture_output=True)
    result.final_sha = weights_sha(run / "final")
    result.metrics_match = logged_metrics(run) == logged_metrics(ref)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=sorted(COMMANDS), default="rl")
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--steps", type=int, default=0, help="default: 60 (rl), 80 (sft)")
    ap.add_argument("--save-every", type=int, default=2)
    ap.add_argument("--save-sleep", type=float, default=0.1, help="seconds paused after each file of a save")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/chaos")
    args = ap.parse_args()
    steps = args.steps or {"rl": 60, "sft": 80}[args.kind]
    t0 = time.perf_counter()
    out = Path(args.out).resolve() / args.kind
    r = chaos(args.kind, out, steps, args.save_every, args.kills, args.seed, args.save_sleep)
    print(
        f"[chaos] {args.kind}: {r.kills} SIGKILLs ({r.torn_saves} inside a checkpoint write), restarts "
        f"resumed from steps {r.resumed_from}; reference sha256 {r.reference_sha[:16]}, after kills "
        f"{r.final_sha[:16]}; metrics identical: {r.metrics_match}; identical: {r.identical} "
        f"({time.perf_counter() - t0:.0f}s)"
    )
    return 0 if r.identical else 1


if __name__ == "__main__":
    sys.exit(main())
