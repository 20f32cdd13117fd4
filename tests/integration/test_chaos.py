"""Short chaos runs (bench/chaos.py with 3 kills each): a tiny RL and SFT run SIGKILLed at random
moments, some inside checkpoint writes, resumed each time, end with the same weights and metrics
as an uninterrupted run. The 25-kill version: `python bench/chaos.py --kind rl|sft --kills 25`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.chaos


def _chaos_module():
    spec = importlib.util.spec_from_file_location("rlft_bench_chaos", REPO_ROOT / "bench" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["rl", "sft"])
def test_killed_and_resumed_run_ends_identical(tmp_path, tiny_model_path, kind):
    chaos = _chaos_module()
    # 12 steps, a checkpoint every 2; kill 1 inside a save, kill 2 mid-steps, kill 3 inside a save.
    # Each kill first waits for one new checkpoint, then at most one more save passes (a save
    # takes >= 4 x 0.1 s here): 3 kills end by step 10 at the latest, before the run does
    r = chaos.chaos(kind, tmp_path, steps=12, save_every=2, kills=3, seed=1, save_sleep=0.1)
    assert r.kills == 3, r
    # every restart resumed from a checkpoint at least as new as the last one
    assert r.resumed_from == sorted(r.resumed_from) and r.resumed_from[-1] > 0
    assert r.torn_saves >= 1  # at least one kill left a half-written save behind, and it was ignored
    assert r.final_sha == r.reference_sha
    assert r.metrics_match
    assert not list((tmp_path / "chaos" / "checkpoints").glob(".tmp-step-*"))  # torn saves cleaned
