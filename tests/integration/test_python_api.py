"""The Python entry for objects a user already holds: a loaded model and tokenizer, reward callables
or names, datasets, step callbacks. Each builds the same run as the config path."""

from __future__ import annotations

import json

import pytest
import torch
from run_support import read_metrics

import rlft
from rlft.config.loader import ConfigError
from rlft.models.load import load_causal_lm, load_tokenizer
from rlft.rl.inputs import rl_config

COMMON = ("train.steps=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=6")


def _training_metrics(out):
    return [{k: v for k, v in m.items() if not k.startswith(("perf/", "time"))} for m in read_metrics(out)]


def test_a_loaded_model_and_tokenizer_give_the_run_of_its_path(make_rl_config, tiny_model_path, tmp_path):
    by_path, by_object = tmp_path / "path", tmp_path / "object"
    rlft.train_rl(make_rl_config(*COMMON, "algo.kl_coef=0.05", out=by_path))
    model, tok = load_causal_lm(tiny_model_path), load_tokenizer(tiny_model_path)
    rlft.train_rl(make_rl_config(*COMMON, "algo.kl_coef=0.05", out=by_object), model=model, tokenizer=tok)
    assert _training_metrics(by_path) == _training_metrics(by_object)
    # the reference was a frozen copy: training moved the handed-over model, and config.yaml names it
    assert "model:\n  path: " + tiny_model_path in (by_object / "config.yaml").read_text()


def test_a_callback_sees_each_step_and_can_end_the_run(make_rl_config, tmp_path):
    seen: list[dict] = []

    class StopAtTwo:
        def on_step_end(self, metrics):
            seen.append(metrics)
            return metrics["step"] == 2

    lengths: list[float] = []
    out = tmp_path / "run"
    res = rlft.train_rl(
        make_rl_config(*COMMON, "train.steps=4", out=out),
        callbacks=[StopAtTwo(), lambda m: lengths.append(m["rollout/response_len"])],
    )
    assert [m["step"] for m in seen] == [1, 2] and len(lengths) == 2
    assert res["steps"] == 2 and res["ended_early"] is True
    assert (out / "final" / "config.json").exists()  # ended, not stopped: final/ is written
    assert (out / "checkpoints" / "step-2").exists()  # and a checkpoint of the last step
    assert [m["step"] for m in read_metrics(out)] == [1, 2]


def test_reward_funcs_take_callables_and_names_alike(make_rl_config, tmp_path):
    def numeric_twin(prompt, completion, example):
        from rlft.rewards.builtin import numeric_answer

        return numeric_answer(prompt, completion, example)

    out = tmp_path / "run"
    rlft.train_rl(make_rl_config(*COMMON, out=out), reward_funcs=["numeric_answer", numeric_twin])
    for m in read_metrics(out):
        assert m["reward/numeric_answer"] == m["reward/numeric_twin"]


def test_a_dict_config_with_overrides_is_the_yaml_config(make_rl_config, tmp_path):
    from rlft.config.loader import to_dict

    cfg = make_rl_config(*COMMON, out=tmp_path / "a")
    as_dict = json.loads(json.dumps(to_dict(cfg)))
    expected = make_rl_config(*COMMON, "train.steps=3", out=tmp_path / "a")
    assert rl_config(as_dict, ["train.steps=3"]) == expected


def test_bad_api_input_is_named(make_rl_config, tmp_path):
    with pytest.raises(ConfigError, match="on_step_end"):
        rlft.train_rl(make_rl_config(*COMMON, out=tmp_path / "a"), callbacks=[object()])
    with pytest.raises(ValueError, match="not both"):
        rlft.train_rl(make_rl_config(*COMMON, out=tmp_path / "b"), ["numeric_answer"], reward_funcs=["x"])
    with pytest.raises(ConfigError, match="must be an RLConfig"):
        rlft.train_rl(42)


def _user_rows(n: int = 24) -> list[dict]:
    return [
        {
            "id": i,
            "prompt": [{"role": "user", "content": f"What is {i} + {i + 1}?"}],
            "solution": str(2 * i + 1),
        }
        for i in range(n)
    ]


def test_a_dataset_object_and_a_list_of_dicts_give_the_run_of_the_jsonl(make_rl_config, tmp_path):
    from datasets import Dataset

    rows = _user_rows()
    data = tmp_path / "user.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (*COMMON, "rewards=[{fn: numeric_answer}]", "eval.after=true", "eval.fresh_process=false")
    runs = {"jsonl": tmp_path / "jsonl", "dataset": tmp_path / "dataset", "list": tmp_path / "list"}
    res = {"jsonl": rlft.train_rl(make_rl_config(*common, f"data.path={data}", out=runs["jsonl"]))}
    res["dataset"] = rlft.train_rl(
        make_rl_config(*common, out=runs["dataset"]), train_dataset=Dataset.from_list(rows)
    )
    res["list"] = rlft.train_rl(make_rl_config(*common, out=runs["list"]), train_dataset=rows)
    metrics = {k: _training_metrics(out) for k, out in runs.items()}
    assert metrics["dataset"] == metrics["jsonl"] == metrics["list"]
    heldout = {k: (out / "heldout.jsonl").read_text() for k, out in runs.items()}
    assert heldout["dataset"] == heldout["list"] and heldout["dataset"].count("\n") >= 1
    # the held-out rows are the user's own (a `solution` column), never the built-in task
    assert all("solution" in json.loads(line) for line in heldout["list"].splitlines())
    assert res["list"]["eval"]["after"]["n"] == heldout["list"].count("\n")


def test_an_eval_dataset_is_what_gets_evaluated(make_rl_config, tmp_path):
    train, held = _user_rows(20), _user_rows(26)[20:]
    out = tmp_path / "run"
    cfg = make_rl_config(*COMMON, "rewards=[{fn: numeric_answer}]", "eval.after=true", out=out)
    res = rlft.train_rl(cfg, train_dataset=train, eval_dataset=held)
    assert res["eval"]["after"]["n"] == 6
    assert [json.loads(x)["id"] for x in (out / "heldout.jsonl").read_text().splitlines()] == list(
        range(20, 26)
    )


def test_a_peft_model_trains_its_adapters_against_itself_with_them_off(
    make_rl_config, tiny_model_path, tmp_path
):
    """A PeftModel handed over: its adapters train, the reference is the same model with the
    adapters off (no copy), so at step 1 (LoRA's B = 0: policy = base) the KL is exactly 0; the
    saved final/ is the base with the trained adapters merged."""
    from run_support import saved_weights

    from rlft.models.load import add_lora

    base = load_causal_lm(tiny_model_path)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = add_lora(base, 4, 8.0, "all-linear")
    out = tmp_path / "run"
    cfg = make_rl_config(*COMMON, "algo.kl_coef=0.1", "train.optim.lr=1e-2", out=out)
    rlft.train_rl(cfg, model=model, tokenizer=load_tokenizer(tiny_model_path))
    first, second = read_metrics(out)
    assert first["policy/kl"] == 0.0 and second["policy/kl"] > 0.0
    final = saved_weights(out / "final")
    q = next(k for k in before if k.endswith("self_attn.q_proj.weight"))
    assert not torch.equal(final[q], before[q])  # the adapters trained and were merged
    assert torch.equal(final["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # frozen
