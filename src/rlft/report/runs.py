"""What a report reads from a run directory; safe on a run that is still writing its files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlft.config.loader import ConfigError, build, load_yaml
from rlft.config.rl import AlarmConfig
from rlft.telemetry.alarms import Alarm, scan_alarms
from rlft.telemetry.metrics import read_jsonl_records

EVAL_FILES = ("before", "after")  # eval_before.json, eval_after.json (written by `rlft rl`)


@dataclass
class RunData:
    name: str
    path: Path
    records: list[dict[str, Any]]  # metrics.jsonl, one per logged step
    samples: list[dict[str, Any]]  # samples.jsonl
    evals: dict[str, dict[str, Any]]  # "before"/"after" -> eval_*.json
    alarms: list[Alarm]
    finished: bool  # summary.json exists
    keys: list[str] = field(default_factory=list)  # every metric key logged, in first-seen order

    @property
    def last_step(self) -> int:
        return int(self.records[-1]["step"]) if self.records else 0


def alarm_config(run_dir: Path) -> AlarmConfig:
    """The `alarms:` section of the run's config.yaml (defaults when absent)."""
    path = run_dir / "config.yaml"
    section = (load_yaml(path).get("alarms") or {}) if path.exists() else {}
    try:
        return build(AlarmConfig, section, "alarms.")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _read_eval(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_steps(records: list[dict[str, Any]], path: Path) -> None:
    for number, r in enumerate(records, 1):
        if not isinstance(r.get("step"), int) or isinstance(r.get("step"), bool):
            raise ValueError(f"{path}: record {number} has no integer 'step' field: {str(r)[:80]}")


def load_run(run_dir: str | Path, name: str | None = None) -> RunData:
    """Everything the report shows about one run: metrics, samples, eval files, alarms."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory not found: {path}")
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {path} an rlft run directory?")
    records = read_jsonl_records(metrics_path)
    _check_steps(records, metrics_path)
    samples = read_jsonl_records(path / "samples.jsonl")
    _check_steps(samples, path / "samples.jsonl")
    evals = {tag: e for tag in EVAL_FILES if (e := _read_eval(path / f"eval_{tag}.json")) is not None}
    keys = list(dict.fromkeys(k for r in records for k in r if k != "step"))
    return RunData(
        name=name or path.resolve().name,
        path=path,
        records=records,
        samples=samples,
        evals=evals,
        alarms=scan_alarms(records, alarm_config(path)),
        finished=(path / "summary.json").exists(),
        keys=keys,
    )


def load_runs(run_dirs: list[str | Path]) -> list[RunData]:
    """The runs to report, named by their directory (parent/name when two names clash)."""
    paths = [Path(p) for p in run_dirs]
    names = [p.resolve().name for p in paths]
    clash = {n for n in names if names.count(n) > 1}
    return [
        load_run(p, f"{p.resolve().parent.name}/{n}" if n in clash else n)
        for p, n in zip(paths, names, strict=True)
    ]
