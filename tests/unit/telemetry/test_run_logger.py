"""The logger seam (a fake backend through the protocol; wandb / trackio adapters against fake
modules, since neither is installed), alarms.jsonl, and reading a file a run is still writing."""

from __future__ import annotations

import json
import sys
import types

import pytest

from rlft.config.common import LogConfig
from rlft.config.loader import ConfigError, build
from rlft.telemetry.backends import BackendUnavailable, open_backends
from rlft.telemetry.metrics import RunLogger, read_jsonl_records


class FakeBackend:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []
        self.closed = False

    def log_scalars(self, step, scalars):
        self.logged.append((step, dict(scalars)))

    def close(self):
        self.closed = True


def test_backends_get_the_numeric_metrics_of_each_step(tmp_path):
    fake = FakeBackend()
    logger = RunLogger(tmp_path, total_steps=2, progress=False, backends=[fake])
    logger.log_metrics(1, {"loss/policy": 0.5, "rollout/n": 3, "note": "text", "bad": float("nan")})
    logger.log_metrics(2, {"loss/policy": 0.25})
    logger.close()
    # "note" is text and NaN is written as the string "nan": neither is a scalar
    assert fake.logged == [(1, {"loss/policy": 0.5, "rollout/n": 3}), (2, {"loss/policy": 0.25})]
    assert fake.closed
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first == {"step": 1, "loss/policy": 0.5, "rollout/n": 3, "note": "text", "bad": "nan"}
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # explicit backends replace TensorBoard


def test_for_config_tensorboard_default_and_switch_off(tmp_path):
    on = RunLogger.for_config(tmp_path / "on", LogConfig(progress=False), total_steps=1)
    on.log_metrics(1, {"a": 1.0})
    on.close()
    assert [type(b).__name__ for b in on.backends] == ["TensorBoardBackend"]
    assert list((tmp_path / "on").glob("events.out.tfevents.*"))
    off = RunLogger.for_config(tmp_path / "off", LogConfig(progress=False, tensorboard=False), total_steps=1)
    assert off.backends == []


def test_missing_optional_backend_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'rlft\[wandb\]'"):
        RunLogger.for_config(tmp_path, LogConfig(progress=False, backends=["wandb"]), total_steps=1)
    with pytest.raises(ValueError, match="unknown log backend 'mlflow'"):
        open_backends(["mlflow"], tmp_path)
    with pytest.raises(ConfigError, match=r"'log.backends\[1\]' must be one of"):
        build(LogConfig, {"backends": ["tensorboard", "wandbb"]}, "log.")


def test_wandb_and_trackio_adapters_call_their_apis(tmp_path, monkeypatch):
    calls: list[tuple] = []
    run = types.SimpleNamespace(
        log=lambda data, step: calls.append(("wandb.log", data, step)),
        finish=lambda: calls.append(("wandb.finish",)),
    )
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: calls.append(("wandb.init", kw)) or run
    trackio = types.ModuleType("trackio")
    trackio.init = lambda **kw: calls.append(("trackio.init", kw))
    trackio.log = lambda data, step: calls.append(("trackio.log", data, step))
    trackio.finish = lambda: calls.append(("trackio.finish",))
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "trackio", trackio)
    cfg = LogConfig(progress=False, backends=["wandb", "trackio"], tensorboard=False, project="p")
    logger = RunLogger.for_config(tmp_path / "myrun", cfg, total_steps=1, run_config={"seed": 3})
    logger.log_metrics(7, {"reward/mean": 0.5})
    logger.close()
    run_dir = str(tmp_path / "myrun")
    wandb_init = {"project": "p", "name": "myrun", "dir": run_dir, "config": {"seed": 3}, "resume": "allow"}
    assert calls == [
        ("wandb.init", wandb_init),
        ("trackio.init", {"project": "p", "name": "myrun", "config": {"seed": 3}}),
        ("wandb.log", {"reward/mean": 0.5}, 7),
        ("trackio.log", {"reward/mean": 0.5}, 7),
        ("wandb.finish",),
        ("trackio.finish",),
    ]


def test_alarms_are_written_and_warned_and_trimmed_on_resume(tmp_path, capsys):
    logger = RunLogger(tmp_path, total_steps=3, progress=False, backends=[])
    for step in (1, 2):
        logger.log_alarm({"step": step, "alarm": "kl_blowup", "message": f"m{step}"})
    assert "WARNING alarm kl_blowup at step 2: m2" in capsys.readouterr().out
    RunLogger(tmp_path, total_steps=3, start_step=1, progress=False, backends=[])  # resume at step 1
    assert read_jsonl_records(tmp_path / "alarms.jsonl") == [
        {"step": 1, "alarm": "kl_blowup", "message": "m1"}
    ]


def test_read_jsonl_records_tolerates_only_a_cut_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')  # a run writing step 3 right now
    assert read_jsonl_records(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        read_jsonl_records(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: expected a JSON object, got list"):
        read_jsonl_records(path)
    assert read_jsonl_records(tmp_path / "absent.jsonl") == []
