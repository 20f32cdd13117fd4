"""math-verify decides off the main thread too (reward thread pools): rlft passes it no timeout
there (its signal-based timeout only works in the main thread), which needs math-verify >= 0.8;
0.7 raised, and every threaded LaTeX answer silently fell back to plain comparison."""

from __future__ import annotations

import threading

import pytest

from rlft.rewards.math import verified_equal


def _in_a_thread(fn, *args):
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


@pytest.mark.parametrize("where", ["main", "thread"])
def test_latex_is_verified_in_and_off_the_main_thread(where):
    call = verified_equal if where == "main" else lambda *a: _in_a_thread(verified_equal, *a)
    assert call(r"\frac{1}{2}", "0.5") is True  # the plain fallback cannot decide this one
    assert call(r"\frac{1}{3}", "0.5") is False
