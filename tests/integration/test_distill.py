"""Distillation on tiny models: teacher = a 4-layer tiny Llama, student = its every-other-layer
subset (or all its layers). The loss is exactly 0 for a student equal to the teacher (token
positions line up), matches a naive per-example computation, offline distillation lowers the
held-out KL, resume reproduces a straight run, and traces are the verifier-accepted samples."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from run_support import read_metrics, saved_weights

from rlft.config.distill import DistillConfig
from rlft.config.loader import build, merge_overrides

BASE = ["log.progress=false", "log.tensorboard=false", "train.optim.warmup_steps=0", "train.eval_every=0"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from rlft.models.students import make_layer_subset_student
    from rlft.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("distill-models")
    teacher = build_tiny_model(root / "teacher4", seed=5, layers=4)
    subset = make_layer_subset_student(str(teacher), "every_other", root / "student3")
    same = make_layer_subset_student(str(teacher), [0, 1, 2, 3], root / "student4")
    return {"teacher": str(teacher), "subset": str(subset), "same": str(same)}


@pytest.fixture(scope="module")
def rows_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 prompt/completion rows (arithmetic with a worked answer)."""
    rows = [
        {"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}.", "answer": str(a + b)}
        for a, b in [(3 + i, 11 + 2 * i) for i in range(40)]
    ]
    path = tmp_path_factory.mktemp("distill-data") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(out: Path, models: dict[str, str], student: str, *overrides: str) -> DistillConfig:
    keys = [f"output_dir={out}", f"teacher={models['teacher']}", f"student.path={models[student]}"]
    return build(DistillConfig, merge_overrides({}, [*keys, *BASE, *overrides]))


@pytest.mark.parametrize("mode", ["offline", "on_policy"])
def test_student_equal_to_teacher_has_exactly_zero_loss(mode, models, rows_path, tmp_path):
    """Same weights, same tokens: the divergence at every response position is exactly 0, which
    fails if the student's and teacher's logits were taken at shifted positions."""
    from rlft.train.distill_logits import train_logit_distill

    data = [f"data.path={rows_path}"] if mode == "offline" else ["data.heldout_size=4"]
    cfg = _config(
        tmp_path, models, "same", f"mode={mode}", "train.steps=1", "train.prompts_per_step=4",
        "on_policy.max_new_tokens=8", *data,
    )  # fmt: skip
    result = train_logit_distill(cfg)
    (step1,) = read_metrics(tmp_path)
    for key in ("loss/distill", "distill/forward_kl", "distill/reverse_kl", "distill/logprob_gap"):
        assert step1[key] == 0.0, key
    assert step1["distill/tokens"] > 0
    assert result["heldout_before"]["forward_kl"] == 0.0
    assert result["heldout_before"]["reverse_kl"] == 0.0


def test_batched_divergence_matches_naive_per_example_kl(models, rows_path):
    """The loop's padded, microbatched forward KL equals a naive one: each example alone, full
    logits, position j predicting token j + 1, the completion's positions picked by hand."""
    from rlft.models.load import load_causal_lm, load_tokenizer
    from rlft.train.distill_logits import DistillExample, Models, divergence_sums, encode_completion_rows

    tok = load_tokenizer(models["teacher"])
    m = Models(
        load_causal_lm(models["subset"]).eval(), load_causal_lm(models["teacher"]).eval(), tok, len(tok)
    )
    cfg = _config(Path("unused"), models, "subset", f"data.path={rows_path}")
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()[:3]]
    rows[1]["completion"] = "a much longer completion than the others"  # different lengths: padding
    examples: list[DistillExample] = encode_completion_rows(tok, rows, cfg.data)
    got = divergence_sums(m, [e.prompt_ids for e in examples], [e.response_ids for e in examples], cfg)
    naive, tokens = 0.0, 0
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e.prompt_ids + e.response_ids])
            lp, n = len(e.prompt_ids), len(e.response_ids)
            s = torch.log_softmax(m.student(ids).logits[0, lp - 1 : lp - 1 + n], -1)
            t = torch.log_softmax(m.teacher(ids).logits[0, lp - 1 : lp - 1 + n], -1)
            naive += float((t.exp() * (t - s)).sum())
            tokens += n
    assert int(got["tokens"]) == tokens
    assert got["loss"].item() == pytest.approx(naive, rel=1e-4)
    assert naive > 0


