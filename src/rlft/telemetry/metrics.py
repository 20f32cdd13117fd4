"""Run logging: metrics.jsonl, samples.jsonl, TensorBoard and a progress bar with ETA."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlft.config.common import LogConfig
from rlft.telemetry.backends import MetricsBackend, TensorBoardBackend, open_backends

log = logging.getLogger(__name__)


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop lines logged after `last_step` (a resumed run re-does those steps)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    path.write_text("".join(k + "\n" for k in kept))


def _tensorboard_or_nothing(out_dir: Path, start_step: int) -> list[MetricsBackend]:
    try:
        return [TensorBoardBackend(out_dir, start_step)]
    except ImportError:
        log.warning("tensorboard is not installed; skipping TensorBoard logging")
        return []


def read_jsonl_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file written line by line by a run that may still be running: a
    cut-short last line is dropped; any other bad line is a ValueError naming file and line."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                break  # being written right now
            raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """metrics.jsonl, samples.jsonl and alarms.jsonl in out_dir, the given metric backends
    (`for_config` opens those a run's log config names) and a progress bar."""

    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        desc: str = "rl",
        backends: Sequence[MetricsBackend] = (),
    ):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / "metrics.jsonl"
        self.samples_path = out_dir / "samples.jsonl"
        self.alarms_path = out_dir / "alarms.jsonl"
        for path in (self.metrics_path, self.samples_path, self.alarms_path):
            _truncate_jsonl(path, start_step)
        self.backends = list(backends)
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    @classmethod
    def for_config(
        cls,
        out_dir: Path,
        log_cfg: LogConfig,
        total_steps: int,
        start_step: int = 0,
        desc: str = "rl",
        run_config: Mapping[str, Any] | None = None,
    ) -> RunLogger:
        """A logger with the backends of `log_cfg` (log.tensorboard=false drops TensorBoard)."""
        names = [b for b in log_cfg.backends if log_cfg.tensorboard or b != "tensorboard"]
        if "tensorboard" in names:
            names.remove("tensorboard")
            backends = _tensorboard_or_nothing(out_dir, start_step)
        else:
            backends = []
        backends += open_backends(names, out_dir, start_step, log_cfg.project, run_config)
        return cls(out_dir, total_steps, start_step, progress=log_cfg.progress, desc=desc, backends=backends)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        for backend in self.backends:
            backend.log_scalars(step, scalars)
        if self.bar is not None:
            self.bar.update(1)
            labels = {
                "reward/mean": "reward",
                "rollout/response_len": "len",
                "perf/step_s": "step_s",
                "perf/gen_tokens_per_s": "tok/s",
                "perf/mfu": "mfu",
            }
            show = {
                label: record[k] for k, label in labels.items() if isinstance(record.get(k), (int, float))
            }
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in show.items()})

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        with open(self.samples_path, "a") as f:
            for s in samples:
                f.write(json.dumps({"step": step, **s}) + "\n")

    def log_alarm(self, record: Mapping[str, Any]) -> None:
        """A newly fired alarm ({"step", "alarm", "message", ...}): a line in alarms.jsonl and a
        warning in the console."""
        with open(self.alarms_path, "a") as f:
            f.write(json.dumps(dict(record)) + "\n")
        self.write(f"WARNING alarm {record['alarm']} at step {record['step']}: {record['message']}")

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for backend in self.backends:
            backend.close()
