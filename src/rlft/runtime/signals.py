"""Graceful stop: the first SIGINT/SIGTERM asks the loop to finish its step, checkpoint and exit;
a second one interrupts at once (KeyboardInterrupt)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class GracefulStop:
    """Context manager; `requested` turns True on the first signal. Handlers are installed only in
    the main thread (elsewhere, e.g. under a test runner's worker thread, it is a no-op flag)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "%s received: finishing this step, then checkpointing and stopping "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