def test_offline_forward_kl_distillation_lowers_heldout_kl(models, rows_path, tmp_path):
    """20 steps of offline forward-KL distillation into the every-other-layer student (built by
    the run itself from student_layers): the held-out KL, measured by the same function before
    and after, drops."""
    from rlft.train.distill import run_distill

    cfg = _config(
        tmp_path, models, "subset", f"data.path={rows_path}", "data.heldout_fraction=0.25",
        "student_layers=every_other", "train.steps=20", "train.prompts_per_step=8",
        "train.microbatch_size=4", "train.optim.lr=3e-3", "train.save_every=0",
    )  # fmt: skip
    result = run_distill(cfg)
    assert json.loads((tmp_path / "student-init" / "student_info.json").read_text())["layers"] == [0, 2, 3]
    before, after = result["heldout_before"], result["heldout"]
    assert before["tokens"] == after["tokens"] > 0
    assert after["forward_kl"] < 0.5 * before["forward_kl"], (before, after)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(result["final_dir"]).config.num_hidden_layers == 3


@pytest.mark.parametrize("mode", ["offline", "on_policy"])
def test_resume_reproduces_the_straight_run(mode, models, rows_path, tmp_path):
    from rlft.train.distill_logits import train_logit_distill

    common = [
        f"mode={mode}", f"data.path={rows_path}", "train.prompts_per_step=3", "train.microbatch_size=2",
        "train.save_every=2", "train.keep_checkpoints=5", "train.optim.lr=1e-3", "loss=jsd",
        "on_policy.max_new_tokens=6", "on_policy.samples_per_prompt=2",
    ]  # fmt: skip
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    train_logit_distill(_config(straight, models, "subset", "train.steps=4", *common))
    train_logit_distill(_config(parted, models, "subset", "train.steps=2", *common))
    assert sorted(p.name for p in (parted / "checkpoints").iterdir()) == ["step-2"]
    train_logit_distill(_config(parted, models, "subset", "train.steps=4", "resume=true", *common))
    a, b = saved_weights(straight / "final"), saved_weights(parted / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = read_metrics(straight), read_metrics(parted)
    assert [x["step"] for x in mb] == [1, 2, 3, 4]
    assert [x["loss/distill"] for x in ma] == [x["loss/distill"] for x in mb]


# ---------------------------------------------------------------- traces


def test_select_traces_by_hand():
    # scores (1, 0, 1, 1, 1), threshold 1: sample 1 fails; sample 2 repeats sample 0's text;
    # sample 3 is truncated; so with drop_truncated: [0, 4]; without: [0, 3] (then the cap of 2)
    texts, scores = ["a", "b", "a", "c", "d"], [1.0, 0.0, 1.0, 1.0, 1.0]
    finished = [True, True, True, False, True]
    from rlft.train.distill import select_traces

    assert select_traces(texts, scores, finished, keep_per_prompt=5, threshold=1.0) == [0, 4]
    assert select_traces(texts, scores, finished, 2, 1.0, drop_truncated=False) == [0, 3]
    assert select_traces(texts, scores, finished, 5, 0.0, drop_truncated=False) == [0, 1, 3, 4]


def first_char_even(prompt: str, completion: str, example: dict) -> float:
    """Stub verifier: accepts a completion whose first character has an even code point."""
    return float(bool(completion) and ord(completion[0]) % 2 == 0)


def test_make_traces_writes_the_accepted_samples(models, tmp_path):
    from rlft.models.load import load_causal_lm, load_tokenizer
    from rlft.rollout.base import SamplingParams
    from rlft.train.distill import make_traces, sample_teacher

    model, tok = load_causal_lm(models["teacher"]), load_tokenizer(models["teacher"])
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1), "_source": "x", "id": i} for i in range(6)]
    params, out = SamplingParams(max_new_tokens=5, temperature=1.0), tmp_path / "t" / "traces.jsonl"
    torch.manual_seed(7)
    stats = make_traces((model, tok), rows, 4, first_char_even, params, out, 2, 1.0, False, batch_size=8)
    # the same samples again, filtered by hand: first char even, distinct, at most 2 per prompt
    torch.manual_seed(7)
    expected, n_with = [], 0
    for row, _, completions, _ in sample_teacher(model, tok, rows, 4, params, batch_size=8):
        kept: list[str] = []
        for c in completions:
            if c and ord(c[0]) % 2 == 0 and c not in kept and len(kept) < 2:
                kept.append(c)
        n_with += bool(kept)
        expected += [
            {"prompt": row["prompt"], "completion": c, "answer": row["answer"], "id": row["id"]} for c in kept
        ]
    assert [json.loads(x) for x in out.read_text().splitlines()] == expected
    assert 0 < len(expected) < 12  # the filter kept some and rejected some
    assert stats["prompts"] == 6 and stats["samples"] == 24 and stats["kept"] == len(expected)
    assert stats["prompts_with_kept"] == n_with
    assert stats["kept_fraction"] == pytest.approx(len(expected) / 24)
    assert [p.name for p in out.parent.iterdir()] == ["traces.jsonl"]  # no temp file left


