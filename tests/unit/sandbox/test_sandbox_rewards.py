"""Code rewards through the sandbox, and slow rewards in a pool with per-call timeouts."""

from __future__ import annotations

import os
import time

import pytest
import torch

from rlft.config.rl import RewardSpec
from rlft.data.coding import coding_rows
from rlft.rewards.code import code_pass_fraction, extract_code, run_assert_tests, run_io_tests
from rlft.rewards.parallel import call_all, slow_reward
from rlft.rewards.registry import resolve_reward
from rlft.rewards.scoring import RewardError, RewardTerm, build_terms, score_completions
from rlft.sandbox import Limits, SandboxPool
from rlft.sandbox.result import RunResult, sandbox_error

LIM = Limits(wall_s=3, cpu_s=3, memory_mb=256)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="slot uids need root")
ADD_TESTS = [
    "assert add(1, 2) == 3",
    "assert add(2, 2) == 4",
    "assert add(0, 0) == 0",
    "assert add(-1, 1) == 0",
]


@pytest.fixture(scope="module")
def pool():
    return SandboxPool(slots=4)


def test_extract_code_takes_the_last_fence():
    text = "first\n```python\nx = 1\n```\nthen\n```py\ny = 2\n```"
    assert extract_code(text) == "y = 2\n"
    assert extract_code("def f(): pass") == "def f(): pass"  # no fence: all of it


@needs_root
@pytest.mark.parametrize(
    ("code", "fraction", "status"),
    [
        ("def add(a, b):\n    return a + b", 1.0, "ok"),
        ("def add(a, b):\n    return a * b", 0.5, "wrong"),  # 2*2 == 4 and 0*0 == 0 hold: 2/4
        ("def add(a, b):\n    return 3", 0.25, "wrong"),  # only add(1, 2) == 3 holds: 1/4
        ("def add(a, b) return", 0.0, "runtime_error"),  # SyntaxError: the harness exits 1
        ("import os\nos._exit(0)", 0.0, "wrong"),  # exits 0 before any test: no token, nothing passes
        ("print('x 0 pass')\nprint('x 1 pass')", 0.0, "wrong"),  # forged lines lack the run's token
        ("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b", 0.0, "runtime_error"),  # exit at load
        ("def add(a, b):\n    while True: pass", 0.0, "timeout"),
    ],
)
def test_assert_tests(pool, code, fraction, status):
    got, res = run_assert_tests(pool, code, ADD_TESTS, Limits(wall_s=1.5, cpu_s=2))
    assert (got, res.status) == (fraction, status)


@needs_root
def test_io_tests_compare_stdout_outside(pool):
    tests = [
        {"input": "2 3\n", "output": "5"},
        {"input": "10 -4\n", "output": "6\n"},
        {"input": "1 1", "output": "3"},
    ]
    code = "a, b = map(int, input().split())\nprint(a + b)  "
    fraction, results = run_io_tests(pool, code, tests, LIM)
    # 5 == 5, 6 == 6 (trailing newline ignored), 2 != 3 -> 2/3
    assert fraction == pytest.approx(2 / 3)
    assert [r.status for r in results] == ["ok", "ok", "wrong"]


class BrokenPool:
    """A pool whose every run is a sandbox failure."""

    def run(self, code, stdin=None, limits=None, files=None) -> RunResult:
        return sandbox_error("no backend")


def test_sandbox_error_is_none_not_zero():
    fraction, res = run_assert_tests(BrokenPool(), "def add(a, b): return a + b", ADD_TESTS, LIM)
    assert fraction is None and res.status == "sandbox_error"
    fraction, _ = run_io_tests(BrokenPool(), "print(1)", [{"input": "", "output": "1"}], LIM)
    assert fraction is None


