"""`rlft bench`: run N RL steps of a config and report, per phase, median seconds; generated
tokens/s; whole-step model-FLOPs utilisation against a matmul peak measured before and after the
run (the higher); peak RSS.

Step 1 is a warm-up (allocator, first-call overheads) and is left out of the medians when N > 1.
Model FLOPs follow `rlft.telemetry.perf.step_flops` (2 N per token and no-grad pass, generation included;
6 N per trained token); MFU = sum of FLOPs / (sum of step seconds x peak FLOP/s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rlft.telemetry.perf import matmul_peak_flops, mfu, peak_device_memory_mib, peak_rss_mib

PEAK_REPEATS = 10  # matmuls per peak measurement, taken before and after the run
PHASES = ("generate", "reward", "old_logprobs", "ref_logprobs", "values", "update", "optimizer", "sync")


def checkpoints_written(steps: int, save_every: int) -> int:
    """Checkpoints train_rl writes in `steps` steps: every `save_every` steps and at the end."""
    return len([s for s in range(1, steps + 1) if (save_every and s % save_every == 0) or s == steps])


def summarize(
    records: list[dict[str, Any]], checkpoint_s: float, checkpoints: int, peak_flops: float, rss_mib: float
) -> dict[str, Any]:
    """The benchmark report from a run's metrics.jsonl records (one per step)."""
    steady = records[1:] if len(records) > 1 else records

    def median(key: str) -> float:
        return statistics.median(float(r.get(key, 0.0)) for r in steady)

    phases = {name: median(f"perf/{name}_s") for name in PHASES}
    phases["checkpoint"] = checkpoint_s / checkpoints if checkpoints else 0.0
    step_s = sum(float(r["perf/step_s"]) for r in steady)
    gen_s = sum(float(r["perf/generate_s"]) for r in steady)
    tokens = sum(float(r["perf/gen_tokens_per_s"]) * float(r["perf/generate_s"]) for r in steady)
    flops = sum(float(r["perf/model_flops"]) for r in steady)
    return {
        "steps": len(records),
        "steps_measured": len(steady),
        "median_s": phases,
        "median_step_s": median("perf/step_s"),
        "gen_tokens_per_s": tokens / gen_s if gen_s > 0 else 0.0,
        "gen_tokens_per_step_s": tokens / step_s if step_s > 0 else 0.0,
        "gen_tokens_per_step": tokens / len(steady),
        "model_flops_per_step": flops / len(steady),
        "peak_gflops": peak_flops / 1e9,
        "mfu": mfu(flops, step_s, peak_flops),
        "peak_rss_mib": rss_mib,
        "reward_mean": [r.get("reward/mean") for r in records],
    }


def matmul_peaks(size: int, dtype: Any, device: Any) -> dict[str, float]:
    """The matmul peak of each engine rlft can run this dtype/device on: aten's torch.mm, and
    oneDNN's for fp32 on a CPU that has it. MFU is reported against the best of them."""
    import torch

    from rlft.accel.onednn import onednn_linear_available

    peaks = {"aten": matmul_peak_flops(size, PEAK_REPEATS, dtype, device)}
    if device.type == "cpu" and dtype == torch.float32 and onednn_linear_available():
        peaks["onednn"] = matmul_peak_flops(size, PEAK_REPEATS, dtype, device, engine="onednn")
    return peaks


def _print_peaks(what: str, peaks: dict[str, float], size: int) -> None:
    print(
        f"[rlft bench] {what}: {max(peaks.values()) / 1e9:.1f} GFLOP/s (best of {PEAK_REPEATS} "
        f"{size}^3 matmuls; " + ", ".join(f"{name} {flops / 1e9:.1f}" for name, flops in peaks.items()) + ")"
    )


