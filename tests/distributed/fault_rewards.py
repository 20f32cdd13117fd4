"""Reward functions (weight 0, so they change no score) that make rank 1 fail after a number of
calls: SIGKILL (a dead rank) or an endless sleep (a hung rank). Only the first torchrun attempt
fails (TORCHELASTIC_RESTART_COUNT=0), so a restarted group runs through."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

_calls = 0


def _due(rank: int, after_calls: int) -> bool:
    global _calls
    if os.environ.get("RANK") != str(rank) or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return False
    _calls += 1
    return _calls > after_calls


def die(prompt: str, completion: str, example: Any, rank: int = 1, after_calls: int = 0) -> float:
    if _due(rank, after_calls):
        os.kill(os.getpid(), signal.SIGKILL)
    return 0.0


def hang(prompt: str, completion: str, example: Any, rank: int = 1, after_calls: int = 0) -> float:
    if _due(rank, after_calls):
        time.sleep(3600)
    return 0.0
