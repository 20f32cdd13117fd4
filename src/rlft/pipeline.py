"""`rlft pipeline`: run stages (sft, rm, rl, distill, dpo, eval) in order, each one's output
feeding the next, each as its own `python -m rlft <kind>` process in output_dir/<stage>.

A stage is complete when its outputs exist (summary.json + final/, or eval.json) and its
`.stage-complete` marker records the hash of its resolved config. The hash also covers the hashes
of the stages it reads from, so changing a stage reruns it and every later stage that (directly or
through others) reads from it; other stages are skipped. An interrupted stage with an unchanged
config continues from its newest checkpoint (`--resume`); a stage whose config changed starts
over in an emptied directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from rlft.config.loader import ConfigError, build, to_yaml
from rlft.config.pipeline import PipelineConfig, PlannedStage, plan_pipeline

log = logging.getLogger(__name__)
Runner = Callable[[list[str], Path], int]  # (argv, log file) -> exit code
STARTED, COMPLETE = ".stage-started", ".stage-complete"
METRICS = {  # kind -> dotted keys of summary.json (eval: eval.json), first present wins
    "sft": ("heldout.loss",),
    "rm": ("heldout.pair_accuracy",),
    "rl": ("eval.after.accuracy", "metrics.reward/mean"),
    "dpo": ("heldout.rewards_accuracy",),
    "distill": ("heldout.forward_kl", "heldout.loss"),
    "eval": ("accuracy",),
}


class StageFailed(RuntimeError):
    """A stage's process failed or stopped early (after `seconds`); later stages did not run."""

    def __init__(self, message: str, seconds: float = 0.0):
        super().__init__(message)
        self.seconds = seconds


def run_pipeline(cfg: PipelineConfig, runner: Runner | None = None) -> dict[str, Any]:
    """Validate the plan, run (or skip) each stage, print the summary table and write it to
    output_dir/pipeline_summary.json. Returns {"output_dir", "stages": [row per stage]};
    raises StageFailed (after writing the summary) when a stage fails."""
    plan = plan_pipeline(cfg)
    check_stage_configs(plan)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.yaml").write_text(to_yaml(cfg))
    _say(
        "plan: "
        + " -> ".join(f"{s.name} ({s.kind}{' <- ' + '+'.join(s.inputs) if s.inputs else ''})" for s in plan)
    )
    rows: list[dict[str, Any]] = []
    try:
        for stage in plan:
            rows.append(run_stage(stage, cfg.resume, runner or run_logged))
    except StageFailed as e:
        rows.append(_row(plan[len(rows)], "failed", e.seconds))
        rows += [_row(s, "not run", 0.0) for s in plan[len(rows) :]]
        raise
    finally:
        result = {"output_dir": str(out), "stages": rows}
        (out / "pipeline_summary.json").write_text(json.dumps(result, indent=1))
        print(format_table(rows), flush=True)
    return result


def check_stage_configs(plan: Sequence[PlannedStage]) -> None:
    """Checks `rlft <kind>` does only at start-up, done here so stage 3 fails before stage 1 runs."""
    from rlft.algorithms import get_algorithm
    from rlft.config.rl import RLConfig
    from rlft.rl.setup import batch_arithmetic

    for stage in (s for s in plan if s.kind == "rl"):
        cfg = build(RLConfig, stage.config)
        try:
            get_algorithm(cfg.algo.name).resolve(cfg.algo)
            batch_arithmetic(cfg)
        except (ConfigError, ValueError) as e:
            raise ConfigError(f"stage '{stage.name}': config/overrides: {e}") from None


def run_stage(stage: PlannedStage, resume: bool, runner: Runner) -> dict[str, Any]:
    """Skip the stage when complete with the same hash; else (re)run it and mark it complete."""
    done = _read_json(stage.dir / COMPLETE)
    if done and done.get("hash") == stage.hash and outputs_exist(stage):
        _say(f"stage '{stage.name}' ({stage.kind}): complete, config unchanged -> skipped")
        return _row(stage, "skipped", float(done.get("seconds", 0.0)))
    prepare_dir(stage, resume)
    (stage.dir / "stage.yaml").write_text(yaml.safe_dump(stage.config, sort_keys=False))
    (stage.dir / STARTED).write_text(json.dumps({"hash": stage.hash}))
    logfile = stage.dir / "stage.log"
    _say(f"stage '{stage.name}' ({stage.kind}): running; log {logfile}")
    start = time.perf_counter()
    code = runner(stage_argv(stage), logfile)
    seconds = time.perf_counter() - start
    if code != 0:
        raise StageFailed(
            f"stage '{stage.name}' ({stage.kind}) failed with exit code {code}; log: {logfile}", seconds
        )
    if not outputs_exist(stage):
        raise StageFailed(
            f"stage '{stage.name}' ({stage.kind}) exited 0 but did not finish (no {_outputs(stage)[0]}); "
            f"run the pipeline again to resume it; log: {logfile}",
            seconds,
        )
    (stage.dir / COMPLETE).write_text(json.dumps({"hash": stage.hash, "seconds": seconds}))
    return _row(stage, "ran", seconds)