def run_bench(config: str, overrides: list[str], steps: int, output_dir: str | None = None) -> dict[str, Any]:
    """Measure the matmul peak, run `steps` RL steps of `config` (in a temporary directory unless
    `output_dir`), and summarize them."""
    import torch

    from rlft.config.loader import load_config
    from rlft.config.rl import RLConfig
    from rlft.models.load import resolve_device
    from rlft.rl.loop import train_rl
    from rlft.telemetry.metrics import read_jsonl_records

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    with tempfile.TemporaryDirectory(prefix="rlft-bench-") as tmp:
        out = Path(output_dir or tmp)
        cfg = load_config(
            RLConfig, config, [*overrides, f"train.steps={steps}", f"output_dir={out}", "resume=false"]
        )
        device = resolve_device(cfg.model.device)
        size = 8192 if device.type == "cuda" else 2048  # big enough to fill the device
        dtype = getattr(torch, cfg.model.dtype)
        before = matmul_peaks(size, dtype, device)
        _print_peaks(f"{cfg.model.dtype} matmul peak on {device} before the run", before, size)
        result = train_rl(cfg, peak_flops=max(before.values()))  # its step lines use this one
        records = read_jsonl_records(out / "metrics.jsonl")
    # measured again after the run, the best of both: a neighbour's burst during one measurement
    # would understate the peak, and so overstate MFU
    after = matmul_peaks(size, dtype, device)
    _print_peaks("matmul peak after the run", after, size)
    peaks = {name: max(before[name], after[name]) for name in before}
    peak = max(peaks.values())
    ckpt_s = result.get("phase_seconds", {}).get("checkpoint", 0.0)  # absent if stopped early
    report = summarize(
        records, ckpt_s, checkpoints_written(steps, cfg.train.save_every), peak, peak_rss_mib()
    )
    report.update(
        peak_gflops_by_engine={name: flops / 1e9 for name, flops in peaks.items()},
        peak_gflops_before_run=max(before.values()) / 1e9,  # what the per-step MFU lines used
        peak_gflops_after_run=max(after.values()) / 1e9,
        config=config,
        overrides=list(overrides),
        device=str(device),
        peak_device_memory_mib=peak_device_memory_mib(device),
        huge_page_tensors=os.environ.get("THP_MEM_ALLOC_ENABLE", "0") not in ("", "0"),
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"[rlft bench] {report['config']}: {report['steps']} steps, medians over the last "
        f"{report['steps_measured']} (step 1 is a warm-up when there are more)"
    ]
    for name, seconds in report["median_s"].items():
        lines.append(f"  {name:<14} {seconds:8.3f} s")
    lines += [
        f"  {'step':<14} {report['median_step_s']:8.3f} s",
        f"  generated tokens/s: {report['gen_tokens_per_s']:.1f} while generating, "
        f"{report['gen_tokens_per_step_s']:.1f} over the whole step "
        f"({report['gen_tokens_per_step']:.0f} tokens/step)",
        f"  model FLOPs/step: {report['model_flops_per_step'] / 1e12:.2f} TFLOP; "
        f"MFU {report['mfu']:.2%} of {report['peak_gflops']:.1f} GFLOP/s (the best engine's peak)",
        f"  peak RSS: {report['peak_rss_mib']:.0f} MiB (self + children)",
    ]
    if "huge_page_tensors" in report:
        on = report["huge_page_tensors"]
        lines.append(f"  tensors >= 2 MB on huge pages (THP_MEM_ALLOC_ENABLE): {'on' if on else 'off'}")
    if report.get("peak_device_memory_mib"):
        lines.append(
            f"  peak {report['device']} memory allocated: {report['peak_device_memory_mib']:.0f} MiB"
        )
    return "\n".join(lines)


def add_bench_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="time N RL steps of a config: phases, tokens/s, MFU, peak RSS")
    b.add_argument("--config", required=True, help="RL config (e.g. configs/bench_w.yaml)")
    b.add_argument("--steps", type=int, default=3, help="RL steps to run (step 1 is a warm-up)")
    b.add_argument("--json", dest="json_out", help="write the report as JSON here")
    b.add_argument("--output-dir", help="keep the run here (default: a temporary directory)")
    b.add_argument("overrides", nargs="*", help="dotted key=value overrides")


def cmd_bench(args: argparse.Namespace) -> int:
    report = run_bench(args.config, list(args.overrides), args.steps, args.output_dir)
    print(format_report(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
        print(f"[rlft bench] report written to {args.json_out}")
    return 0
