"""Reward-model and DPO loops on the tiny model: padding-invariant scores, HF-loadable output,
gradient accumulation, resume, the DPO loss at the reference, learning a separable preference,
and the `rlft rm` / `rlft rm score` / `rlft dpo` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from preference_support import mixed_rows, write_jsonl
from run_support import read_metrics, saved_weights

from rlft.config.loader import build, merge_overrides
from rlft.config.preference import DPOConfig, RMConfig
from rlft.data.preferences import Ranked

BASE = ["log.progress=false", "log.tensorboard=false", "train.optim.warmup_steps=0"]


def _config(cls, out: Path, model_path: str, data: Path, *overrides: str):
    data_keys = [
        f"output_dir={out}",
        f"model.path={model_path}",
        f"data.path={data}",
        "data.heldout_fraction=0",
    ]
    return build(cls, merge_overrides({}, [*data_keys, *BASE, *overrides]))


@pytest.fixture
def rm_tok(tiny_model_path):
    from rlft.models.load import load_tokenizer

    return load_tokenizer(tiny_model_path, padding_side="right")


@pytest.fixture
def tiny_rm(tiny_model_path, rm_tok):
    from rlft.models.reward_model import load_reward_model

    torch.manual_seed(0)
    return load_reward_model(tiny_model_path, rm_tok).eval()


# ---------------------------------------------------------------- sequence_scores


def test_sequence_scores_ignore_padding_side_and_pad_id(tiny_rm, rm_tok):
    from rlft.models.reward_model import right_pad, sequence_scores

    seqs = [
        rm_tok(t, add_special_tokens=False)["input_ids"]
        for t in ["a short one", "xy", "a rather longer text!"]
    ]
    with torch.no_grad():
        alone = torch.cat(
            [
                sequence_scores(tiny_rm, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
                for s in seqs
            ]
        )
        # pad with "<pad>", with EOS, and with an ordinary character ("a", also the first token of
        # row 0): the score must come from each row's last attended token whatever the pad id
        for pad in (rm_tok.pad_token_id, rm_tok.eos_token_id, rm_tok.convert_tokens_to_ids("a")):
            ids, mask = right_pad(seqs, pad)
            right = sequence_scores(tiny_rm, ids, mask)
            # left padding: flip each row's layout
            width = ids.shape[1]
            left_ids = torch.full_like(ids, pad)
            left_mask = torch.zeros_like(mask)
            for i, s in enumerate(seqs):
                left_ids[i, width - len(s) :] = torch.tensor(s)
                left_mask[i, width - len(s) :] = 1
            left = sequence_scores(tiny_rm, left_ids, left_mask)
            assert torch.allclose(right, alone, atol=1e-5), (pad, right, alone)
            assert torch.allclose(left, alone, atol=1e-5), (pad, left, alone)
    # and the rows do not all score alike (the check above would be vacuous otherwise)
    assert (alone.max() - alone.min()).item() > 1e-4


# ---------------------------------------------------------------- gradient accumulation


def _rankings(tok):
    from rlft.config.preference import PreferenceDataConfig
    from rlft.train.preference_data import encode_rankings

    rows = [
        Ranked("Name a colour.", ("red", "table"), (0, 1), margin=0.5),
        Ranked("Greet me.", ("hi", "go away", "hello!"), (1, 2, 0)),
        Ranked("Pick a number.", ("7", "x", "3", "?"), (0, 2, 0, 1)),
        Ranked("Say yes.", ("yes", "no"), (0, 1), margin=-0.25),
    ]
    return encode_rankings(tok, rows, PreferenceDataConfig(max_length=64))


@pytest.mark.parametrize(
    "loss,centering",
    [("bradley_terry", 0.0), ("bradley_terry", 0.5), ("plackett_luce", 0.0)],
)
def test_ranking_loss_gradients_do_not_depend_on_microbatching(tiny_rm, rm_tok, loss, centering):
    from rlft.config.preference import RewardLossConfig
    from rlft.train.preference_data import microbatches
    from rlft.train.reward_model import chunk_scores, ranking_loss

    cfg = RewardLossConfig(loss=loss, use_margin=True, centering_coef=centering)
    batch = _rankings(rm_tok)
    n = len(batch)

    def grads(max_sequences: int) -> tuple[dict[str, torch.Tensor], int]:
        # what train_reward_model's backward does: each chunk's summed loss / the step's rankings
        tiny_rm.zero_grad(set_to_none=True)
        chunks = microbatches(batch, max_sequences)
        for chunk in chunks:
            (ranking_loss(chunk_scores(tiny_rm, rm_tok, chunk), chunk, cfg) / n).backward()
        return {k: p.grad.clone() for k, p in tiny_rm.named_parameters()}, len(chunks)

    whole, n_whole = grads(64)
    split, n_split = grads(2)
    # 11 responses in one chunk vs. at most 2 per chunk: K = 2, 3, 4, 2 -> each ranking alone
    assert (n_whole, n_split) == (1, 4)
    assert whole.keys() == split.keys()
    for k in whole:
        assert torch.allclose(whole[k], split[k], atol=1e-6), k
    assert whole["score.weight"].abs().sum() > 0  # the head gets a gradient at all


@pytest.mark.parametrize("kind", ["rm", "dpo"])
def test_first_step_loss_and_grad_norm_do_not_depend_on_microbatch_size(tmp_path, tiny_model_path, kind):
    # the trainers' own backward closures: 16 responses per step in one forward pass vs. chunks of
    # at most 3 (one ranking each); the logged loss and the pre-clip gradient norm of step 1 (same
    # weights, same batch) must agree, i.e. each chunk is scaled by 1 / rankings-per-step
    from rlft.train.dpo import train_dpo
    from rlft.train.reward_model import train_reward_model

    cls, train_fn, key = (RMConfig, train_reward_model, "loss/reward_model")
    if kind == "dpo":
        cls, train_fn, key = (DPOConfig, train_dpo, "loss/dpo")
    data = write_jsonl(tmp_path / "prefs.jsonl", mixed_rows())
    got = []
    for mb in (64, 3):
        out = tmp_path / f"mb{mb}"
        extra = ["reward.centering_coef=0.1"] if kind == "rm" else []
        cfg = _config(
            cls,
            out,
            tiny_model_path,
            data,
            "train.steps=1",
            "train.rankings_per_step=6",
            f"train.microbatch_size={mb}",
            "train.save_every=0",
            *extra,
        )
        train_fn(cfg)
        (m,) = read_metrics(out)
        got.append(m)
    assert got[0][key] == pytest.approx(got[1][key], abs=1e-5)
    assert got[0]["optim/grad_norm"] == pytest.approx(got[1]["optim/grad_norm"], rel=1e-4)
    assert got[0]["optim/grad_norm"] > 0


def test_microbatches_pack_whole_rankings():
    from rlft.train.preference_data import EncodedRanking, microbatches

    def r(k):
        return EncodedRanking(Ranked("p", ("a",) * k, tuple(range(k))), ((1,),) * k, (0,) * k)

    sizes = [[len(x.ids) for x in chunk] for chunk in microbatches([r(2), r(3), r(2), r(5), r(1)], 4)]
    # greedy, max 4 responses: 2 -> [2]; 3: 2+3 = 5 > 4 -> new [3]; 2: 3+2 = 5 > 4 -> new [2];
    # 5: larger than 4 -> a chunk of its own; 1: 5+1 > 4 -> new [1]
    assert sizes == [[2], [3], [2], [5], [1]]
    # 2 -> [2]; 2: 2+2 = 4 fits -> [2, 2]; 1: 4+1 > 4 -> new [1]; 3: 1+3 = 4 fits -> [1, 3]
    assert [[len(x.ids) for x in c] for c in microbatches([r(2), r(2), r(1), r(3)], 4)] == [[2, 2], [1, 3]]


def test_total_steps_from_steps_or_epochs():
    from types import SimpleNamespace

    from rlft.train.preference_data import total_steps

    def t(**kw):
        return SimpleNamespace(**{"steps": 0, "epochs": 1.0, "rankings_per_step": 4, **kw})

    assert total_steps(t(steps=7), 1000) == 7  # explicit steps win
    assert total_steps(t(epochs=1.5), 10) == 4  # ceil(1.5 * 10 / 4) = ceil(3.75) = 4
    assert total_steps(t(epochs=1.0), 8) == 2  # 8 / 4 = 2 exactly, no extra step
    assert total_steps(t(epochs=0.01), 10) == 1  # ceil(0.025) = 1, and never below 1


@pytest.mark.parametrize("kind", ["rm", "dpo"])
def test_all_tied_training_rankings_are_a_data_error(tmp_path, tiny_model_path, kind):
    from rlft.data.rows import DataError
    from rlft.train.dpo import train_dpo
    from rlft.train.reward_model import train_reward_model

    data = write_jsonl(
        tmp_path / "tied.jsonl", [{"prompt": "q", "responses": ["a", "b"], "ranking": [[0, 1]]}]
    )
    cls, fn = (RMConfig, train_reward_model) if kind == "rm" else (DPOConfig, train_dpo)
    try:
        fn(_config(cls, tmp_path / "out", tiny_model_path, data, "train.steps=1"))
    except DataError as e:
        assert str(data) in str(e)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{type(e).__name__}: {e}") from None
    else:
        raise AssertionError("trained on no pairs")


# ---------------------------------------------------------------- reward model: HF output


def test_reward_model_final_is_hf_loadable_and_scores_like_the_trained_model(tmp_path, tiny_model_path):
    from transformers import AutoModelForSequenceClassification

    from rlft.models.load import load_tokenizer
    from rlft.models.reward_model import score_texts
    from rlft.train.reward_model import train_reward_model

    train = write_jsonl(tmp_path / "train.jsonl", mixed_rows())
    held_rows = [
        {"prompt": "Say no.", "chosen": "no", "rejected": "yes"},
        {"prompt": "Greet me!", "responses": ["hey", "bye", "yo"], "ranking": [0, 2, 1]},
    ]
    held = write_jsonl(tmp_path / "held.jsonl", held_rows)
    out = tmp_path / "rm"
    cfg = _config(
        RMConfig,
        out,
        tiny_model_path,
        train,
        f"data.heldout_path={held}",
        "train.steps=2",
        "train.rankings_per_step=3",
        "train.optim.lr=1e-3",
    )
    summary = train_reward_model(cfg)
    final = Path(summary["final_dir"])
    assert final == out / "final"

    # plain HF, no num_labels: the saved config says 1 label and every weight (score head too) loads
    model, info = AutoModelForSequenceClassification.from_pretrained(final, output_loading_info=True)
    assert model.config.num_labels == 1
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = load_tokenizer(str(final), padding_side="right")
    assert model.config.pad_token_id == tok.pad_token_id

    prompts = ["Say no.", "Say no.", "Greet me!", "Greet me!", "Greet me!"]
    responses = ["no", "yes", "hey", "bye", "yo"]
    scores = torch.tensor(score_texts(model, tok, prompts, responses, batch_size=2))
    # the run's last held-out evaluation used the in-process model after the last update:
    # the reloaded model must reproduce it; 5 held-out responses
    h = summary["heldout"]
    assert h["pairs"] == 4.0  # 1 pair + C(3,2) = 3
    assert scores.mean().item() == pytest.approx(h["reward_mean"], abs=1e-5)
    assert scores.std().item() == pytest.approx(h["reward_std"], abs=1e-5)
    # pairs: (no > yes); ranking [0, 2, 1]: hey > yo, hey > bye, yo > bye
    diffs = torch.stack(
        [scores[0] - scores[1], scores[2] - scores[4], scores[2] - scores[3], scores[4] - scores[3]]
    )
    assert torch.nn.functional.softplus(-diffs).mean().item() == pytest.approx(h["bt_loss"], abs=1e-5)
    assert (diffs > 0).float().mean().item() == pytest.approx(h["pair_accuracy"], abs=1e-6)

    # HF's own forward on an unpadded row gives the same reward as rlft's scoring
    from rlft.data.preferences import encode_conversation

    ids, _ = encode_conversation(tok, "Say no.", "no", 1024)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, 1)
    assert logits[0, 0].item() == pytest.approx(scores[0].item(), abs=1e-5)

    # training changed the transformer itself, not just the fresh head
    base = saved_weights(Path(tiny_model_path))
    trained = saved_weights(final)
    assert not torch.equal(base["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])


# ---------------------------------------------------------------- reward model: learning


def test_reward_model_learns_a_separable_preference(tmp_path, tiny_model_path):
    from rlft.train.reward_model import train_reward_model

    topics = ["cats", "rain", "maths", "tea", "boats", "music", "snow", "bread", "stars", "trains"]
    rows = [{"prompt": f"Do you like {t}?", "chosen": "yes", "rejected": "no"} for t in topics]
    held = [{"prompt": f"Is {t} nice?", "chosen": "yes", "rejected": "no"} for t in ("sand", "fog", "chess")]
    out = tmp_path / "rm"
    cfg = _config(
        RMConfig,
        out,
        tiny_model_path,
        write_jsonl(tmp_path / "t.jsonl", rows),
        f"data.heldout_path={write_jsonl(tmp_path / 'h.jsonl', held)}",
        "train.steps=30",
        "train.rankings_per_step=4",
        "train.optim.lr=1e-3",
        "train.eval_every=0",
        "train.save_every=0",
    )
    summary = train_reward_model(cfg)
    assert summary["steps"] == 30
    saved = json.loads((out / "summary.json").read_text())
    assert saved["heldout"]["pair_accuracy"] == 1.0
    assert saved["heldout"]["pairs"] == 3.0
    # BT loss far under log 2 = 0.693 (chance; about 0.007 in practice): the scores separate widely
    assert saved["heldout"]["bt_loss"] < 0.1
    m = read_metrics(out)
    assert [x["step"] for x in m] == list(range(1, 31))
    assert "eval/pair_accuracy" in m[-1] and all("eval/pair_accuracy" not in x for x in m[:-1])
    assert m[-1]["loss/reward_model"] < m[0]["loss/reward_model"]


# ---------------------------------------------------------------- resume


def _resume_matches_straight_run(tmp_path, tiny_model_path, cls, train_fn, extra):
    data = write_jsonl(tmp_path / "prefs.jsonl", mixed_rows())
    common = [
        "train.rankings_per_step=2",
        "train.microbatch_size=4",
        "train.save_every=2",
        "train.keep_checkpoints=5",
        *extra,
    ]
    straight = tmp_path / "straight"
    train_fn(_config(cls, straight, tiny_model_path, data, "train.steps=4", *common))
    parted = tmp_path / "parted"
    train_fn(_config(cls, parted, tiny_model_path, data, "train.steps=2", *common))
    assert sorted(p.name for p in (parted / "checkpoints").iterdir()) == ["step-2"]
    train_fn(_config(cls, parted, tiny_model_path, data, "train.steps=4", "resume=true", *common))

    a, b = saved_weights(straight / "final"), saved_weights(parted / "final")
    assert a.keys() == b.keys()
    for k in a:  # bit-identical: the same operations on the same values in the same order
        assert torch.equal(a[k], b[k]), k
    ma, mb = read_metrics(straight), read_metrics(parted)
    assert [x["step"] for x in mb] == [1, 2, 3, 4]  # steps 1-2 kept from the first part, no dupes
    assert ma == mb
    # and the optimisation really moved between steps 2 and 4 (the check is not vacuous)
    c2 = saved_weights(parted / "checkpoints" / "step-2")
    assert any(not torch.equal(c2[k], b[k]) for k in b)


def test_reward_model_resume_reproduces_the_straight_run(tmp_path, tiny_model_path):
    from rlft.train.reward_model import train_reward_model

    _resume_matches_straight_run(
        tmp_path, tiny_model_path, RMConfig, train_reward_model, ["train.optim.lr=1e-3"]
    )


def test_dpo_resume_reproduces_the_straight_run(tmp_path, tiny_model_path):
    # also proves the reference is the initial policy on resume, not the step-2 weights
    # (the loss at steps 3-4 depends on it)
    from rlft.train.dpo import train_dpo

    _resume_matches_straight_run(tmp_path, tiny_model_path, DPOConfig, train_dpo, ["train.optim.lr=1e-3"])


# ---------------------------------------------------------------- DPO at the reference


@pytest.mark.parametrize(
    "loss,expected",
    [
        ("dpo", math.log(2)),  # h = 0 -> -log sigmoid(0) = log 2 = 0.693147
        ("ipo", 25.0),  # h = 0 -> (0 - 1 / (2 * 0.1))^2 = 5^2 = 25
    ],
)
def test_dpo_first_logged_loss_is_at_the_reference(tmp_path, tiny_model_path, loss, expected):
    from rlft.train.dpo import train_dpo

    data = write_jsonl(tmp_path / "prefs.jsonl", mixed_rows())
    out = tmp_path / loss
    # 6 rankings per step: pairs weigh 1 (pairwise rows), 1/3 (strict K=3: 3 pairs) and 1/5 (K=4
    # ranking [[0, 2], 3, 1]: levels (0, 2, 0, 1), C(4,2) = 6 pairs minus the tied (0, 2) = 5);
    # each ranking's weights sum to 1, so the mean over rankings at h = 0 is the per-pair value
    cfg = _config(
        DPOConfig,
        out,
        tiny_model_path,
        data,
        f"dpo.loss={loss}",
        "dpo.beta=0.1",
        "train.steps=2",
        "train.rankings_per_step=6",
        "train.microbatch_size=5",
        "train.optim.lr=1e-3",
        "train.save_every=0",
    )
    train_dpo(cfg)
    m = read_metrics(out)
    # step 1 is logged from the backward before its update: policy = reference
    assert m[0]["step"] == 1
    assert m[0]["loss/dpo"] == pytest.approx(expected, abs=1e-4)
    assert m[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    assert m[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    # after one update at lr 1e-3 the policy has moved away from the reference
    assert abs(m[1]["loss/dpo"] - expected) > 1e-3
