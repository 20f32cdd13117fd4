"""Throughput of `rlft rl` on one process vs two (torchrun --standalone, gloo; ddp and fsdp2).

    .venv/bin/python bench/distributed_bench.py                 # grpo_tiny, 8 steps per setting
    .venv/bin/python bench/distributed_bench.py --steps 12 rollout.prompts_per_step=8
    python bench/distributed_bench.py --settings 1x8:ddp,2x8:ddp model.device=cuda  # on a GPU node

Every setting runs the same command and config (extra key=value overrides apply to all), with
per-prompt sampling seeds so all settings train on the same samples. Printed per setting:
steady-state RL steps/s and sequences/s (from perf/step_s of steps 2..N; step 1 warms up), and
the wall time of the whole command (process start-up, imports and model load included). The
one-process run is shown with 1 and with 2 threads, since the two-process runs use 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SETTINGS = "1x1:ddp,1x2:ddp,2x1:ddp,2x1:fsdp2"  # processes x threads each : strategy


def parse_settings(spec: str) -> list[tuple[str, int, int, str]]:
    """'2x1:ddp,...' -> [(name, processes, threads per process, strategy), ...]."""
    out = []
    for item in spec.split(","):
        shape, strategy = item.split(":")
        nproc, threads = (int(x) for x in shape.split("x"))
        name = f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thr, {strategy}"
        out.append((name, nproc, threads, strategy))
    return out


def command(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "rlft", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "rlft",
        *args,
    ]


def run_setting(nproc: int, threads: int, strategy: str, steps: int, extra: list[str], out: Path) -> dict:
    args = ["rl", "--config", str(REPO / "configs" / "grpo_tiny.yaml"), f"output_dir={out}"]
    args += [f"train.steps={steps}", "train.save_every=0", "eval.before=false", "eval.after=false"]
    args += ["log.progress=false", "log.tensorboard=false", "rollout.seed_per_prompt=true"]
    args += [f"dist.strategy={strategy}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(command(nproc, args), cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:  # reported, and the other settings still run
        return {"error": proc.stderr[-3000:], "wall_s": wall}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    config = (out / "config.yaml").read_text()
    step_s = statistics.median(r["perf/step_s"] for r in rows[1:])
    return {"step_s": step_s, "wall_s": wall, "sequences": _sequences(config)}


def _sequences(config_yaml: str) -> int:
    import yaml

    rollout = yaml.safe_load(config_yaml)["rollout"]
    return rollout["prompts_per_step"] * rollout["samples_per_prompt"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="e.g. 1x2:ddp,2x1:fsdp2")
    parser.add_argument("--json", dest="json_out", help="write the rows as JSON here")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every setting")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'setting':28} {'steps/s':>8} {'seq/s':>8} {'step s':>8} {'wall s':>8}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, nproc, threads, strategy) in enumerate(parse_settings(args.settings)):
            r = run_setting(nproc, threads, strategy, args.steps, args.overrides, Path(tmp) / str(i))
            results.append({"setting": name, **r})
            if "error" in r:
                print(f"{name:28} FAILED after {r['wall_s']:.0f} s:\n{r['error']}")
                continue
            rate = 1.0 / r["step_s"]
            print(f"{name:28} {rate:8.2f} {rate * r['sequences']:8.1f} {r['step_s']:8.3f} {r['wall_s']:8.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"overrides": args.overrides, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
