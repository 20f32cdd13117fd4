"""Compare RL algorithms on the default arithmetic task with the same sampling budget.

Runs each algorithm (a fresh process per run, so peak RSS is per algorithm), then writes
docs/algorithms.md (table: held-out greedy accuracy before/after, wall time, peak RSS) and
docs/algorithms_reward.png (training reward curves).

    .venv/bin/python bench/compare_algorithms.py --steps 15 --out runs/compare
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

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

    docs = Path("docs")
    docs.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(range(1, len(r["rewards"]) + 1), r["rewards"], label=r["name"])
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean training reward")
    ax.set_title(f"{args.prompts} prompts x {args.samples} samples per step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "algorithms_reward.png", dpi=100)
    base = "n/a" if base_acc is None else f"{base_acc:.1%}"
    lines = [
        f"Budget: {args.steps} steps x {args.prompts} prompts x {args.samples} samples; held-out greedy "
        f"accuracy on {args.eval_limit} problems; base model {base}.",
        "",
        "| algorithm | held-out after | train wall (s) | run wall (s) | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['after']:.1%} | {r['train_s']:.0f} | {r['wall_s']:.0f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    (docs / "algorithms.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
