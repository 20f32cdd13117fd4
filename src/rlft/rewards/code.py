"""Code rewards: run model-written Python against the row's tests in the sandbox and reward the
fraction of tests passed.

Rows carry either `tests` (assert statements, run one after another after the solution in one
sandboxed process) or `io_tests` ([{"input", "output"}], one run each, stdout compared outside the
sandbox). A sandbox failure (not the program's fault) is never a wrong answer: the test runners
return None for it, and `code_pass_fraction` raises SandboxFailure, which the scorer counts as a
failure of this reward (and a sandbox failing on every completion of a step stops the run).

Assert tests report through a per-run random token read from stdin before the solution runs, so
printing "pass" or exiting early earns nothing; code that inspects the harness's own frames could
still forge results (stdio tests cannot be forged this way).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rlft.sandbox.pool import Program, SandboxPool
from rlft.sandbox.result import Limits, RunResult

FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)
HARNESS = """import os, sys, traceback
def _rlft_harness(tests):
    token = sys.stdin.readline().strip()
    out = sys.stdout
    scope = {"__name__": "solution"}
    try:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "solution.py")
        with open(path) as f:
            exec(compile(f.read(), "solution.py", "exec"), scope)
    except BaseException:
        traceback.print_exc(limit=3)
        os._exit(1)
    for i, test in enumerate(tests):
        try:
            exec(compile(test, "test_%d" % i, "exec"), scope)
            verdict = "pass"
        except BaseException:
            traceback.print_exc(limit=3)
            verdict = "fail"
        out.write("%s %d %s\\n" % (token, i, verdict))
        out.flush()
_rlft_harness(__TESTS__)
"""


class SandboxFailure(RuntimeError):
    """The sandbox could not run a program (not the program's fault: no score for it)."""


_pools: dict[tuple[str | None, int], SandboxPool] = {}
_pools_lock = threading.Lock()


def extract_code(completion: str) -> str:
    """The last fenced code block (```python ... ```), else the whole completion."""
    blocks = FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def shared_pool(backend: str | None = None, slots: int = 0) -> SandboxPool:
    """One sandbox pool per (backend, slots) per process, probed on first use."""
    key = (backend, slots)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = SandboxPool(slots=slots or None, backend=backend)
        return _pools[key]


def run_assert_tests(
    pool: Any, code: str, tests: Sequence[str], limits: Limits
) -> tuple[float | None, RunResult]:
    """Pass fraction of assert tests (None on a sandbox error) and the run's result; the status
    is `wrong` when the program ran but not every test passed."""
    token = secrets.token_hex(16)
    harness = HARNESS.replace("__TESTS__", repr(list(tests)))
    res = pool.run(harness, stdin=token + "\n", limits=limits, files={"solution.py": code})
    if res.status == "sandbox_error":
        return None, res
    passed = set()
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == token and parts[2] == "pass" and parts[1].isdigit():
            passed.add(int(parts[1]))
    fraction = len(passed & set(range(len(tests)))) / len(tests)
    if res.status == "ok" and fraction < 1.0:
        res = res.with_status("wrong", f"{len(passed)} of {len(tests)} tests passed")
    return fraction, res


def same_output(actual: str, expected: str) -> bool:
    """Compare stdout line by line, ignoring trailing whitespace and trailing blank lines."""
    a = [line.rstrip() for line in actual.rstrip().splitlines()]
    b = [line.rstrip() for line in expected.rstrip().splitlines()]
    return a == b


def run_io_tests(
    pool: Any, code: str, tests: Sequence[Mapping[str, str]], limits: Limits
) -> tuple[float | None, list[RunResult]]:
    """Pass fraction of stdin/stdout tests (None if any run hit a sandbox error) and the results,
    with `ok` turned into `wrong` where the output differs."""
    programs = [Program(code, str(t.get("input", ""))) for t in tests]
    if hasattr(pool, "map"):
        results = pool.map(programs, limits)
    else:
        results = [pool.run(p.code, p.stdin, limits) for p in programs]
    checked = []
    for res, t in zip(results, tests, strict=True):
        if res.status == "ok" and not same_output(res.stdout, str(t.get("output", ""))):
            res = res.with_status("wrong", "stdout differs from the expected output")
        checked.append(res)
    if any(r.status == "sandbox_error" for r in checked):
        return None, checked
    return sum(r.status == "ok" for r in checked) / len(checked), checked


def code_pass_fraction(
    prompt: str,
    completion: str,
    example: Mapping[str, Any],
    wall_s: float = 5.0,
    memory_mb: int = 512,
    backend: str | None = None,
    slots: int = 0,
) -> float:
    """Fraction of the row's tests (`tests` asserts or `io_tests`) that the completion's code
    passes, in [0, 1]; SandboxFailure if the sandbox could not run it."""
    tests = example.get("tests") or []
    io_tests = example.get("io_tests") or []
    if not tests and not io_tests:
        raise KeyError("code_pass_fraction needs the dataset field 'tests' or 'io_tests'")
    pool = shared_pool(backend, slots)
    limits = Limits(wall_s=wall_s, cpu_s=int(wall_s) + 1, memory_mb=memory_mb)
    code = extract_code(completion)
    if tests:
        fraction, results = run_assert_tests(pool, code, tests, limits)
    else:
        fraction, results = run_io_tests(pool, code, io_tests, limits)
    if fraction is None:
        failed = next(r for r in ([results] if tests else results) if r.status == "sandbox_error")
        raise SandboxFailure(f"the sandbox could not run the program: {failed.reason}")
    return fraction


code_pass_fraction.rlft_timeout_s = 120.0  # type: ignore[attr-defined]
code_pass_fraction.rlft_workers = 0  # type: ignore[attr-defined]  # 0 = one per CPU
