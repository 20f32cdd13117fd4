"""Run logging: metrics.jsonl, samples.jsonl, TensorBoard and a progress bar with ETA."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        desc: str = "rl",
    ):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / "metrics.jsonl"
        self.samples_path = out_dir / "samples.jsonl"
        _truncate_jsonl(self.metrics_path, start_step)
        _truncate_jsonl(self.samples_path, start_step)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir), purge_step=start_step + 1 if start_step else None)
            except ImportError:
                log.warning("tensorboard is not installed; skipping TensorBoard logging")
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.bar is not None:
            self.bar.update(1)
            labels = {"reward/mean": "reward", "rollout/response_len": "len", "perf/step_s": "step_s"}
            show = {
                label: record[k] for k, label in labels.items() if isinstance(record.get(k), (int, float))
            }
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in show.items()})

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        with open(self.samples_path, "a") as f:
            for s in samples:
                f.write(json.dumps({"step": step, **s}) + "\n")

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
