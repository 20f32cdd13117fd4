"""Workload W side by side: TRL's GRPOTrainer and `rlft bench --config configs/bench_w.yaml`,
interleaved (TRL, rlft, TRL, rlft, ...) on one machine, so both see the same load. Prints
per-phase medians of each and the ratio; writes everything as JSON.

    .venv/bin/python bench/vs_trl.py --trl-python "$TRL_VENV/bin/python" \\
        --trl-script "$TRL_SCRIPT" --smol-dir "$SMOL_FP32" --steps 6 --rounds 2 --out runs/vs_trl

The TRL side is not part of rlft: a venv with TRL 1.16 (TRL_VENV), an fp32 Hugging Face copy of
SmolLM2-135M-Instruct (SMOL_FP32), and a script (TRL_SCRIPT) that runs GRPOTrainer on the
workload of configs/bench_w.yaml. The script is called as `SCRIPT --steps N --out DIR --tag TAG
--work-dir DIR` with SMOL_DIR set to the model, and must write DIR/summary_TAG.json holding
`peak_rss_process_MiB` and `steady_state_steps_2_to_n`: per-phase {"median": seconds} for the TRL
keys in PHASES below, plus `wall_s`, `tokens_per_s_generate` and `others_cpu_frac`. Nothing else
should run meanwhile: the load average before and after each run is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# phase: (TRL summary keys summed, rlft bench median_s key)
PHASES = {
    "generate": (["generate_s"], "generate"),
    "reward": (["reward_fn_s"], "reward"),
    "reference logprobs": (["ref_logps_s"], "ref_logprobs"),
    "policy forward + backward": (["compute_loss_s", "backward_etc_s"], "update"),
    "optimizer": (["optimizer_step_s"], "optimizer"),
}


def run(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def trl_round(args: argparse.Namespace, out: Path, tag: str) -> dict:
    env = {**os.environ, "SMOL_DIR": args.smol_dir, "OMP_NUM_THREADS": args.threads, "HF_HUB_OFFLINE": "1"}
    script = str(Path(args.trl_script).resolve())
    cmd = [args.trl_python, script, "--steps", str(args.steps), "--out", str(out), "--tag", tag]
    cmd += ["--work-dir", "/tmp/trl_grpo_work"]
    run(cmd, env, out / f"trl_{tag}.log", Path("/tmp"))
    s = json.loads((out / f"summary_{tag}.json").read_text())
    steady = s["steady_state_steps_2_to_n"]
    phases = {name: sum(steady[k]["median"] for k in keys) for name, (keys, _) in PHASES.items()}
    return {
        "phases": phases,
        "step_s": steady["wall_s"]["median"],
        "gen_tokens_per_s": steady["tokens_per_s_generate"]["median"],
        "peak_rss_mib": s["peak_rss_process_MiB"],
        "others_cpu_frac": steady["others_cpu_frac"]["median"],
    }


def rlft_round(args: argparse.Namespace, out: Path, tag: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": args.threads, "HF_HUB_OFFLINE": "1"}
    report_path = out / f"rlft_{tag}.json"
    cmd = [str(REPO / ".venv" / "bin" / "rlft"), "bench", "--config", "configs/bench_w.yaml"]
    cmd += ["--steps", str(args.steps), "--json", str(report_path), *args.overrides]
    run(cmd, env, out / f"rlft_{tag}.log", REPO)
    r = json.loads(report_path.read_text())
    phases = {name: r["median_s"][key] for name, (_, key) in PHASES.items()}
    return {
        "phases": phases,
        "step_s": r["median_step_s"],
        "gen_tokens_per_s": r["gen_tokens_per_s"],
        "peak_rss_mib": r["peak_rss_mib"],
        "mfu": r["mfu"],
        "peak_gflops": r["peak_gflops"],
    }


def median_of(rows: list[dict], key: str, phase: str | None = None) -> float:
    return statistics.median(r["phases"][phase] if phase else r[key] for r in rows)


def table(results: dict[str, list[dict]]) -> str:
    trl, ours = results["trl"], results["rlft"]
    lines = ["| phase (median s) | TRL 1.16 | rlft | rlft / TRL |", "|---|---:|---:|---:|"]
    for name in PHASES:
        a, b = median_of(trl, "", name), median_of(ours, "", name)
        lines.append(
            f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |" if a else f"| {name} | {a:.3f} | {b:.3f} | |"
        )
    for label, key in [
        ("step", "step_s"),
        ("gen tokens/s", "gen_tokens_per_s"),
        ("peak RSS MiB", "peak_rss_mib"),
    ]:
        a, b = median_of(trl, key), median_of(ours, key)
        lines.append(f"| {label} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trl-python", required=True)
    ap.add_argument("--trl-script", required=True, help="the TRL side's GRPOTrainer script (see above)")
    ap.add_argument("--smol-dir", required=True, help="SmolLM2-135M-Instruct converted for TRL")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", default="runs/vs_trl")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for the rlft side")
    args = ap.parse_args()
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {"trl": [], "rlft": []}
    for r in range(args.rounds):
        for name, fn in (("trl", trl_round), ("rlft", rlft_round)):
            load = os.getloadavg()[0]
            row = fn(args, out, f"r{r}")
            row["load_before"], row["load_after"] = load, os.getloadavg()[0]
            results[name].append(row)
            print(f"round {r} {name}: step {row['step_s']:.1f} s, load {load:.1f} -> {row['load_after']:.1f}")
            (out / "vs_trl.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
