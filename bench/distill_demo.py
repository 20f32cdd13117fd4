"""Distil an RL-trained SmolLM2-135M teacher into a student with half its layers, on this CPU.

Stages (each skipped when its output exists, so a rerun continues):
1. eval the base model and the teacher on the held-out arithmetic set (greedy, fresh process);
2. traces: the teacher samples N answers per training prompt, `numeric_answer` keeps right ones,
   and the student (every other layer of the teacher, 16 of 30) is fine-tuned on them (SFT);
3. logit distillation of a fresh half-depth student on the same traces (forward KL to the
   teacher's full next-token distributions);
4. on-policy distillation (GKD) of the traces+SFT student: it samples its own answers to fresh
   training prompts and matches the teacher's next-token distributions on them;
5. more traces: the teacher answers --more-prompts other training prompts greedily, and the
   traces+SFT student is fine-tuned on the right answers for --more-steps steps;
6. eval the student before training and after each recipe; report the fraction of the teacher's
   gain over the base model that each student keeps.

    .venv/bin/python bench/distill_demo.py --teacher runs/demo/final [--out runs/distill_demo]
    # docs/results/2026-12-04-distillation.md: the best contiguous 16 of 30 layers, 2000 + 3000 prompts
    .venv/bin/python bench/distill_demo.py --layers auto --prompts 2000 --steps 250 \
        --recipes traces_sft,on_policy,more_traces traces.n_samples=2 traces.keep_per_prompt=2 \
        train.optim.lr=1.0e-4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RLFT = str(REPO / ".venv" / "bin" / "rlft")


def run(cmd: list[str], log: Path) -> float:
    print("[run]", " ".join(cmd), flush=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def evaluate(model: str, heldout: Path, out: Path, seconds: dict[str, float], tag: str) -> float:
    if not out.exists():
        cmd = [
            RLFT,
            "eval",
            "--model",
            model,
            "--data",
            str(heldout),
            "--max-new-tokens",
            "64",
            "--json",
            str(out),
        ]
        seconds[f"eval_{tag}"] = run(cmd, out.with_suffix(".log"))
    return json.loads(out.read_text())["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="runs/demo/final", help="RL-trained teacher (HF dir)")
    ap.add_argument("--heldout", default="", help="held-out JSONL (default: <teacher>/../heldout.jsonl)")
    ap.add_argument("--out", default="runs/distill_demo")
    ap.add_argument("--prompts", type=int, default=400, help="training prompts the teacher answers")
    ap.add_argument("--steps", type=int, default=80, help="optimizer steps of each student recipe")
    ap.add_argument("--layers", default="auto", help="student_layers: auto (best block), every_other, ...")
    ap.add_argument("--recipes", default="traces_sft,logit_kd", help="traces_sft, logit_kd, on_policy")
    ap.add_argument("--on-policy-steps", type=int, default=100, help="steps of the on_policy recipe")
    ap.add_argument("--more-prompts", type=int, default=3000, help="prompts of the more_traces recipe")
    ap.add_argument("--more-steps", type=int, default=120, help="SFT steps of the more_traces recipe")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for both recipes")
    args = ap.parse_args()
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    teacher = str((REPO / args.teacher).resolve())
    heldout = Path(args.heldout) if args.heldout else Path(teacher).parent / "heldout.jsonl"
    seconds: dict[str, float] = {}
    acc = {
        "base": evaluate("smollm2-135m-instruct", heldout, out / "eval_base.json", seconds, "base"),
        "teacher": evaluate(teacher, heldout, out / "eval_teacher.json", seconds, "teacher"),
    }
    common = [f"teacher={teacher}", f"student_layers={args.layers}", f"train.steps={args.steps}"]
    common += ["resume=true", *args.overrides]
    traces_dir = out / "traces_sft"
    from_sft = [f"teacher={teacher}", "student_layers=", f"student.path={traces_dir / 'final'}"]
    from_sft += ["resume=true"]
    stages = {  # recipe: (eval tag, `rlft distill` arguments); traces_sft always runs (others need it)
        "traces_sft": ("sft", ["mode=traces", f"data.num_prompts={args.prompts}", *common]),
        "logit_kd": ("kd", ["mode=offline", f"data.path={traces_dir / 'traces.jsonl'}", *common]),
        "on_policy": ("op", ["mode=on_policy", *from_sft, f"train.steps={args.on_policy_steps}",
                             "train.optim.lr=2.0e-5", "train.optim.warmup_steps=0",
                             "on_policy.max_new_tokens=24", "train.eval_every=25", "train.save_every=25"]),
        "more_traces": ("more", ["mode=traces", *from_sft, f"data.num_prompts={args.more_prompts}",
                                 "seed=1", "traces.n_samples=1", "traces.temperature=0.0",
                                 "traces.keep_per_prompt=1", f"train.steps={args.more_steps}",
                                 "train.optim.lr=5.0e-5", "train.optim.warmup_steps=0"]),
    }  # fmt: skip
    recipes = ["traces_sft", *args.recipes.split(",")]
    for name, (_, stage_args) in stages.items():
        if name in recipes and not (out / name / "final").exists():
            cmd = [RLFT, "distill", "--config", "configs/distill_smollm2.yaml", f"output_dir={out / name}"]
            seconds[name] = run([*cmd, *stage_args], out / f"{name}.log")
    acc["student_before"] = evaluate(
        str(traces_dir / "student-init"), heldout, out / "eval_student0.json", seconds, "s0"
    )
    for name, (tag, _) in stages.items():
        if (out / name / "final").exists():
            acc[f"student_{name}"] = evaluate(
                str(out / name / "final"), heldout, out / f"eval_{tag}.json", seconds, tag
            )
    gain = acc["teacher"] - acc["base"]
    trained = [f"student_{name}" for name in stages if f"student_{name}" in acc]
    # kept: the student's gain over the base model as a share of the teacher's (the strict reading);
    # recovered: its gain over its own untrained start, as a share of the teacher's gain
    kept = {k: (acc[k] - acc["base"]) / gain if gain else float("nan") for k in trained}
    recovered = {k: (acc[k] - acc["student_before"]) / gain if gain else float("nan") for k in trained}
    report = {"accuracy": acc, "gain_kept": kept, "gain_recovered": recovered,
              "seconds_this_invocation": seconds,
              "traces": json.loads((traces_dir / "traces_stats.json").read_text())}  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
