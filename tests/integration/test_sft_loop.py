"""SFT on the tiny model: packing never lets attention cross examples, packed and unpacked layouts
train identically, gradient accumulation equals one batch, resume reproduces the straight run,
the held-out loss is the token-mean cross entropy, and final/ loads with plain HF."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from run_support import read_metrics, saved_weights

from rlft.config.loader import build, load_yaml, merge_overrides
from rlft.config.sft import SFTConfig, SFTDataConfig
from rlft.data.sft import (
    SFTExample,
    encode_conversations,
    load_conversations,
    packed_batch,
    row_conversation,
    sft_batches,
)
from rlft.train.sft import backward_token_mean, heldout_loss, train_sft

REPO = Path(__file__).resolve().parents[2]
BASE = ["log.progress=false", "log.tensorboard=false", "train.optim.warmup_steps=0"]
ROWS = [
    {"prompt": "What is 2 + 3?", "completion": "5"},
    {"prompt": "Spell cat backwards.", "completion": "tac"},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "Another?"},
            {"role": "assistant", "content": "Blue, or green."},
        ]
    },
    {"prompt": "Count to 4.", "completion": "1 2 3 4"},
    {"prompt": "Say hi.", "completion": "hi!"},
    {
        "messages": [
            {"role": "user", "content": "Greet me."},
            {"role": "assistant", "content": "Hello there."},
        ]
    },
]


def _examples(tok, rows=ROWS) -> list[SFTExample]:
    convs = [row_conversation(r, SFTDataConfig()) for r in rows]
    return encode_conversations(tok, convs, 512, "truncate")[0]


def _config(out: Path, model_path: str, data: Path, *overrides: str) -> SFTConfig:
    keys = [f"output_dir={out}", f"model.path={model_path}", f"data.path={data}", "data.heldout_fraction=0"]
    return build(SFTConfig, merge_overrides({}, [*keys, *BASE, *overrides]))


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(tiny_model, tiny_tok, attn):
    tiny_model.set_attn_implementation(attn)
    tiny_model.eval()
    exs = _examples(tiny_tok)[:3]  # 36 + 44 + 102 tokens in one row
    batch = packed_batch([exs, exs[:1]], tiny_tok.pad_token_id)  # row 1: one example + 146 pads
    with torch.no_grad():
        packed = tiny_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
        # the same row with positions restarting but a plain 2D mask: attention crosses examples
        # (with no mask at all, transformers would infer the blocks from the positions itself)
        crossing = tiny_model(
            input_ids=batch.input_ids[:1],
            attention_mask=torch.ones_like(batch.input_ids[:1]),
            position_ids=batch.position_ids[:1],
            use_cache=False,
        ).logits
        offset = 0
        for k, ex in enumerate(exs):
            alone = tiny_model(input_ids=torch.tensor([ex.ids])).logits[0]
            span = slice(offset, offset + len(ex.ids))
            assert torch.allclose(packed[0, span], alone, atol=1e-5), (attn, k)
            if k > 0:  # so the check above is not vacuous
                assert not torch.allclose(crossing[0, span], alone, atol=1e-3), (attn, k)
            offset += len(ex.ids)
        assert torch.allclose(packed[1, : len(exs[0].ids)], packed[0, : len(exs[0].ids)], atol=1e-5)
        assert torch.isfinite(packed).all()  # pad rows attend to themselves: no NaN from all -inf


def _grads(model, batches) -> tuple[dict[str, torch.Tensor], float]:
    model.zero_grad(set_to_none=True)
    metrics = backward_token_mean(model, batches)
    return {k: p.grad.clone() for k, p in model.named_parameters()}, metrics["loss/sft"]


def test_grad_accumulation_and_packing_give_the_same_gradients(tiny_model, tiny_tok):
    # user turn = content + 8 tokens, assistant turn = content + 13, system turn = content + 10:
    # 14+8 + 1+13 = 36, 20+8 + 3+13 = 44, 9+10 + 14+8 + 4+13 + 8+8 + 15+13 = 102, 11+8 + 7+13 = 39,
    # 7+8 + 3+13 = 31, 9+8 + 12+13 = 42
    exs = _examples(tiny_tok)
    assert [len(ex.ids) for ex in exs] == [36, 44, 102, 39, 31, 42]
    pad = tiny_tok.pad_token_id
    layouts = {
        "one padded batch": sft_batches(exs, pad, 64, packing=False, max_length=512),
        "6 batches of 1": sft_batches(exs, pad, 1, packing=False, max_length=512),
        "one packed batch": sft_batches(exs, pad, 64, packing=True, max_length=128),
        "packed rows one by one": sft_batches(exs, pad, 1, packing=True, max_length=128),
    }
    # first fit into rows of 128: 36, 44 -> row 0 (48 left); 102 -> row 1; 39 -> row 0 (9 left);
    # 31 -> row 2; 42 -> row 2 => widths 36+44+39 = 119, 102, 31+42 = 73
    assert [b.input_ids.shape[0] for b in layouts["packed rows one by one"]] == [1, 1, 1]
    assert [b.input_ids.shape[1] for b in layouts["packed rows one by one"]] == [119, 102, 73]
    # every layout forwards the same 52 assistant tokens: "5"+end 2, "tac" 4, "Red." 5 +
    # "Blue, or green." 16, "1 2 3 4" 8, "hi!" 4, "Hello there." 13
    assert {sum(b.n_targets for b in bs) for bs in layouts.values()} == {52}
    ref_grads, ref_loss = _grads(tiny_model, layouts["one padded batch"])
    for name, batches in layouts.items():
        grads, loss = _grads(tiny_model, batches)
        assert loss == pytest.approx(ref_loss, abs=1e-6), name
        for k in ref_grads:
            assert torch.allclose(grads[k], ref_grads[k], atol=1e-6, rtol=1e-4), (name, k)
    assert ref_grads["model.embed_tokens.weight"].abs().sum() > 0


def test_heldout_loss_is_the_token_mean_cross_entropy(tiny_model, tiny_tok):
    exs = _examples(tiny_tok)[:2]
    batches = sft_batches(exs, tiny_tok.pad_token_id, 2, packing=False, max_length=512)
    got = heldout_loss(tiny_model, batches)
    # by hand: sum of -log softmax(logits)[next token] over each example's targets, run alone,
    # divided by all targets together (2 + 4 = 6 tokens; a token mean, not a mean of sequences)
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in exs:
            logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([ex.ids])).logits[0].double(), -1)
            for t in range(1, len(ex.ids)):
                if ex.loss_mask[t]:
                    total -= logp[t - 1, ex.ids[t]].item()
                    count += 1
    assert count == 6 and got["tokens"] == 6.0
    assert got["loss"] == pytest.approx(total / count, abs=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # with all logits 0 (tied output weights zeroed) every token has p = 1/101 (vocab of 101):
    # CE = ln 101 = 4.6151..., perplexity = 101
    with torch.no_grad():
        tiny_model.get_output_embeddings().weight.zero_()
    zero = heldout_loss(tiny_model, batches)
    assert zero["loss"] == pytest.approx(math.log(101), abs=1e-6)
    assert zero["perplexity"] == pytest.approx(101, rel=1e-5)


def test_packed_and_unpacked_training_agree(tmp_path, tiny_model_path):
    data = _data(tmp_path)
    common = ["train.steps=3", "train.examples_per_step=3", "train.microbatch_size=2", "train.save_every=0"]
    outs = {}
    for packing in (False, True):
        outs[packing] = tmp_path / f"packing-{packing}"
        extra = [f"data.packing={str(packing).lower()}", "data.max_length=128"]
        train_sft(_config(outs[packing], tiny_model_path, data, *common, *extra))
    plain, packed = read_metrics(outs[False]), read_metrics(outs[True])
    # the same 3 examples each step, in fewer rows when packed (3 rows of 1 vs 1-2 packed rows)
    assert [m["sft/assistant_tokens"] for m in plain] == [m["sft/assistant_tokens"] for m in packed]
    assert sum(m["sft/rows"] for m in packed) < sum(m["sft/rows"] for m in plain)
    for a, b in zip(plain, packed, strict=True):
        assert a["loss/sft"] == pytest.approx(b["loss/sft"], abs=1e-5), a["step"]
        assert a["optim/grad_norm"] == pytest.approx(b["optim/grad_norm"], rel=1e-4), a["step"]
    wa, wb = saved_weights(outs[False] / "final"), saved_weights(outs[True] / "final")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_resume_reproduces_the_straight_run(tmp_path, tiny_model_path):
    data = _data(tmp_path)
    common = [
        "train.examples_per_step=4",
        "train.microbatch_size=2",
        "train.save_every=2",
        "train.keep_checkpoints=5",
        "train.optim.lr=1e-3",
        "data.packing=true",
    ]
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    train_sft(_config(straight, tiny_model_path, data, "train.steps=4", *common))
    train_sft(_config(parted, tiny_model_path, data, "train.steps=2", *common))
    assert sorted(p.name for p in (parted / "checkpoints").iterdir()) == ["step-2"]
    train_sft(_config(parted, tiny_model_path, data, "train.steps=4", "resume=true", *common))
    a, b = saved_weights(straight / "final"), saved_weights(parted / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = read_metrics(straight), read_metrics(parted)
    assert [x["step"] for x in mb] == [1, 2, 3, 4]
    assert [x["loss/sft"] for x in ma] == [x["loss/sft"] for x in mb]
    # 4 examples per step over 6 rows: step 3 crosses into epoch 2, and the weights moved
    c2 = saved_weights(parted / "checkpoints" / "step-2")
    assert any(not torch.equal(c2[k], b[k]) for k in b)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_tiny_config_final_dir_loads_with_plain_hf(tmp_path, tiny_model_path, tiny_tok, lora_rank):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    data = load_yaml(REPO / "configs" / "sft_tiny.yaml")
    data["data"]["path"] = str(REPO / data["data"]["path"])
    overrides = [f"output_dir={out}", "train.steps=4", f"model.lora_rank={lora_rank}"]
    summary = train_sft(build(SFTConfig, merge_overrides(data, overrides)))
    assert json.loads((out / "summary.json").read_text())["heldout"] == summary["heldout"]
    assert summary["data"] == {"truncated": 0, "skipped": 0, "no_targets": 0}
    final = Path(summary["final_dir"])
    model, info = AutoModelForCausalLM.from_pretrained(final, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # LoRA merged, no adapter keys
    assert AutoTokenizer.from_pretrained(final).chat_template == tiny_tok.chat_template
    # the reloaded model reproduces the run's last held-out loss (computed in-process after the
    # last update), so final/ holds the trained weights, LoRA included
    cfg = build(SFTConfig, merge_overrides(data, overrides))
    held = encode_conversations(tiny_tok, load_conversations(cfg.data)[1], 256, "truncate")[0]
    assert len(held) > 0
    batches = sft_batches(held, tiny_tok.pad_token_id, 4, packing=False, max_length=256)
    assert heldout_loss(model, batches)["loss"] == pytest.approx(summary["heldout"]["loss"], abs=1e-5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert summary["heldout"]["loss"] < heldout_loss(base, batches)["loss"]  # and it moved downhill


def test_cli_sft_trains_and_names_its_final_model(tmp_path, tiny_model_path, cli):
    out = tmp_path / "sft"
    res = cli(
        "sft",
        "--config",
        "configs/sft_tiny.yaml",
        f"output_dir={out}",
        "train.steps=2",
        f"model.path={tiny_model_path}",
    )
    assert res.returncode == 0, res.stderr
    assert f"final model: {out / 'final'}" in res.stdout
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
