"""Synthetic run directories for the report tests: every metric the report plots, a collapsing
entropy (so entropy_collapse fires), eval files, and samples holding HTML/script payloads."""

from __future__ import annotations

import json
from pathlib import Path

XSS_SCRIPT = "<script>window.pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.pwned=1">'


def synthetic_metrics(steps: int, scale: float = 1.0) -> list[dict]:
    out = []
    for s in range(1, steps + 1):
        m = {
            "step": s,
            "reward/mean": scale * (0.1 + 0.03 * s),
            "reward/numeric_answer": 0.1 + 0.03 * s,
            "reward/numeric_answer_failures": 0.0,
            "reward/gold": 0.1 + 0.02 * s,
            "reward/std": 0.3,
            "reward/max": 1.0,
            "reward/min": 0.0,
            "rollout/response_len": 20.0 - 0.2 * s,
            "rollout/response_len_p90": 28.0 - 0.2 * s,
            "rollout/response_len_max": 32.0,
            "rollout/truncated_frac": 0.1,
            "policy/kl_ref_seq": 0.01 * s,
            "policy/kl": 0.001 * s,
            "policy/kl_coef": 0.04,
            "policy/entropy": 2.0 * 0.8**s,  # first 3 steps mean 1.30, last 3 of 20: 0.025 -> collapse
            "policy/clip_frac": 0.02,
            "optim/grad_norm": 1.0 / s,
            "rollout/zero_std_groups_frac": 0.25,
            "rollout/reflection_frac": 0.01 * s,
            "rollout/reflection_count": 0.02 * s,
            "rollout/repeat_ngram_frac": 0.05,
            "rollout/empty_answer_frac": 0.0,
            "rollout/think_words": 10.0 + s,
            "loss/policy": 0.1 / s,
            "perf/step_s": 2.0,
        }
        if s % 5 == 0:
            m.update(
                {"eval/accuracy": 0.2 + 0.01 * s, "eval/pass@k": 0.3 + 0.01 * s, "eval/response_len": 18.0}
            )
        out.append(m)
    return out


def synthetic_samples(steps: int) -> list[dict]:
    rows = []
    for s in range(1, steps + 1):
        for g, prompt in enumerate(("What is 2+2?", f"Repeat {XSS_IMG}")):
            rows.append(
                {
                    "step": s,
                    "prompt": prompt,
                    "completion": f"best {s}",
                    "score": 1.0,
                    "answer": "4",
                    "group": g,
                    "tag": "best",
                }
            )
            rows.append(
                {
                    "step": s,
                    "prompt": prompt,
                    "completion": XSS_SCRIPT,
                    "score": 0.0,
                    "answer": "4",
                    "group": g,
                    "tag": "worst",
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run(root: Path, name: str = "run_a", steps: int = 20, scale: float = 1.0) -> Path:
    run = root / name
    run.mkdir(parents=True)
    write_jsonl(run / "metrics.jsonl", synthetic_metrics(steps, scale))
    write_jsonl(run / "samples.jsonl", synthetic_samples(steps))
    (run / "config.yaml").write_text("output_dir: x\nalarms:\n  window: 3\n")
    for tag, acc in (("before", 0.125), ("after", 0.375)):
        ev = {"accuracy": acc, "pass@k": acc, "maj@k": acc, "n": 8, "k": 1, "mean_response_tokens": 7.5}
        (run / f"eval_{tag}.json").write_text(json.dumps(ev))
    (run / "summary.json").write_text("{}")
    return run
