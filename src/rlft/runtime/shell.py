"""The run shell every loop shares (RL and the supervised trainers): resume from the newest
complete checkpoint, the step loop with the run logger, graceful stop (every rank stops after the
same step), the save cadence, and the run summary. A loop supplies only what differs: how one
step runs, and how its state is saved and loaded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlft.dist.ranks import any_rank, is_main
from rlft.runtime.checkpoint import latest_checkpoint
from rlft.runtime.signals import GracefulStop

log = logging.getLogger(__name__)


def resume_step(resume: bool, ckpt_root: Path, load: Callable[[Path], int]) -> int:
    """The step a run continues after: `load(checkpoint)` (which restores the loop's state and
    returns its step) of the newest complete checkpoint when resuming and one exists, else 0."""
    if not resume:
        return 0
    ckpt = latest_checkpoint(ckpt_root)
    if ckpt is None:
        log.info("resume requested but no complete checkpoint in %s; starting fresh", ckpt_root)
        return 0
    step = load(ckpt)
    log.info("resumed from %s (step %d)", ckpt, step)
    return step


def save_due(step: int, steps: int, save_every: int) -> bool:
    """A checkpoint after this step: every `save_every` steps (0 = never) and after the last."""
    return bool(save_every and step % save_every == 0) or step == steps


@dataclass
class Steps:
    """What the loop did: the last step run, its metrics, whether a signal stopped it early (to be
    resumed), and whether `after_log` ended it early (a finished run, e.g. a user's callback)."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    ended_early: bool = False


def run_steps(
    start: int,
    steps: int,
    save_every: int,
    logger: Any,
    one_step: Callable[[int], dict[str, float]],
    save: Callable[[int], None],
    after_log: Callable[[int, dict[str, float]], bool | None] | None = None,
    resume_hint: str = "--resume",
) -> Steps:
    """Steps start+1 .. `steps`: `one_step(n)` returns step n's metrics (global over ranks), which
    the `logger` (rlft.telemetry.metrics.RunLogger) writes, then `after_log(n, metrics)` and, when
    due or when a SIGINT / SIGTERM asked to stop, `save(n)`. `after_log` returning True (on any
    rank) ends the run after that step, saved, as a finished run. The logger is closed at the end."""
    done = Steps(start)
    with GracefulStop() as stop:
        try:
            while done.step < steps:
                metrics = one_step(done.step + 1)
                done = Steps(done.step + 1, metrics)
                stop.requested = any_rank(stop.requested)  # every rank stops after the same step
                logger.log_metrics(done.step, metrics)
                ended = any_rank(bool(after_log(done.step, metrics))) if after_log else False
                if save_due(done.step, steps, save_every) or stop.requested or ended:
                    save(done.step)
                if ended and done.step < steps:
                    log.info("the run was ended after step %d (of %d) by a callback", done.step, steps)
                    return Steps(done.step, metrics, ended_early=True)
                if stop.requested and done.step < steps:
                    log.warning("stopped after step %d; resume with %s", done.step, resume_hint)
                    return Steps(done.step, metrics, stopped=True)
        finally:
            logger.close()
    return done


def write_summary(out_dir: Path, results: Mapping[str, Any]) -> None:
    """summary.json of the run, written by rank 0."""
    if is_main():
        (out_dir / "summary.json").write_text(json.dumps(results, indent=1, default=float))
