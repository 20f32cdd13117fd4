"""A tiny real run through `rlft rl` (alarms hook, best/worst samples), then `rlft report` on it,
compared with a synthetic run."""

from __future__ import annotations

import json
import re

from report_support import make_run

from rlft.telemetry.diagnostics import empty_answer_frac
from rlft.telemetry.metrics import read_jsonl_records

TINY = "configs/grpo_tiny.yaml"


def test_rl_run_logs_alarms_once_and_report_renders_it(cli, tmp_path, tiny_model_path):
    out = tmp_path / "tiny"
    args = ("rl", "--config", TINY, f"output_dir={out}", "eval.after=false", "log.samples_per_step=16")
    # zero_std_max 0: the zero-variance alarm fires at every step (any mean >= 0) from step 1 on
    p = cli(*args, "train.steps=2", "alarms.window=1", "alarms.zero_std_max=0")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("WARNING alarm zero_variance_groups at step 1:") == 1
    assert "WARNING alarm" not in p.stdout.replace("WARNING alarm zero_variance_groups at step 1:", "")
    # resume to step 3: the history is rebuilt from metrics.jsonl, so the ongoing alarm stays quiet
    p = cli(*args, "train.steps=3", "alarms.window=1", "alarms.zero_std_max=0", "--resume")
    assert p.returncode == 0, p.stderr
    assert "WARNING alarm" not in p.stdout
    (alarm,) = read_jsonl_records(out / "alarms.jsonl")
    assert (alarm["step"], alarm["alarm"], alarm["keys"]) == (
        1,
        "zero_variance_groups",
        ["rollout/zero_std_groups_frac"],
    )

    metrics, samples = read_jsonl_records(out / "metrics.jsonl"), read_jsonl_records(out / "samples.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        step = [s for s in samples if s["step"] == m["step"]]
        assert len(step) == 16  # the whole batch: 4 prompts x 4 samples
        assert m["rollout/empty_answer_frac"] == empty_answer_frac([s["completion"] for s in step])
        for g in range(4):
            group = [s for s in step if s["group"] == g]
            best, worst = ([s["score"] for s in group if s["tag"] == t] for t in ("best", "worst"))
            assert len(group) == 4 and len(best) == len(worst) == 1
            assert best[0] == max(s["score"] for s in group) and worst[0] == min(s["score"] for s in group)

    other = make_run(tmp_path, "synthetic")
    p = cli("report", str(out), "--compare", str(other))
    assert p.returncode == 0, p.stderr
    assert f"report written to {out / 'report.html'}" in p.stdout
    text = (out / "report.html").read_text(encoding="utf-8")
    pngs = sorted(f.stem for f in (out / "report").glob("*.png"))
    assert sorted(re.findall(r'<figure id="plot-([a-z_]+)"', text)) == pngs
    assert {"reward", "length", "kl", "entropy", "zero_std", "emergence"} <= set(pngs)
    assert "<td>tiny</td><td>zero_variance_groups</td><td>1-3</td>" in text
    before = json.loads((out / "eval_before.json").read_text())
    assert f"<td>tiny</td><td>before</td><td>{before['accuracy']:.4g}</td>" in text
    assert "rlft report: tiny vs synthetic" in text

    p = cli("report", str(tmp_path / "missing"))
    assert p.returncode == 2 and "rlft report: error: run directory not found" in p.stderr
