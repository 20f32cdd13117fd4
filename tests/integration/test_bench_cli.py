"""`rlft bench` on the tiny GRPO config: phase split, medians over steps 2..N, MFU, JSON report."""

from __future__ import annotations

import json
import statistics

import pytest

PHASES = ("generate", "reward", "old_logprobs", "ref_logprobs", "values", "update", "optimizer", "sync")


def test_bench_reports_medians_of_the_logged_phases(cli, tmp_path, tiny_model_path):
    out, report_path = tmp_path / "run", tmp_path / "bench.json"
    p = cli(
        "bench",
        "--config",
        "configs/grpo_tiny.yaml",
        "--steps",
        "3",
        "--json",
        str(report_path),
        "--output-dir",
        str(out),
        "eval.before=false",
        "eval.after=false",
    )
    assert p.returncode == 0, p.stderr
    assert "float32 matmul peak on cpu" in p.stdout and "MFU" in p.stdout
    assert "step 3: " in p.stderr  # the one-line throughput summary of each step (INFO log)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    report = json.loads(report_path.read_text())
    peak = report["peak_gflops"] * 1e9  # the higher of the peaks measured before and after the run
    before, after = report["peak_gflops_before_run"] * 1e9, report["peak_gflops_after_run"] * 1e9
    assert peak == max(before, after)
    for m in metrics:
        # the phases partition the step: generate and reward split, optimizer split from update
        assert sum(m[f"perf/{k}_s"] for k in PHASES) == pytest.approx(m["perf/step_s"], rel=1e-9)
        assert m["perf/generate_and_reward_s"] == pytest.approx(m["perf/generate_s"] + m["perf/reward_s"])
        assert m["perf/optimizer_s"] > 0 and m["perf/update_s"] > 0 and m["perf/reward_s"] > 0
        assert m["perf/old_logprobs_s"] < m["perf/ref_logprobs_s"]  # one pass: no old-policy forward
        assert m["perf/mfu"] == pytest.approx(m["perf/model_flops"] / m["perf/step_s"] / before)
    assert (report["steps"], report["steps_measured"]) == (3, 2)
    for k in PHASES:  # median of steps 2 and 3 = their mean; step 1 (warm-up) left out
        assert report["median_s"][k] == pytest.approx(statistics.mean(m[f"perf/{k}_s"] for m in metrics[1:]))
    flops = sum(m["perf/model_flops"] for m in metrics[1:])
    step_s = sum(m["perf/step_s"] for m in metrics[1:])
    assert report["mfu"] == pytest.approx(flops / step_s / peak)
    assert report["median_s"]["checkpoint"] > 0  # save_every 2 in 3 steps: steps 2 and 3
    assert report["peak_rss_mib"] > 0
