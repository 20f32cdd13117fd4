"""Compare RL algorithms on the default arithmetic task with the same sampling budget.

Runs each algorithm (a fresh process per run, so peak RSS is per algorithm), then writes a dated
results page, docs/results/YYYY-MM-DD-algorithms.md (table: held-out greedy accuracy after, wall
time, peak RSS; the commit, machine and command), and its training reward curves beside it,
YYYY-MM-DD-algorithms-reward.png (docs/results/README.md: one page per measurement, never
overwritten; a second run on the same day gets -2, -3, ...). Add the page to the README's table
there, with the caveats of the run.

    .venv/bin/python bench/compare_algorithms.py --steps 15 --out runs/compare
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

RUNS = {
    "grpo": [],
    "dr_grpo": [],
    "dapo": [],
    "rloo": [],
    "ppo": ["algo.kl_coef=0.02", "algo.value.kind=head", "algo.value.lr=1e-4"],
    "trpo": ["algo.trpo.max_kl=0.02", "algo.trpo.fvp_fraction=0.25", "algo.trpo.cg_iters=8"],
}


def run_one(name: str, extra: list[str], args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    cmd = [
        sys.executable,
        "-m",
        "rlft",
        "rl",
        "--config",
        args.config,
        f"output_dir={out}",
        f"algo.name={name}",
        f"train.steps={args.steps}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.samples_per_prompt={args.samples}",
        f"eval.limit={args.eval_limit}",
        "log.progress=false",
        f"eval.before={'true' if name == 'grpo' else 'false'}",
        "train.save_every=0",
        *extra,
        *args.overrides,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "name": name,
        "wall_s": wall,
        "train_s": summary["phase_seconds"].get("train", 0.0),
        "peak_rss_mib": summary["peak_rss_mib"],
        "after": summary["eval"]["after"]["accuracy"],
        "rewards": [m["reward/mean"] for m in metrics],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--eval-limit", type=int, default=100)
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--only", nargs="*", default=list(RUNS))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    results = [run_one(n, RUNS[n], args) for n in args.only]
    base = json.loads((Path(args.out) / "grpo" / "summary.json").read_text())["eval"].get("before", {})
    write_report(results, base.get("accuracy"), args)


def write_report(results: list[dict], base_acc: float | None, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    page, curves = dated_paths(RESULTS, "algorithms")
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(range(1, len(r["rewards"]) + 1), r["rewards"], label=r["name"])
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean training reward")
    ax.set_title(f"{args.prompts} prompts x {args.samples} samples per step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(curves, dpi=100)
    base = "n/a" if base_acc is None else f"{base_acc:.1%}"
    command = shlex.join([".venv/bin/python", "bench/compare_algorithms.py", *sys.argv[1:]])
    lines = [
        f"# Algorithms side by side on the demo task ({page.stem[:10]})",
        "",
        f"Budget: {args.steps} steps x {args.prompts} prompts x {args.samples} samples; held-out greedy "
        f"accuracy on {args.eval_limit} problems; base model {base}. Commit `{_commit()}`; "
        f"{platform.machine()}, {os.cpu_count()} CPUs. Topic page: [../algorithms.md](../algorithms.md).",
        "",
        "Reproduce:",
        "",
        "```bash",
        command,
        "```",
        "",
        "| algorithm | held-out after | train wall (s) | run wall (s) | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['after']:.1%} | {r['train_s']:.0f} | {r['wall_s']:.0f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    lines += ["", f"![training reward per algorithm]({curves.name})"]
    page.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {page} and {curves}; list the page in {RESULTS / 'README.md'}")


def dated_paths(results: Path, topic: str) -> tuple[Path, Path]:
    """(page, curves) for today under `results`: DATE-topic.md and DATE-topic-reward.png, with
    -2, -3, ... after the topic when a page of that name is already there (never overwritten)."""
    results.mkdir(parents=True, exist_ok=True)
    stem, n = f"{datetime.date.today().isoformat()}-{topic}", 1
    while (results / f"{stem}{'' if n == 1 else f'-{n}'}.md").exists():
        n += 1
    stem += "" if n == 1 else f"-{n}"
    return results / f"{stem}.md", results / f"{stem}-reward.png"


def _commit() -> str:
    """The short hash of the checked-out commit (with -dirty when the tree has changes), or
    "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=RESULTS.parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


if __name__ == "__main__":
    main()
