"""Probe the strongest backend once, and run many programs in parallel through a pool of slots."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rlft.sandbox import backends
from rlft.sandbox.local import LocalSandbox
from rlft.sandbox.result import Limits, RunResult

log = logging.getLogger(__name__)
PROBE_CODE = "import sys; print(sum(range(5)))"
_probe_cache: dict[tuple[str | None, bool], str] = {}
_probe_lock = threading.Lock()


def probe_backend(preferred: str | None = None, allow_unsafe: bool | None = None) -> str:
    """The strongest backend that really runs a program here (cached per process).

    Each candidate must run a tiny program as a slot uid and print the right answer. Raises
    SandboxUnavailable naming what failed when none does."""
    unsafe = backends.allow_unsafe_from_env() if allow_unsafe is None else allow_unsafe
    key = (preferred, unsafe)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        failures = []
        for name in backends.candidate_backends(preferred, unsafe):
            problem = _try_backend(name)
            if problem is None:
                if name == "rlimit":
                    backends.warn_unsafe()
                _probe_cache[key] = name
                return name
            failures.append(f"{name}: {problem}")
        hint = "" if unsafe else f" (the unsafe rlimit backend needs {backends.UNSAFE_ENV}=1)"
        raise backends.SandboxUnavailable("no sandbox backend works: " + "; ".join(failures) + hint)


def _try_backend(name: str) -> str | None:
    """None if the backend runs the probe program correctly, else what went wrong."""
    missing = backends.missing_tools(name)
    if missing:
        return "not installed: " + ", ".join(missing)
    res = LocalSandbox(name, allow_unsafe=True).run(PROBE_CODE, limits=Limits(wall_s=20.0, cpu_s=10))
    if res.status == "ok" and res.stdout.strip() == "10":
        return None
    return f"{res.status}: {res.reason or res.stderr[-300:]}"


@dataclass(frozen=True)
class Program:
    """One program to run: its code, stdin, and optional extra files beside it."""

    code: str
    stdin: str | None = None
    files: tuple[tuple[str, str], ...] = ()


class SandboxPool:
    """Runs programs in parallel, one slot uid per concurrent run. Thread-safe.

    `run` blocks the calling thread for one program (many threads may call it at once, at most
    `slots` run at a time); `map` runs a list of programs and returns results in order."""

    def __init__(
        self,
        slots: int | None = None,
        backend: str | None = None,
        limits: Limits | None = None,
        allow_unsafe: bool | None = None,
    ):
        self.backend = probe_backend(backend, allow_unsafe)
        self.slots = slots or os.cpu_count() or 1
        self.sandbox = LocalSandbox(self.backend, limits, allow_unsafe=self.backend == "rlimit")
        self._gate = threading.BoundedSemaphore(self.slots)

    @property
    def limits(self) -> Limits:
        return self.sandbox.limits

    def run(self, code: str, stdin: str | None = None, limits: Limits | None = None, files=None) -> RunResult:
        """Run one program (waits for a free slot)."""
        with self._gate:
            return self.sandbox.run(code, stdin, limits, dict(files or {}))

    def map(self, programs: Sequence[Program], limits: Limits | None = None) -> list[RunResult]:
        """Run all programs, `slots` at a time; results in the input order."""
        if not programs:
            return []
        workers = min(self.slots, len(programs))
        with ThreadPoolExecutor(workers, thread_name_prefix="rlft-sandbox") as ex:
            futures = [ex.submit(self.run, p.code, p.stdin, limits, dict(p.files)) for p in programs]
            return [f.result() for f in futures]