def test_a_sandbox_failure_is_a_reward_failure_and_everywhere_stops_the_step(monkeypatch):
    # not a wrong answer (0) and not "does not apply" (None): a failure, counted; on every
    # completion of a step the scorer stops the run naming the reward and the cause
    import rlft.rewards.code as code_module

    monkeypatch.setattr(code_module, "shared_pool", lambda backend=None, slots=0: BrokenPool())
    row = {"tests": ADD_TESTS}
    with pytest.raises(code_module.SandboxFailure, match="could not run the program: no backend"):
        code_pass_fraction("", "def add(a, b): return a + b", row)
    term = RewardTerm("code", code_pass_fraction)
    with pytest.raises(RewardError, match="reward 'code' failed on all 2 completions .*SandboxFailure"):
        score_completions([term], ["", ""], ["x", "y"], [row, row])


@needs_root
def test_builtin_problems_pass_with_their_solutions_and_fail_otherwise():
    rows = coding_rows()
    right = [f"```python\n{r['solution']}```" for r in rows]
    wrong = ["```python\ndef nothing():\n    pass\n```"] * len(rows)
    term = RewardTerm("code", resolve_reward("code_pass_fraction"), timeout_s=60, kwargs={"wall_s": 3.0})
    scores, m = score_completions([term], [r["prompt"] for r in rows] * 2, right + wrong, rows * 2)
    assert scores[: len(rows)].tolist() == [1.0] * len(rows)  # every reference solution passes all
    assert scores[len(rows) :].tolist() == [0.0] * len(rows)  # NameError on every test
    assert m["reward/code_failures"] == 0.0 and m["reward/code_timeouts"] == 0.0


def test_code_reward_needs_tests():
    with pytest.raises(KeyError, match="tests"):
        code_pass_fraction("", "x", {})


def test_call_all_times_out_per_call_from_its_start():
    def fn(x):
        time.sleep(x)
        return x

    t0 = time.monotonic()
    # 2 workers: 0.0 and 5.0 start at once; 0.0 frees a worker for 0.1; 5.0 times out at 0.5
    out = call_all(fn, [(0.0,), (5.0,), (0.1,)], {}, workers=2, timeout_s=0.5)
    assert [o.value for o in out] == [0.0, None, 0.1]
    assert [o.timed_out for o in out] == [False, True, False]
    assert time.monotonic() - t0 < 2.0  # the 5 s call was abandoned, not waited for


def test_call_all_replaces_stuck_workers():
    def fn(x):
        time.sleep(30 if x < 2 else 0)
        return x

    # one worker: calls 0 and 1 hang; each timeout starts a new worker, so 2 and 3 still run
    out = call_all(fn, [(0,), (1,), (2,), (3,)], {}, workers=1, timeout_s=0.3)
    assert [o.timed_out for o in out] == [True, True, False, False]
    assert [o.value for o in out[2:]] == [2, 3]


def test_slow_reward_timeouts_are_counted_in_metrics():
    @slow_reward(timeout_s=0.3, workers=4)
    def sleepy(prompt, completion, example):
        if completion == "hang":
            time.sleep(10)
        if completion == "raise":
            raise ValueError("bad")
        return 1.0

    (term,) = build_terms([RewardSpec(fn="sleepy")], {"sleepy": sleepy})
    assert (term.timeout_s, term.workers) == (0.3, 4)
    comps = ["ok", "hang", "raise", "ok"]
    scores, m = score_completions([term], [""] * 4, comps, [{}] * 4)
    # ok -> 1, hang -> timeout (failure, 0), raise -> failure (0), ok -> 1
    assert torch.equal(scores, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert m["reward/sleepy_failures"] == 2.0
    assert m["reward/sleepy_timeouts"] == 1.0
    assert m["reward/sleepy"] == pytest.approx(0.5)


def test_inline_terms_have_no_timeout_metric():
    scores, m = score_completions([RewardTerm("r", lambda p, c, e: 1.0)], ["a"], ["b"], [{}])
    assert "reward/r_timeouts" not in m and scores.tolist() == [1.0]
