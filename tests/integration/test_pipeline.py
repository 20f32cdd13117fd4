"""`rlft pipeline` execution. A fake runner stands in for the stage processes (it records each call
and writes what a finished stage leaves behind): complete stages are skipped, a failed stage stops
the pipeline and resumes on the next run, a changed stage reruns with everything downstream of it.
One real run of configs/pipeline_tiny.yaml on the tiny model checks the wiring end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlft.config.pipeline import load_pipeline_config
from rlft.pipeline import StageFailed, run_logged, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = {  # every kind's key metric, so each stage row must pick its own
    "heldout": {"loss": 1.5, "pair_accuracy": 0.75, "rewards_accuracy": 0.625, "forward_kl": 0.125},
    "eval": {"after": {"accuracy": 0.5}},
    "metrics": {"reward/mean": 0.3},
}
METRICS = {
    "sft": ("heldout.loss", 1.5),
    "rm": ("heldout.pair_accuracy", 0.75),
    "rl": ("eval.after.accuracy", 0.5),
    "distill": ("heldout.forward_kl", 0.125),
    "eval": ("accuracy", 0.25),
}


class FakeRunner:
    """Records (stage, argv, files in the stage dir at call time); writes a finished stage's
    outputs, or a checkpoint and an exit code for the stages in `fail` (0 = stopped early)."""

    def __init__(self, fail: dict[str, int] | None = None):
        self.fail = dict(fail or {})
        self.calls: list[tuple[str, list[str], list[str]]] = []

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def __call__(self, argv: list[str], logfile: Path) -> int:
        d = logfile.parent
        self.calls.append((d.name, argv, sorted(p.name for p in d.iterdir())))
        logfile.write_text("fake stage output\n")
        if d.name in self.fail:
            (d / "checkpoints" / "step-1").mkdir(parents=True)
            return self.fail.pop(d.name)
        if argv[3] == "eval":
            Path(argv[argv.index("--json") + 1]).write_text(json.dumps({"accuracy": 0.25, "n": 4}))
        else:
            (d / "summary.json").write_text(json.dumps(SUMMARY))
            (d / "final").mkdir()
        return 0


def write_pipeline(tmp_path: Path) -> str:
    """sft, rm (independent), rl (policy from sft, reward model from rm), distill (rl teaches),
    eval (the student on rl's held-out set), on the tiny configs."""
    cfg = lambda name: str(ROOT / "configs" / f"{name}.yaml")  # noqa: E731
    stages = [
        {"name": "sft", "kind": "sft", "config": cfg("sft_tiny")},
        {"name": "rm", "kind": "rm", "config": cfg("rm_tiny")},
        {
            "name": "rl",
            "kind": "rl",
            "config": cfg("grpo_tiny"),
            "model_from": "sft",
            "reward_model_from": "rm",
        },
        {"name": "distill", "kind": "distill", "config": cfg("distill_tiny"), "model_from": "rl"},
        {"name": "eval", "kind": "eval", "model_from": "distill", "limit": 4},
    ]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "stages": stages}))
    return str(path)


def run(path: str, runner: FakeRunner, *overrides: str) -> dict[str, Any]:
    return run_pipeline(load_pipeline_config(path, overrides), runner)


def statuses(result: dict[str, Any]) -> list[str]:
    return [r["status"] for r in result["stages"]]


ALL = ["sft", "rm", "rl", "distill", "eval"]


def test_second_run_skips_every_complete_stage(tmp_path, capsys):
    path, first = write_pipeline(tmp_path), FakeRunner()
    result = run(path, first)
    assert first.names == ALL and statuses(result) == ["ran"] * 5
    assert {r["stage"]: (r["metric"], r["value"]) for r in result["stages"]} == METRICS
    rl_argv = first.calls[2][1]
    assert rl_argv[:3] == [sys.executable, "-m", "rlft"]
    assert rl_argv[3:] == ["rl", "--config", str(tmp_path / "out" / "rl" / "stage.yaml"), "--resume"]
    assert first.calls[1][1][3:5] == ["rm", "train"]
    stage_yaml = yaml.safe_load((tmp_path / "out" / "rl" / "stage.yaml").read_text())
    assert stage_yaml["model"]["path"] == str(tmp_path / "out" / "sft" / "final")

    second = FakeRunner()
    again = run(path, second)
    assert second.names == [] and statuses(again) == ["skipped"] * 5
    saved = json.loads((tmp_path / "out" / "pipeline_summary.json").read_text())
    assert saved == again and [r["value"] for r in saved["stages"]] == [v for _, v in METRICS.values()]
    table = capsys.readouterr().out.split("[rlft] pipeline summary")[-1]
    assert "eval     eval     skipped" in table and "accuracy = 0.2500" in table


