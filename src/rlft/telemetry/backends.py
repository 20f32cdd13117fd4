"""Metric loggers behind one seam: TensorBoard (default), Weights & Biases, trackio.

A backend receives each step's numeric metrics and is closed at the end; wandb and trackio are
imported only when chosen (`log.backends`) and are optional extras (`pip install rlft[wandb]`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class MetricsBackend(Protocol):
    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class BackendUnavailable(ImportError):
    """A chosen backend's package is not installed; the message says how to install it."""


def _import(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(
            f"log.backends includes '{extra}' but the '{module}' package is not installed: "
            f"pip install 'rlft[{extra}]' (or drop '{extra}' from log.backends)"
        ) from e


class TensorBoardBackend:
    def __init__(self, out_dir: Path, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a resumed run is about to log again
        self.writer = SummaryWriter(str(out_dir), purge_step=start_step + 1 if start_step else None)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    def __init__(self, out_dir: Path, project: str, config: Mapping[str, Any] | None) -> None:
        wandb = _import("wandb", "wandb")
        self.run = wandb.init(
            project=project, name=out_dir.name, dir=str(out_dir), config=dict(config or {}), resume="allow"
        )

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioBackend:
    def __init__(self, out_dir: Path, project: str, config: Mapping[str, Any] | None) -> None:
        self.trackio = _import("trackio", "trackio")
        self.trackio.init(project=project, name=out_dir.name, config=dict(config or {}))

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.trackio.log(dict(scalars), step=step)

    def close(self) -> None:
        self.trackio.finish()


BackendFactory = Callable[[Path, int, str, "Mapping[str, Any] | None"], MetricsBackend]
BACKENDS: dict[str, BackendFactory] = {
    "tensorboard": lambda out, start, project, config: TensorBoardBackend(out, start),
    "wandb": lambda out, start, project, config: WandbBackend(out, project, config),
    "trackio": lambda out, start, project, config: TrackioBackend(out, project, config),
}


def open_backends(
    names: Sequence[str],
    out_dir: Path,
    start_step: int = 0,
    project: str = "rlft",
    config: Mapping[str, Any] | None = None,
) -> list[MetricsBackend]:
    """One backend per name (duplicates once), in order; unknown names are a ValueError."""
    opened: list[MetricsBackend] = []
    for name in dict.fromkeys(names):
        if name not in BACKENDS:
            raise ValueError(f"unknown log backend '{name}' in log.backends; valid: {', '.join(BACKENDS)}")
        opened.append(BACKENDS[name](out_dir, start_step, project, config))
    return opened
