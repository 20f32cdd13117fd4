"""`python -m rlft ...` as a subprocess from the repo root: rl, check-config, eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rlft

TINY = "configs/grpo_tiny.yaml"
DESIGN_KEYS = [
    "reward/mean",
    "policy/kl",
    "policy/clip_frac",
    "policy/entropy",
    "rollout/response_len",
    "perf/step_s",
    "perf/gen_tokens_per_s",
]


def test_rl_cli_writes_every_artifact(cli, tmp_path, tiny_model_path):
    out = tmp_path / "run"
    p = cli(
        "rl",
        "--config",
        TINY,
        f"output_dir={out}",
        "train.steps=2",
        "train.save_every=1",
        "eval.before=false",
        "eval.after=false",
        "rollout.prompts_per_step=2",
        "log.tensorboard=true",
    )
    assert p.returncode == 0, p.stderr
    assert f"[rlft] final model: {out / 'final'}" in p.stdout

    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        for key in DESIGN_KEYS:
            assert isinstance(m[key], float), key
        assert 0.0 <= m["policy/clip_frac"] <= 1.0 and m["policy/kl"] >= 0.0  # k3 >= 0
        assert 1.0 <= m["rollout/response_len"] <= 8.0  # rollout.max_new_tokens = 8
        # score = numeric_answer + 0.5 * digit_density, each in [0, 1] -> [0, 1.5]
        assert 0.0 <= m["reward/mean"] <= 1.5
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 4  # log.samples_per_step = 4, 2 steps
    assert set(samples[0]) == {"step", "prompt", "completion", "score", "answer", "group", "tag"}

    assert list(out.glob("events.out.tfevents.*")), sorted(p.name for p in out.iterdir())
    ckpts = out / "checkpoints"
    # save_every 1, keep_checkpoints 2 (default): step-1 and step-2, both complete, no temp dirs
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-1", "step-2"]
    assert all((ckpts / d / "COMPLETE").exists() for d in ("step-1", "step-2"))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert tok.pad_token is not None and tok.chat_template
    ids = tok("What is 2 + 2?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], len(tok))
    # the final weights are those of the last checkpoint
    final = AutoModelForCausalLM.from_pretrained(ckpts / "step-2")
    for k, v in model.state_dict().items():
        assert torch.equal(v, final.state_dict()[k]), k


def test_rl_cli_unknown_key_exits_with_suggestion(cli, tmp_path):
    p = cli("rl", "--config", TINY, f"output_dir={tmp_path}", "algo.kl_cof=0.1")
    assert p.returncode == 2
    assert "unknown config key 'algo.kl_cof'; did you mean 'algo.kl_coef'?" in p.stderr
    assert TINY in p.stderr  # names the file too
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_check_config_prints_batch_arithmetic(cli):
    p = cli("check-config", "--config", TINY)
    assert p.returncode == 0, p.stderr
    assert "kl_coef: 0.04" in p.stdout
    line = next(x for x in p.stdout.splitlines() if x.startswith("# batch arithmetic: "))
    ba = json.loads(line.removeprefix("# batch arithmetic: "))
    # P=4 x G=4 = 16 sequences, whole batch per step, microbatch 8 -> 16/8 = 2 accumulation passes
    assert ba == {
        "sequences_per_step": 16,
        "minibatch_size": 16,
        "microbatch_size": 8,
        "optimizer_steps_per_rl_step": 1,
        "grad_accumulation": 2,
    }


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        (
            ["train.minibatch_size=5"],
            [
                "'train.minibatch_size'=5 must divide the 16 sequences",
                "rollout.prompts_per_step",
                "rollout.samples_per_prompt",
            ],
        ),
        (["train.steps=abc"], ["'train.steps' must be an integer, got 'abc'"]),
        (["train.optim.lrr=1"], ["did you mean 'train.optim.lr'?"]),
    ],
)
def test_check_config_errors_exit_nonzero_naming_keys(cli, overrides, messages):
    p = cli("check-config", "--config", TINY, *overrides)
    assert p.returncode == 2
    assert p.stderr.startswith("rlft check-config: error: ")
    for msg in messages:
        assert msg in p.stderr


@pytest.mark.parametrize("switch", ["-v", "RLFT_DEBUG=1"])
def test_an_error_reported_in_one_line_shows_its_traceback_on_request(cli, switch, monkeypatch):
    plain = cli("check-config", "--config", TINY, "train.steps=abc")
    assert "Traceback" not in plain.stderr and "RLFT_DEBUG=1 shows the traceback" in plain.stderr
    if switch == "-v":
        p = cli("-v", "check-config", "--config", TINY, "train.steps=abc")
    else:
        monkeypatch.setenv("RLFT_DEBUG", "1")
        p = cli("check-config", "--config", TINY, "train.steps=abc")
    assert p.returncode == 2
    # the traceback reaches into the config loader, then the same one-line message
    assert p.stderr.startswith("Traceback (most recent call last):")
    assert 'rlft/config/loader.py", line' in p.stderr
    last = p.stderr.rstrip().splitlines()[-1]
    assert last == f"rlft check-config: error: {TINY}: 'train.steps' must be an integer, got 'abc'"


def test_version_is_the_packages(cli):
    from importlib.metadata import version

    p = cli("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"rlft {version('rlft')}" == f"rlft {rlft.__version__}"


def test_check_config_docs_lists_keys(cli):
    p = cli("check-config", "--docs")
    assert p.returncode == 0
    assert "train.optim.lr = 1e-05  # peak learning rate (AdamW)" in p.stdout
    assert "algo.kl_coef = 0.0" in p.stdout


def test_eval_cli_json(cli, tmp_path, tiny_model_path):
    data = tmp_path / "eval.jsonl"
    rows = [
        {"prompt": "What is 2 + 3?", "answer": "5"},
        {"prompt": "What is 4 * 4?", "answer": 16},
        {"prompt": "What is 9 - 7?", "answer": "2"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.json"
    p = cli(
        "eval",
        "--model",
        tiny_model_path,
        "--data",
        str(data),
        "--samples",
        "2",
        "--max-new-tokens",
        "6",
        "--json",
        str(out),
        "--rows-out",
        str(tmp_path / "rows.jsonl"),
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["n"] == 3 and res["k"] == 2
    for key in ("accuracy", "pass@k", "maj@k"):
        assert 0.0 <= res[key] <= 1.0
    # per row: pass@k >= accuracy (any correct of k=n) and pass@k >= maj@k (a correct majority
    # needs a correct sample); averages keep both inequalities
    assert res["pass@k"] >= res["accuracy"] and res["pass@k"] >= res["maj@k"]
    per_row = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [len(r["completions"]) for r in per_row] == [2, 2, 2]
    assert res["accuracy"] == pytest.approx(sum(r["accuracy"] for r in per_row) / 3)


def test_eval_cli_bad_data_names_line(cli, tmp_path, tiny_model_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n')
    p = cli("eval", "--model", tiny_model_path, "--data", str(data))
    assert p.returncode == 2
    assert f"{data}:2: missing field 'answer'" in p.stderr


def test_cli_runs_from_any_directory_with_absolute_paths(cli, tmp_path):
    p = cli("check-config", "--config", str(Path(__file__).parents[2] / TINY), cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_a_run_error_is_one_line_without_traceback(cli, tmp_path):
    # a reward function that raises, with on_error=error: RewardError (a RunError) -> exit 1
    boom = tmp_path / "boom.py"
    boom.write_text("def boom(prompt, completion, example):\n    raise ValueError('kaput')\n")
    p = cli(
        "rl",
        "--config",
        TINY,
        f"output_dir={tmp_path / 'run'}",
        f"rewards=[{{fn: '{boom}:boom', on_error: error}}]",
        "train.steps=1",
        "eval.before=false",
        "eval.after=false",
    )
    assert p.returncode == 1, p.stderr
    assert "rlft rl: error:" in p.stderr and "boom" in p.stderr and "kaput" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_reward_failing_everywhere_stops_at_step_1_with_its_traceback(cli, tmp_path):
    # on_error: zero (the default) keeps partial failures, but none of 16 completions scored means
    # no signal at all: exit 1 at step 1, the function and its exception named, its traceback logged
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def wrong_field(prompt, completion, example):\n    return float(example['solution'])\n")
    out = tmp_path / "run"
    p = cli(
        "rl",
        "--config",
        TINY,
        f"output_dir={out}",
        f"rewards=[{{fn: '{wrong}:wrong_field'}}]",
        "train.steps=2",
        "eval.before=false",
        "eval.after=false",
    )
    assert p.returncode == 1, p.stderr
    last = p.stderr.rstrip().splitlines()[-2]  # then the "-v shows the traceback" hint
    assert last.startswith("rlft rl: error: reward 'wrong_field' failed on all 16 completions of this step")
    assert last.endswith("the first: raised KeyError: 'solution'")
    assert "Traceback" in p.stderr and "return float(example['solution'])" in p.stderr
    assert not (out / "final").exists() and not (out / "checkpoints").exists()