def prepare_dir(stage: PlannedStage, resume: bool) -> None:
    """Keep the stage dir to resume an interrupted run with the same config; otherwise empty it."""
    d = stage.dir
    (d / COMPLETE).unlink(missing_ok=True)
    if not d.exists() or not any(d.iterdir()):
        d.mkdir(parents=True, exist_ok=True)
        return
    started = _read_json(d / STARTED)
    if started is None:
        raise ConfigError(
            f"stage '{stage.name}': {d} exists but was not written by rlft pipeline; "
            "remove it or choose another output_dir"
        )
    old = started.get("hash")
    if old == stage.hash and resume:
        _say(f"stage '{stage.name}': resuming the interrupted run from its newest checkpoint")
        return
    why = "resume=false" if old == stage.hash else f"config changed ({old} -> {stage.hash})"
    _say(f"stage '{stage.name}': {why}: rerunning from scratch in an emptied {d}")
    shutil.rmtree(d)
    d.mkdir(parents=True)


def stage_argv(stage: PlannedStage) -> list[str]:
    """The command that runs the stage: `python -m rlft <kind> --config stage.yaml --resume`, or
    `python -m rlft eval ...` for an eval stage."""
    base = [sys.executable, "-m", "rlft"]
    if stage.kind != "eval":
        sub = ["rm", "train"] if stage.kind == "rm" else [stage.kind]
        return [*base, *sub, "--config", str(stage.dir / "stage.yaml"), "--resume"]
    c = stage.config
    argv = [*base, "eval", "--model", c["model"], "--data", c["data"], "--samples", str(c["samples"])]
    argv += ["--max-new-tokens", str(c["max_new_tokens"]), "--seed", str(c["seed"])]
    argv += ["--prompt-field", c["prompt_field"], "--answer-field", c["answer_field"]]
    argv += ["--limit", str(c["limit"]), "--json", str(stage.dir / "eval.json")]
    if c["temperature"] is not None:
        argv += ["--temperature", str(c["temperature"])]
    if c["system_prompt"]:
        argv += ["--system-prompt", c["system_prompt"]]
    argv += ["--chat-template", c["chat_template"], "--pass-threshold", str(c["pass_threshold"])]
    if c["chat_template_kwargs"]:
        argv += ["--chat-template-kwargs", json.dumps(c["chat_template_kwargs"])]
    for reward in c["reward"]:
        argv += ["--reward", reward]
    return argv


def run_logged(argv: list[str], logfile: Path) -> int:
    """Run argv, streaming its stdout+stderr to logfile and to the console; returns its exit code.
    On Ctrl-C the child (same process group) stops gracefully; we wait for it, then re-raise."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    prefix = f"[{logfile.parent.name}] "
    with open(logfile, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                f.flush()
                sys.stdout.write(prefix + line)
                sys.stdout.flush()
        except KeyboardInterrupt:
            proc.wait()
            raise
        return proc.wait()


def outputs_exist(stage: PlannedStage) -> bool:
    return all((stage.dir / p).exists() for p in _outputs(stage))


def _outputs(stage: PlannedStage) -> tuple[str, ...]:
    return ("eval.json",) if stage.kind == "eval" else ("summary.json", "final")


def key_metric(stage: PlannedStage) -> tuple[str, float | None]:
    """(dotted key, value) of the stage's key metric (METRICS), or (first key, None)."""
    data = _read_json(stage.dir / _outputs(stage)[0]) or {}
    for key in METRICS[stage.kind]:
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            return key, float(node)
    return METRICS[stage.kind][0], None


def _row(stage: PlannedStage, status: str, seconds: float) -> dict[str, Any]:
    metric, value = key_metric(stage) if status in ("ran", "skipped") else (METRICS[stage.kind][0], None)
    output = stage.dir / ("eval.json" if stage.kind == "eval" else "final")
    return {
        "stage": stage.name,
        "kind": stage.kind,
        "status": status,
        "seconds": round(seconds, 2),
        "metric": metric,
        "value": value,
        "output": str(output),
        "hash": stage.hash,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary table: stage, kind, status, seconds (of the run that produced the outputs),
    key metric, output path."""
    header = ("stage", "kind", "status", "seconds", "key metric", "output")
    cells = [header] + [
        (
            r["stage"],
            r["kind"],
            r["status"],
            f"{r['seconds']:.1f}",
            f"{r['metric']} = {r['value']:.4f}" if r["value"] is not None else f"{r['metric']} = -",
            r["output"],
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells]
    return "\n".join(["[rlft] pipeline summary", *lines])


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _say(msg: str) -> None:
    print(f"[rlft pipeline] {msg}", flush=True)
