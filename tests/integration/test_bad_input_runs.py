"""Bad input inside real runs on the tiny model: broken rewards keep the weights finite and are
named per function; bad dataset rows are left out (when allowed) without breaking exact resume,
and a refused resume loses no state; a NaN loss in SFT skips the step, counts it, then aborts."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from run_support import read_metrics, saved_weights

import rlft
import rlft.train.sft as sft_loop
from rlft.config.loader import build, merge_overrides
from rlft.config.sft import SFTConfig
from rlft.data.rows import DataError
from rlft.rewards.builtin import numeric_answer
from rlft.rewards.scoring import RewardError
from rlft.runtime.guard import NonFiniteError
from rlft.train.sft import train_sft

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=4",
    "train.microbatch_size=8",
]


def _finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_broken_rewards_keep_weights_finite_and_name_the_function(make_rl_config, tmp_path, caplog):
    calls = itertools.count()

    def explodes(prompt, completion, example):
        i = next(calls)  # by call: +inf, NaN, None, a raise, then a finite value, repeating
        if i % 5 == 3:
            raise ZeroDivisionError("bad row")
        return [math.inf, math.nan, None, 0.0, float(i)][i % 5]  # None: does not apply

    out = tmp_path / "rewards"
    # scale_rewards=none: the setting where an inf reward turned every weight into NaN elsewhere
    cfg = make_rl_config(*SMALL, "train.steps=2", "algo.scale_rewards=none", "train.optim.lr=0.1", out=out)
    with caplog.at_level(logging.WARNING):
        rlft.train_rl(cfg, reward_fns={"explodes": explodes})
    assert _finite(saved_weights(out / "final"))
    # 8 calls a step; i % 5 == 4 succeed, i % 5 == 2 do not apply (None), the rest fail:
    # step 1, i = 0..7: failures 0, 1, 3, 5, 6 (5), None at 2 and 7, success at 4;
    # step 2, i = 8..15: failures 8, 10, 11, 13, 15 (5), None at 12, successes at 9 and 14
    metrics = read_metrics(out)
    assert [m["reward/explodes_failures"] for m in metrics] == [5.0, 5.0]
    # failures score 0, so reward/mean = (4 / 8, (9 + 14) / 8)
    assert [m["reward/mean"] for m in metrics] == [0.5, 23 / 8]
    assert all(math.isfinite(m["optim/grad_norm"]) for m in metrics)
    first = "reward 'explodes' failed on 5 of 8 completions (first: returned a non-finite or non-numeric"
    assert first in caplog.text
    # partial failures raise the reward_failures alarm at each step that had them
    alarms = [json.loads(x) for x in (out / "alarms.jsonl").read_text().splitlines()]
    failing = [a for a in alarms if a["alarm"] == "reward_failures"]
    assert [a["step"] for a in failing] == [1]  # one episode: steps 1-2 in a row, reported once
    assert "explodes 5" in failing[0]["message"]


@pytest.mark.parametrize("shape", ["per_sample", "batched"])
def test_a_reward_failing_on_every_completion_stops_the_run_at_that_step(make_rl_config, tmp_path, shape):
    """A wrong field name (or a batched reward returning the wrong count): scoring everything 0
    would train on nothing, so step 1 stops with the function named and its exception chained."""

    def wrong_field(prompt, completion, example):
        return float(example["solution"] in completion)  # the rows have 'answer', not 'solution'

    def one_value(prompts, completions, examples):  # 1 value for 8 completions
        return [1.0], {}

    one_value.rlft_batched = True
    fn = {"per_sample": wrong_field, "batched": one_value}[shape]
    out = tmp_path / "run"
    cfg = make_rl_config(*SMALL, "train.steps=2", out=out)
    with pytest.raises(RewardError, match=f"reward '{fn.__name__}' failed on all 8 completions") as caught:
        rlft.train_rl(cfg, reward_fns={fn.__name__: fn, "numeric_answer": numeric_answer})
    if shape == "per_sample":
        assert isinstance(caught.value.__cause__, KeyError) and "'solution'" in str(caught.value)
    else:
        assert "returned 1 values for 8 completions" in str(caught.value)
    assert not (out / "metrics.jsonl").exists() or read_metrics(out) == []  # no step was logged
    assert not (out / "final").exists()


def _dataset(path: Path, bad: int) -> Path:
    good = [json.dumps({"id": i, "prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) for i in range(8)]
    bad_lines = [b'{"prompt": "caf\xe9"}', b'{"id": 1, "prompt": "repeat"}', b'{"prompt": 5}'][:bad]
    path.write_bytes(b"".join(x.encode() + b"\n" for x in good) + b"".join(x + b"\n" for x in bad_lines))
    return path


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_quarantined_rows_resume_exactly_and_a_refused_resume_loses_nothing(make_rl_config, tmp_path):
    data = _dataset(tmp_path / "d.jsonl", bad=2)  # 2 bad of 10 rows = 20%
    common = [*SMALL, f"data.path={data}", "data.max_bad_fraction=0.2", "train.save_every=1"]
    a, b = tmp_path / "a", tmp_path / "b"
    rlft.train_rl(make_rl_config(*common, "train.steps=2", out=a))
    rlft.train_rl(make_rl_config(*common, "train.steps=1", out=b))
    report = json.loads((b / "data_report.json").read_text())
    assert (report["rows"], report["bad_rows"], report["prompts"]) == (10, 2, 8)
    assert [p["where"] for p in report["problems"]] == [f"{data}:9", f"{data}:10"]
    step1 = b / "checkpoints" / "step-1"
    before = _digest(step1)
    _dataset(data, bad=3)  # now 3 bad of 11 = 27% > 20%: the resume is refused up front
    with pytest.raises(DataError, match=r"3 of 11 dataset rows are bad \(27.3%\)") as e:
        rlft.train_rl(make_rl_config(*common, "train.steps=2", "resume=true", out=b))
    assert f"{data}:11: field 'prompt': prompt must be a string" in str(e.value)
    assert _digest(step1) == before  # the checkpoint is untouched
    _dataset(data, bad=2)  # fixed: the resume continues exactly where the straight run went
    rlft.train_rl(make_rl_config(*common, "train.steps=2", "resume=true", out=b))
    wa, wb = saved_weights(a / "final"), saved_weights(b / "final")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "samples.jsonl").read_text() == (b / "samples.jsonl").read_text()


def _sft_config(out: Path, model_path: str, *overrides: str) -> SFTConfig:
    data = Path(__file__).resolve().parents[2] / "examples" / "sft_tiny.jsonl"
    keys = [f"output_dir={out}", f"model.path={model_path}", f"data.path={data}", "data.heldout_fraction=0"]
    base = ["log.progress=false", "log.tensorboard=false", "train.examples_per_step=4"]
    return build(SFTConfig, merge_overrides({}, [*keys, *base, *overrides]))


def test_sft_nan_loss_skips_steps_then_aborts(tmp_path, tiny_model_path, monkeypatch):
    real = sft_loop.token_ce_sum
    monkeypatch.setattr(sft_loop, "token_ce_sum", lambda model, batch: real(model, batch) * math.nan)
    out = tmp_path / "skip"
    train_sft(_sft_config(out, tiny_model_path, "train.steps=2", "train.max_nonfinite_steps=3"))
    assert [m["optim/skipped_steps"] for m in read_metrics(out)] == [1.0, 2.0]  # both skipped
    initial, final = saved_weights(Path(tiny_model_path)), saved_weights(out / "final")
    assert all(torch.equal(initial[k], final[k]) for k in initial)  # no step was taken
    with pytest.raises(NonFiniteError, match="3 consecutive steps with non-finite loss/grad norm"):
        train_sft(
            _sft_config(tmp_path / "abort", tiny_model_path, "train.steps=5", "train.max_nonfinite_steps=3")
        )
    assert [m["step"] for m in read_metrics(tmp_path / "abort")] == [1, 2]  # the 3rd step aborted
