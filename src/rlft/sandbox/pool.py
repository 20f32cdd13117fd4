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
_probe_cache: dict[tuple[str | None, bool, bool], str] = {}
_probe_lock = threading.Lock()


def probe_backend(
    preferred: str | None = None, allow_unsafe: bool | None = None, allow_same_uid: bool | None = None
) -> str:
    """The strongest installed backend, checked by running a tiny program (cached per process).

    Backends whose tools are not installed are passed over. The first installed one (or the
    `preferred` one) must run the probe program (as a slot uid) and print the right answer, else
    SandboxUnavailable is raised naming it and its error: there is no fallback past an installed
    backend that fails (a weaker backend must be asked for explicitly with `preferred`). A non-root
    launcher is refused unless it opts into same-uid mode (see `backends.uses_slot_uids`)."""
    unsafe = backends.allow_unsafe_from_env() if allow_unsafe is None else allow_unsafe
    slot_uids = backends.uses_slot_uids(allow_same_uid)
    key = (preferred, unsafe, slot_uids)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        absent = []
        order = backends.candidate_backends(preferred, unsafe)
        for i, name in enumerate(order):
            missing = backends.missing_tools(name)
            if missing:
                absent.append(f"{name}: not installed ({', '.join(missing)} not found)")
                continue
            problem = _try_backend(name, not slot_uids)
            if problem is not None:
                raise backends.SandboxUnavailable(_broken_message(name, problem, order[i + 1 :]))
            if name == "rlimit":
                backends.warn_unsafe()
            _probe_cache[key] = name
            return name
        hint = "" if unsafe else f" (the unsafe rlimit backend needs {backends.UNSAFE_ENV}=1)"
        raise backends.SandboxUnavailable("no sandbox backend is installed: " + "; ".join(absent) + hint)


def _broken_message(name: str, problem: str, weaker: Sequence[str]) -> str:
    msg = f"sandbox backend '{name}' is installed but failed its start-up probe: {problem}"
    if weaker:
        msg += (
            f". Not falling back to a weaker backend past an installed one: fix {name}, or ask for "
            f"a weaker one explicitly (backend='{weaker[0]}')"
        )
    return msg


def _try_backend(name: str, same_uid: bool) -> str | None:
    """None if the backend runs the probe program correctly, else what went wrong."""
    box = LocalSandbox(name, allow_unsafe=True, allow_same_uid=same_uid)
    res = box.run(PROBE_CODE, limits=Limits(wall_s=20.0, cpu_s=10))
    if res.status == "ok" and res.stdout.strip() == "10":
        return None
    return f"{res.status}: {res.reason or res.stderr[-300:] or 'printed ' + repr(res.stdout[:100])}"


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
        allow_same_uid: bool | None = None,
    ):
        self.backend = probe_backend(backend, allow_unsafe, allow_same_uid)
        self.slots = slots or os.cpu_count() or 1
        self.sandbox = LocalSandbox(
            self.backend, limits, allow_unsafe=self.backend == "rlimit", allow_same_uid=allow_same_uid
        )
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
