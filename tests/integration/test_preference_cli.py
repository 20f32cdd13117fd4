"""The preference subcommands through the CLI: `rlft rm [train]`, `rlft rm score`, `rlft dpo`."""

from __future__ import annotations

import json

import pytest
from preference_support import mixed_rows, write_jsonl
from run_support import read_metrics

# ---------------------------------------------------------------- CLI


def test_cli_rm_train_without_subcommand_then_score(cli, tmp_path, tiny_model_path):
    import yaml

    from rlft.models.load import load_tokenizer
    from rlft.models.reward_model import load_reward_model, score_texts

    data = write_jsonl(tmp_path / "prefs.jsonl", mixed_rows())
    out = tmp_path / "rm"
    config = tmp_path / "rm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(out),
                "model": {"path": tiny_model_path},
                "data": {"path": str(data), "heldout_fraction": 0.0},
                "train": {"steps": 2, "rankings_per_step": 3, "optim": {"lr": 1e-3}},
                "log": {"progress": False, "tensorboard": False},
            }
        )
    )
    p = cli("rm", "--config", str(config))  # no `train`: the default subcommand
    assert p.returncode == 0, p.stderr
    assert f"[rlft] final model: {out / 'final'}" in p.stdout
    assert [m["step"] for m in read_metrics(out)] == [1, 2]

    rows = [
        {"prompt": "Say yes.", "response": "yes", "id": 1},
        {"prompt": "Greet me.", "responses": ["hi", "hello!"], "id": 2},
        {"prompt": "2 + 2?", "response": "4", "id": 3},
    ]
    data_in = write_jsonl(tmp_path / "rows.jsonl", rows)
    scored = tmp_path / "scored.jsonl"
    p = cli("rm", "score", "--model", str(out / "final"), "--data", str(data_in), "--out", str(scored))
    assert p.returncode == 0, p.stderr
    assert "4 responses scored" in p.stdout
    got = [json.loads(x) for x in scored.read_text().splitlines()]
    assert [r["id"] for r in got] == [1, 2, 3]
    assert all("_source" not in r for r in got)
    # a `response` row gets `score`, a `responses` row gets `scores` (one per response, in order)
    assert set(got[0]) == {"prompt", "response", "id", "score"}
    assert set(got[1]) == {"prompt", "responses", "id", "scores"}

    tok = load_tokenizer(str(out / "final"), padding_side="right")
    model = load_reward_model(str(out / "final"), tok)
    expected = score_texts(
        model, tok, ["Say yes.", "Greet me.", "Greet me.", "2 + 2?"], ["yes", "hi", "hello!", "4"]
    )
    assert got[0]["score"] == pytest.approx(expected[0], abs=1e-5)
    assert got[1]["scores"] == pytest.approx(expected[1:3], abs=1e-5)
    assert got[2]["score"] == pytest.approx(expected[3], abs=1e-5)


def test_cli_dpo_unknown_key_exits_2_naming_it(cli, tmp_path):
    p = cli("dpo", f"output_dir={tmp_path / 'dpo'}", "dpo.betta=0.2")
    assert p.returncode == 2
    assert "unknown config key 'dpo.betta'" in p.stderr
    assert "dpo.beta" in p.stderr  # the suggestion
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "dpo").exists()


def test_cli_bad_ranking_exits_2_naming_file_line_and_field(cli, tmp_path, tiny_model_path):
    rows = mixed_rows()[:2] + [{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1, 1]}]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    p = cli(
        "rm",
        "train",
        f"output_dir={tmp_path / 'rm'}",
        f"model.path={tiny_model_path}",
        f"data.path={data}",
        "log.progress=false",
        "log.tensorboard=false",
    )
    assert p.returncode == 2, p.stderr
    assert f"{data}:3: field 'ranking': response 1 appears twice" in p.stderr
    assert "Traceback" not in p.stderr
