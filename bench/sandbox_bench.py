"""Sandbox benchmark: programs per second through the pool (a trivial program, a 1-second CPU-bound
program, a 1-second sleeping program) and per-run overhead of each backend vs a bare subprocess.

Usage: python bench/sandbox_bench.py [--slots N] [--trivial N] [--slow N] [--overhead N]
Needs root (slot uids). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rlft.sandbox import Limits, LocalSandbox, Program, SandboxPool, SandboxUnavailable, probe_backend

TRIVIAL = "print('hello')"
BUSY_1S = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end:\n    pass\n"
SLEEP_1S = "import time\ntime.sleep(1.0)\nprint('done')"
LIMITS = Limits(wall_s=20, cpu_s=10)


def throughput(pool: SandboxPool, code: str, n: int) -> tuple[float, list[str]]:
    """Programs per second for n copies of `code`, and the status + reason of runs not ok."""
    t0 = time.monotonic()
    results = pool.map([Program(code) for _ in range(n)], LIMITS)
    elapsed = time.monotonic() - t0
    return n / elapsed, [f"{r.status}: {r.reason}" for r in results if r.status != "ok"]


def bare_ms(n: int) -> list[float]:
    """Wall ms of a bare `python3 -I -S hello.py` subprocess (temp dir and file included)."""
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "main.py"
            path.write_text(TRIVIAL)
            subprocess.run(["/usr/bin/python3", "-I", "-S", str(path)], capture_output=True, check=True)
        times.append((time.monotonic() - t0) * 1000)
    return times


def sandbox_ms(backend: str, n: int) -> list[float]:
    """Wall ms of one sandboxed hello-world run, serially (everything the launcher does)."""
    box = LocalSandbox(backend, LIMITS, allow_unsafe=True)
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        res = box.run(TRIVIAL)
        times.append((time.monotonic() - t0) * 1000)
        assert res.status == "ok", res
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--trivial", type=int, default=64, help="trivial programs for throughput")
    ap.add_argument("--slow", type=int, default=8, help="1-second programs for throughput")
    ap.add_argument("--overhead", type=int, default=30, help="serial runs for the overhead figure")
    args = ap.parse_args()
    pool = SandboxPool(slots=args.slots)
    print(f"backend {pool.backend}, {args.slots} slots, {os.cpu_count()} CPUs")
    for name, code, n in (("trivial", TRIVIAL, args.trivial), ("1 s CPU-bound", BUSY_1S, args.slow),
                          ("1 s sleep", SLEEP_1S, args.slow)):  # fmt: skip
        rate, bad = throughput(pool, code, n)
        print(f"throughput {name:>14}: {rate:7.2f} programs/s  (n={n}, not ok: {len(bad)})")
        for line in sorted(set(bad)):
            print(f"    not ok: {line}")
    bare = bare_ms(args.overhead)
    mean, median = statistics.mean(bare), statistics.median(bare)
    print(f"bare subprocess          : mean {mean:6.1f} ms  median {median:6.1f} ms")
    for backend in ("bwrap", "unshare", "rlimit"):
        try:
            probe_backend(backend, allow_unsafe=True)
        except SandboxUnavailable:
            print(f"{backend:>8} sandbox run     : unavailable")
            continue
        ms = sandbox_ms(backend, args.overhead)
        extra = statistics.mean(ms) - statistics.mean(bare)
        print(f"{backend:>8} sandbox run     : mean {statistics.mean(ms):6.1f} ms  median "
              f"{statistics.median(ms):6.1f} ms  overhead {extra:+6.1f} ms/run")  # fmt: skip


if __name__ == "__main__":
    main()
