"""rlft.telemetry.perf (laps, model FLOPs, MFU) and the `rlft bench` summary, on hand-computed examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlft.bench import checkpoints_written, summarize
from rlft.cli.main import process_defaults
from rlft.rl.loop import rollout_flops
from rlft.telemetry.perf import Laps, matmul_peak_flops, mfu, step_flops


def test_laps_split_moves_seconds_and_keeps_the_total() -> None:
    lap = Laps()
    lap.times = {"perf/generate_s": 5.0}
    lap.split("generate", "reward", 1.5)
    assert lap.times == {"perf/generate_s": 3.5, "perf/reward_s": 1.5}
    lap.split("generate", "reward", 10.0)  # never more than the lap holds: generate 0, reward 5
    assert lap.times == {"perf/generate_s": 0.0, "perf/reward_s": 5.0}


def test_step_flops_hand_computed() -> None:
    # N = 1000 params, 50 tokens per pass, generation + reference = 2 no-grad passes:
    # 2 * 1000 * 50 * 2 = 200_000; one trained pass over 50 tokens: 6 * 1000 * 50 = 300_000
    assert step_flops(1000, 50.0, 2, 50.0) == 500_000.0
    # 5e5 FLOPs in 0.5 s = 1e6 FLOP/s, against a 4e6 FLOP/s peak: 25 %
    assert mfu(500_000.0, 0.5, 4e6) == pytest.approx(0.25)
    assert mfu(500_000.0, 0.5, 0.0) == 0.0  # unknown peak


def test_rollout_flops_counts_each_prompt_once_per_pass() -> None:
    model = torch.nn.Linear(10, 10)  # N = 100 weights + 10 biases = 110
    # 2 prompts x G=2: prompt lengths 3 (rows 0, 1) and 2 (rows 2, 3, one left-pad);
    # response lengths 2, 1, 2, 2 -> 7 response tokens; attention mask holds 3+3+2+2 + 7 = 17
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    response = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
    rollouts = SimpleNamespace(
        attention_mask=mask, response_mask=response, group_ids=torch.tensor([0, 0, 1, 1]), size=4
    )
    # prompt tokens over rows = 10, 2 distinct prompts of 4 rows -> 10 * 2 / 4 = 5 (= 3 + 2);
    # pass tokens = 5 + 7 = 12; 2 no-grad passes: 2 * 110 * 12 * 2 = 5280;
    # 0.5 trained passes: 6 * 110 * 6 = 3960
    assert rollout_flops(model, rollouts, 2, 0.5) == pytest.approx(5280 + 3960)


@pytest.mark.parametrize("engine", ["aten", "onednn"])
def test_matmul_peak_is_a_positive_rate(engine: str) -> None:
    # 64^3 matmul: 2 * 64^3 = 524_288 FLOPs; any machine does it in well under a second
    from rlft.accel.onednn import onednn_linear_available

    if engine == "onednn" and not onednn_linear_available():
        pytest.skip("torch built without oneDNN")
    assert matmul_peak_flops(size=64, repeats=2, engine=engine) > 524_288


def test_checkpoints_written() -> None:
    assert checkpoints_written(5, 2) == 3  # steps 2, 4, and the last (5)
    assert checkpoints_written(4, 2) == 2  # 2 and 4 (the last is one of them)
    assert checkpoints_written(3, 0) == 1  # only at the end


def _record(step: int, gen_s: float, step_s: float, tokens: float, flops: float) -> dict:
    phases = {"generate": gen_s, "reward": 0.1, "ref_logprobs": 1.0, "update": step_s - gen_s - 1.1}
    return {
        "step": step,
        **{f"perf/{k}_s": v for k, v in phases.items()},
        "perf/step_s": step_s,
        "perf/gen_tokens_per_s": tokens / gen_s,
        "perf/model_flops": flops,
        "reward/mean": 0.1 * step,
    }


def test_summarize_skips_the_warm_up_step_hand_computed() -> None:
    records = [
        _record(1, 20.0, 40.0, 1000.0, 9e12),  # warm-up: left out
        _record(2, 4.0, 10.0, 800.0, 3e12),
        _record(3, 6.0, 12.0, 1000.0, 3e12),
        _record(4, 5.0, 14.0, 900.0, 4e12),
    ]
    rep = summarize(records, checkpoint_s=6.0, checkpoints=2, peak_flops=1e12, rss_mib=512.0)
    assert rep["steps"] == 4 and rep["steps_measured"] == 3
    assert rep["median_s"]["generate"] == 5.0  # median of 4, 6, 5
    assert rep["median_s"]["optimizer"] == 0.0  # never logged: 0
    assert rep["median_s"]["checkpoint"] == 3.0  # 6 s over 2 checkpoints
    assert rep["median_step_s"] == 12.0
    # 2700 tokens in 15 s of generation = 180 tokens/s; over 36 s of steps = 75 tokens/s
    assert rep["gen_tokens_per_s"] == pytest.approx(180.0)
    assert rep["gen_tokens_per_step_s"] == pytest.approx(75.0)
    assert rep["gen_tokens_per_step"] == pytest.approx(900.0)
    # 1e13 FLOPs in 36 s against 1e12 FLOP/s: 1e13 / 36 / 1e12 = 0.2778
    assert rep["mfu"] == pytest.approx(10 / 36)
    assert rep["reward_mean"] == [0.1, 0.2, pytest.approx(0.3), 0.4]


def test_summarize_one_step_uses_it() -> None:
    rep = summarize([_record(1, 2.0, 4.0, 100.0, 1e12)], 0.0, 0, 1e12, 1.0)
    assert rep["steps_measured"] == 1 and rep["median_s"]["generate"] == 2.0
    assert rep["mfu"] == pytest.approx(0.25)  # 1e12 / 4 s / 1e12


HUGE_PAGE_PROBE = (
    "import re, rlft.cli.main; rlft.cli.main.process_defaults(); import torch; "
    "t = torch.zeros(64 << 20, dtype=torch.uint8); "
    "print(sum(int(k) for k in re.findall(r'AnonHugePages:\\s+(\\d+) kB', open('/proc/self/smaps').read())))"
)
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(
    not THP_MODE.exists() or "[never]" in THP_MODE.read_text(),
    reason="the kernel has no transparent huge pages",
)
def test_cli_process_puts_large_tensors_on_huge_pages() -> None:
    # c10 madvises allocations >= 2 MB as MADV_HUGEPAGE only when THP_MEM_ALLOC_ENABLE was set
    # before torch's first allocation: a 64 MiB tensor, once touched, then sits (nearly all) on
    # 2 MB pages, counted in /proc/self/smaps' AnonHugePages (kB)
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 32 * 1024


def test_process_defaults_keep_the_users_setting(monkeypatch) -> None:
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    process_defaults()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
