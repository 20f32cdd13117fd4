"""Run a slow reward function over many completions in a pool of threads, each call bounded by a
per-call timeout measured from the moment it starts.

A Python thread cannot be killed: a call that overruns is abandoned (its result ignored and
counted as a timeout) and its daemon thread finishes in the background without blocking exit.
Rewards that do their heavy work in a subprocess (the code sandbox, which kills its programs at
its own wall limit) or release the GIL benefit most; a pure-Python busy loop keeps a CPU busy
until it returns.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class CallOutcome:
    """One call: its value, the error message (and the exception, with its traceback) if it
    raised, and whether it timed out."""

    value: Any = None
    error: str | None = None
    timed_out: bool = False
    exception: BaseException | None = None


def raised(e: BaseException) -> str:
    """How a failed call is reported: "raised TypeError: ..."."""
    return f"raised {type(e).__name__}: {e}"


def slow_reward(timeout_s: float, workers: int = 0) -> Callable[[Callable], Callable]:
    """Decorator marking a reward as slow: the scorer runs it in a pool of `workers` threads
    (0 = one per CPU) and fails any call that takes longer than `timeout_s`."""

    def mark(fn: Callable) -> Callable:
        fn.rlft_timeout_s = float(timeout_s)  # type: ignore[attr-defined]
        fn.rlft_workers = int(workers)  # type: ignore[attr-defined]
        return fn

    return mark


def call_all(
    fn: Callable[..., Any], calls: Sequence[tuple], kwargs: dict, workers: int, timeout_s: float
) -> list[CallOutcome]:
    """fn(*args, **kwargs) for each args in `calls` on `workers` daemon threads; in input order."""
    n = len(calls)
    outcomes = [CallOutcome() for _ in range(n)]
    started: list[float | None] = [None] * n
    done = [threading.Event() for _ in range(n)]
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(n):
        todo.put(i)

    def worker() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            mine = outcomes[i]  # an abandoned call writes here, never into its replacement
            started[i] = time.monotonic()
            try:
                mine.value = fn(*calls[i], **kwargs)
            except Exception as e:  # a user reward may raise anything
                mine.error, mine.exception = raised(e), e
            done[i].set()

    def start_worker() -> None:
        threading.Thread(target=worker, daemon=True, name="rlft-reward").start()

    for _ in range(max(1, min(workers or os.cpu_count() or 1, n))):
        start_worker()
    for i in range(n):
        _wait_one(done[i], started, i, timeout_s)
        if not done[i].is_set():
            outcomes[i] = CallOutcome(timed_out=True, error=f"timed out after {timeout_s:g} s")
            start_worker()  # the stuck thread is lost to the pool: replace it
    return outcomes


def _wait_one(event: threading.Event, started: list[float | None], i: int, timeout_s: float) -> None:
    """Wait until call i finishes or has run `timeout_s` since it started."""
    while not event.is_set():
        t0 = started[i]
        if t0 is None:
            event.wait(0.01)  # still queued behind other calls
            continue
        left = t0 + timeout_s - time.monotonic()
        if left <= 0:
            return
        event.wait(left)