def test_traces_mode_samples_then_fine_tunes_the_student(models, tmp_path):
    """run_distill(mode=traces): teacher traces on built-in arithmetic prompts, verified by a
    plugin file verifier, then the SFT trainer on them (when rlft.train.sft is available)."""
    from rlft.train.distill import run_distill

    cfg = _config(
        tmp_path, models, "subset", "mode=traces", "student_layers=every_other",
        "data.num_prompts=6", "traces.n_samples=3", "traces.keep_per_prompt=2",
        "traces.max_new_tokens=6", "traces.drop_truncated=false", "traces.temperature=1.0",
        f"traces.verifier={Path(__file__).resolve()}:first_char_even", "data.heldout_fraction=0",
        "train.steps=2", "train.prompts_per_step=4", "train.microbatch_size=4", "train.save_every=0",
    )  # fmt: skip
    result = run_distill(cfg)
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert len(lines) == result["traces"]["kept"] > 0
    assert all(first_char_even("", json.loads(x)["completion"], {}) == 1.0 for x in lines)
    if importlib.util.find_spec("rlft.train.sft") is None:  # no SFT trainer: traces only
        assert result["steps"] == 0
        return
    assert result["steps"] == 2  # the SFT trainer ran on the traces
    assert (Path(result["final_dir"]) / "config.json").exists()


def test_tiny_config_runs_on_policy_distillation(tmp_path):
    """configs/distill_tiny.yaml as shipped (2 steps): the student is cut from the teacher's layer
    0, samples completions, and the run leaves a loadable 1-layer final model."""
    from rlft.config.loader import load_config
    from rlft.train.distill import run_distill

    config = Path(__file__).resolve().parents[2] / "configs" / "distill_tiny.yaml"
    cfg = load_config(DistillConfig, str(config), [f"output_dir={tmp_path}", "train.steps=2"])
    result = run_distill(cfg)
    assert result["steps"] == 2 and result["heldout_before"]["tokens"] > 0
    steps = read_metrics(tmp_path)
    assert [m["step"] for m in steps] == [1, 2] and all(m["loss/distill"] > 0 for m in steps)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(result["final_dir"]).num_hidden_layers == 1


def test_auto_layers_drop_the_block_that_changes_nothing(tmp_path, models, rows_path):
    # a 4-layer teacher whose layers 2 and 3 write nothing to the residual stream (zero attention
    # output and MLP down projections): h + 0 + 0 = h, so dropping the block 2-3 changes no output
    # and auto:2 must keep [0, 1] (not first + last, not every other); the calibration batch is
    # the teacher's own greedy answers
    from rlft.config.loader import ConfigError
    from rlft.models.load import load_causal_lm, load_tokenizer
    from rlft.train.distill import with_built_student

    teacher = load_causal_lm(models["teacher"])
    with torch.no_grad():
        for i in (2, 3):
            teacher.model.layers[i].self_attn.o_proj.weight.zero_()
            teacher.model.layers[i].mlp.down_proj.weight.zero_()
    teacher.save_pretrained(tmp_path / "teacher")
    load_tokenizer(models["teacher"]).save_pretrained(tmp_path / "teacher")
    keys = [f"output_dir={tmp_path / 'run'}", f"teacher={tmp_path / 'teacher'}", f"data.path={rows_path}"]
    cfg = build(DistillConfig, merge_overrides({}, [*keys, *BASE, "student_layers=auto:2"]))
    built = with_built_student(cfg)
    info = json.loads((Path(built.student.path) / "student_info.json").read_text())
    assert info["layers"] == [0, 1] and info["teacher_layers"] == 4
    bad = build(DistillConfig, merge_overrides({}, [*keys, *BASE, "student_layers=auto:9"]))
    with pytest.raises(ConfigError, match=r"'auto:K' needs 1 <= K <= 4"):
        with_built_student(dataclasses.replace(bad, output_dir=str(tmp_path / "bad")))