def test_failed_stage_stops_the_pipeline_then_resumes(tmp_path):
    path, out = write_pipeline(tmp_path), tmp_path / "out"
    first = FakeRunner(fail={"rl": 3})
    with pytest.raises(StageFailed) as e:
        run(path, first)
    assert str(e.value) == f"stage 'rl' (rl) failed with exit code 3; log: {out / 'rl' / 'stage.log'}"
    assert first.names == ["sft", "rm", "rl"]  # later stages did not run
    saved = json.loads((out / "pipeline_summary.json").read_text())
    assert statuses(saved) == ["ran", "ran", "failed", "not run", "not run"]

    second = FakeRunner()
    result = run(path, second)
    assert second.names == ["rl", "distill", "eval"]
    name, argv, files = second.calls[0]
    assert argv[-1] == "--resume" and "checkpoints" in files  # kept for the stage to resume from
    assert statuses(result) == ["skipped", "skipped", "ran", "ran", "ran"]


def test_resume_false_restarts_an_interrupted_stage(tmp_path):
    path = write_pipeline(tmp_path)
    with pytest.raises(StageFailed, match="stage 'rm'"):
        run(path, FakeRunner(fail={"rm": 1}))
    second = FakeRunner()
    run(path, second, "resume=false")
    assert second.names == ["rm", "rl", "distill", "eval"]
    assert "checkpoints" not in second.calls[0][2]  # emptied: started over


def test_stage_that_stops_early_is_not_complete(tmp_path):
    path, out = write_pipeline(tmp_path), tmp_path / "out"
    with pytest.raises(StageFailed, match=r"stage 'sft' \(sft\) exited 0 but did not finish"):
        run(path, FakeRunner(fail={"sft": 0}))  # e.g. Ctrl-C: a checkpoint, no final/
    assert not (out / "sft" / ".stage-complete").exists()


def test_changed_stage_reruns_with_everything_downstream(tmp_path, capsys):
    path, out = write_pipeline(tmp_path), tmp_path / "out"
    run(path, FakeRunner())
    (out / "rm" / "stale.txt").write_text("from the old config")
    runner = FakeRunner()
    result = run(path, runner, "rm.train.steps=3")
    assert runner.names == ["rm", "rl", "distill", "eval"]  # sft does not read from rm
    assert statuses(result)[0] == "skipped"
    assert "stale.txt" not in runner.calls[0][2]  # a changed stage starts in an emptied dir
    assert "stage 'rm': config changed (" in capsys.readouterr().out

    runner = FakeRunner()
    run(path, runner, "rm.train.steps=3", "eval.max_new_tokens=9")
    assert runner.names == ["eval"]  # nothing reads from eval


def test_run_logged_streams_to_log_and_console(tmp_path, capsys):
    log = tmp_path / "s" / "stage.log"
    log.parent.mkdir()
    code = run_logged(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"], log
    )
    assert code == 4
    text = log.read_text()
    assert "out\n" in text and "err\n" in text
    console = capsys.readouterr().out
    assert "[s] out\n" in console and "[s] err\n" in console


def test_pipeline_tiny_end_to_end(tmp_path, monkeypatch, tiny_model_path):
    """The real stages on the tiny model: sft -> rl -> distill -> eval, then a second run."""
    monkeypatch.chdir(ROOT)  # the stage configs' data paths are relative to the repo root
    out = tmp_path / "out"
    cfg = load_pipeline_config("configs/pipeline_tiny.yaml", [f"output_dir={out}"])
    result = run_pipeline(cfg)
    rows = {r["stage"]: r for r in result["stages"]}
    assert list(rows) == ["sft", "rl", "distill", "eval"]
    assert all(r["status"] == "ran" for r in rows.values())
    assert rows["eval"]["value"] == json.loads((out / "eval" / "eval.json").read_text())["accuracy"]
    assert rows["rl"]["metric"] == "eval.after.accuracy" and rows["distill"]["metric"] == "heldout.forward_kl"
    # each stage ran on the previous one's output (as the stage processes themselves record it)
    assert yaml.safe_load((out / "rl" / "config.yaml").read_text())["model"]["path"] == str(
        out / "sft" / "final"
    )
    assert "student: teacher layers [0]" in (out / "distill" / "stage.log").read_text()
    assert f"model {out / 'distill' / 'final'}: accuracy" in (out / "eval" / "stage.log").read_text()

    never = FakeRunner(fail={name: 9 for name in rows})
    again = run_pipeline(load_pipeline_config("configs/pipeline_tiny.yaml", [f"output_dir={out}"]), never)
    assert never.names == [] and statuses(again) == ["skipped"] * 4
    assert [r["value"] for r in again["stages"]] == [r["value"] for r in result["stages"]]
