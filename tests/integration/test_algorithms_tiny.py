"""Every algorithm of the table through `rlft.train_rl` on the tiny model (2 steps, 2 prompts x 4
samples, 4 new tokens), DAPO's dynamic sampling on hand-made rewards, DAPO's overlong filter on a
batch mixing truncated and finished completions, and an exact PPO resume."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from run_support import read_metrics
from safetensors.torch import load_file

import rlft
from rlft.algorithms import GRADIENT, TRUST_REGION
from rlft.algorithms.core import aggregation_weights
from rlft.algorithms.kl_control import AdaptiveKLController
from rlft.algorithms.registry import ALGORITHMS
from rlft.config.rl import AlgoConfig
from rlft.models.logprobs import rollout_logprobs
from rlft.rl.loop import rl_step
from rlft.rl.setup import setup_run, update_plan
from rlft.rl.state import RLState
from rlft.rl.update import UpdatePlan, loss_mask, minibatch_step
from rlft.rollout.base import Generations
from rlft.runtime.guard import NonFiniteGuard

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.samples_per_prompt=4",
    "rollout.max_new_tokens=4",
    "train.minibatch_size=4",  # 2 optimizer steps per RL step: old logprobs are computed
    "train.microbatch_size=4",
    "train.steps=2",
    "train.save_every=1",
    "train.keep_checkpoints=5",
]
KL_COEF = 0.04  # configs/grpo_tiny.yaml


def _finite(m: dict, key: str) -> float:
    assert key in m, key
    assert isinstance(m[key], float) and math.isfinite(m[key]), (key, m[key])
    return m[key]


CASES = [(n, "") for n in ALGORITHMS if n != "ppo"] + [("ppo", "separate"), ("ppo", "head")]


@pytest.mark.parametrize(("name", "critic"), CASES, ids=[f"{n}-{c}" if c else n for n, c in CASES])
def test_every_algorithm_runs_two_steps(make_rl_config, tmp_path, name, critic):
    out = tmp_path / "run"
    extra = [f"algo.value.kind={critic}"] if critic else []
    res = rlft.train_rl(make_rl_config(*SMALL, f"algo.name={name}", *extra, out=out))
    algo = ALGORITHMS[name]
    p = algo.resolve(AlgoConfig(name=name, kl_coef=KL_COEF))
    saved = yaml.safe_load((out / "config.yaml").read_text())["algo"]
    for key in (
        "loss_agg",
        "scale_rewards",
        "kl_in_reward",
        "kl_estimator",
        "clip_eps_high",
        "dynamic_sampling",
    ):
        assert saved[key] == getattr(p, key), key  # the algorithm's defaults were filled in
    ms = read_metrics(out)
    assert res["steps"] == 2 and [m["step"] for m in ms] == [1, 2]
    for m in ms:
        assert all(not isinstance(v, float) or math.isfinite(v) for v in m.values()), m
        if p.dynamic_sampling:
            rounds = m["rollout/sampling_rounds"]
            assert rounds in (1.0, 2.0, 3.0) and m["rollout/prompts_drawn"] == 2 * rounds
        if p.mask_truncated and m["rollout/truncated_frac"] == 1.0:
            # every completion hit max_new_tokens (usual for 4 tokens of a random model): every
            # token is masked, so no row runs and the loss and gradient are exactly 0
            assert (m["loss/policy"], m["optim/grad_norm"], m["perf/active_rows_frac"]) == (0.0, 0.0, 0.0)
            continue
        # diagnostics every family logs (docs/evaluation.md): entropy, KL(old || new), grad norm, text signals
        assert _finite(m, "policy/entropy") > 0 and _finite(m, "policy/approx_kl") >= -1e-6
        _finite(m, "optim/grad_norm")
        for key in ("response_len_p90", "reflection_frac", "think_words", "repeat_ngram_frac"):
            _finite(m, f"rollout/{key}")
        if p.kl_in_reward:  # KL as a reward penalty: measured on the batch, not in the loss
            # per sequence = per token x tokens per sequence: sum/B = (sum/tokens) * (tokens/B)
            if p.kl_estimator != "k1":  # k1 = log pi - log pi_ref is >= 0 only in expectation
                assert _finite(m, "policy/kl_ref_seq") >= 0
            assert m["policy/kl_ref_seq"] == pytest.approx(m["policy/kl"] * m["rollout/response_len"])
            assert m["policy/kl_coef"] == KL_COEF  # target_kl = 0: the coefficient stays fixed
        elif algo.update is GRADIENT:
            assert _finite(m, "policy/kl") >= -1e-6  # k3 in the loss (>= 0 up to float32 rounding)
        if algo.update is TRUST_REGION:
            assert m["trpo/accepted"] in (0.0, 1.0)
            if m["trpo/accepted"]:
                assert 0 <= m["trpo/kl"] <= 0.01 and m["trpo/surrogate_gain"] > 0
                assert m["trpo/step_fraction"] == 0.5 ** (m["trpo/line_search_tries"] - 1)
            assert "policy/clip_frac" not in m  # one natural-gradient step, not minibatches
            continue
        # 2 minibatches of 4 from one rollout batch: the clipped ratio is 1 on the first one only,
        # so the averaged ratio is finite and the clip fraction is a fraction
        assert 0.0 <= _finite(m, "policy/clip_frac") <= 1.0 and _finite(m, "policy/ratio_mean") > 0
        if algo.uses_value_model:
            assert _finite(m, "loss/value") >= 0 and _finite(m, "loss/policy") == m["loss/policy"]
        else:
            _finite(m, "loss/policy")
            assert "loss/value" not in m
    ckpt = out / "checkpoints" / "step-2"
    assert (ckpt / "critic.safetensors").exists() == algo.uses_value_model
    if critic == "head":  # a zero-initialised linear head on the policy's trunk, now trained
        head = load_file(ckpt / "critic.safetensors")
        assert set(head) == {"head.weight", "head.bias"} and head["head.weight"].shape == (1, 64)
        assert float(head["head.weight"].abs().sum()) > 0


def _dapo(make_rl_config, out: Path, reward) -> list[dict]:
    rlft.train_rl(make_rl_config(*SMALL, "algo.name=dapo", "log.samples_per_step=8", out=out), [reward])
    return read_metrics(out)


def test_dapo_flat_groups_use_every_sampling_round(make_rl_config, tmp_path):
    def constant(prompt, completion, example):
        return 1.0

    ms = _dapo(make_rl_config, tmp_path / "flat", constant)
    for m in ms:
        # every group is flat in every round: max_sampling_rounds = 3 rounds x 2 prompts = 6 drawn,
        # then the last round is trained on as is
        assert (m["rollout/sampling_rounds"], m["rollout/prompts_drawn"]) == (3.0, 6.0)
        assert m["rollout/zero_std_groups_frac"] == 1.0


def test_dapo_refills_flat_groups_from_a_second_round(make_rl_config, tmp_path):
    calls = itertools.count()

    def half_flat(prompt, completion, example):
        # scored in order, 8 calls (2 groups of 4) per round: the first group of every round is
        # flat (0), the second informative (its call number)
        i = next(calls)
        return 0.0 if i % 8 < 4 else float(i)

    out = tmp_path / "half"
    ms = _dapo(make_rl_config, out, half_flat)
    for m in ms:
        # round 1 keeps 1 group, round 2 another: 2 = prompts_per_step groups, stop after 2 rounds
        assert (m["rollout/sampling_rounds"], m["rollout/prompts_drawn"]) == (2.0, 4.0)
        assert m["rollout/zero_std_groups_frac"] == 0.0
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    # step 1 trains on calls 4..7 (round 1, group 2) and 12..15 (round 2, group 2); step 2 on
    # 20..23 and 28..31
    for step, expected in ((1, [4, 5, 6, 7, 12, 13, 14, 15]), (2, [20, 21, 22, 23, 28, 29, 30, 31])):
        assert sorted(s["score"] for s in samples if s["step"] == step) == expected


def test_dapo_draws_fresh_builtin_prompts_in_every_round(make_rl_config, tmp_path):
    def constant(prompt, completion, example):
        return 1.0

    out = tmp_path / "fresh"
    _dapo(make_rl_config, out, constant)
    state = json.loads((out / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    # 2 steps x 3 rounds x 2 prompts = 12 prompts from the endless built-in generator: one epoch
    assert state["stream"] == {"epoch": 0, "index": 12}


def test_ppo_resume_reproduces_the_next_step_bitwise(make_rl_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ppo = [*SMALL, "algo.name=ppo", "algo.value.kind=separate"]
    rlft.train_rl(make_rl_config(*ppo, out=a))
    rlft.train_rl(make_rl_config(*ppo, "train.steps=1", out=b))
    rlft.train_rl(make_rl_config(*ppo, "resume=true", out=b))
    ma, mb = read_metrics(a), read_metrics(b)
    assert [m["step"] for m in mb] == [1, 2]
    for key in ("loss/policy", "loss/value", "optim/grad_norm", "policy/kl_ref_seq", "reward/mean"):
        assert mb[1][key] == ma[1][key], key
    ca = load_file(a / "checkpoints" / "step-2" / "critic.safetensors")
    cb = load_file(b / "checkpoints" / "step-2" / "critic.safetensors")
    assert ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)


class _ScriptedGenerator:
    """Stands in for the sampler: the same hand-written completions on every call (prompt-major),
    `finished` True where the text ends in EOS, False where it stops at max_new_tokens without one."""

    def __init__(self, tok, script: list[tuple[str, bool]]):
        self.response_ids = [
            tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
            for text, eos in script
        ]
        self.finished = [eos for _, eos in script]

    def generate(self, prompt_ids, params, samples_per_prompt=1):
        assert len(prompt_ids) * samples_per_prompt == len(self.response_ids)
        assert all(len(r) <= params.max_new_tokens for r in self.response_ids)
        return Generations([list(r) for r in self.response_ids], list(self.finished))

    def sync_weights(self, model) -> None:
        pass


class _GradCapture:
    """Stands in for the optimizer: step() records the accumulated grads, the weights never move."""

    def __init__(self, model):
        self.params = dict(model.named_parameters())
        self.grads: dict[str, torch.Tensor] | None = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params.values():
            p.grad = None

    def step(self) -> None:
        self.grads = {k: p.grad.clone() for k, p in self.params.items() if p.grad is not None}


# 2 prompts x 4 samples, max_new_tokens=4 (the tiny tokenizer has one token per character):
# finished rows end in EOS, truncated rows are 4 characters with no EOS
MIXED = [
    ("5", True),  # row 0: 2 tokens
    ("55", True),  # row 1: 3 tokens
    ("abcd", False),  # row 2: truncated, 4 tokens
    ("wxyz", False),  # row 3: truncated
    ("1", True),  # row 4: 2 tokens
    ("2222", False),  # row 5: truncated
    ("33", True),  # row 6: 3 tokens
    ("4444", False),  # row 7: truncated
]
FINISHED = [0, 1, 4, 6]


@pytest.mark.filterwarnings(
    "ignore:Detected call of `lr_scheduler.step\\(\\)` before"
)  # the optimizer is a stub
def test_dapo_masks_truncated_rows_out_of_the_gradient(make_rl_config, tmp_path):
    def length(prompt, completion, example):
        return float(len(completion))  # the decoded text, EOS removed

    cfg = make_rl_config(
        *SMALL,
        "algo.name=dapo",
        "algo.kl_coef=0",  # no reference model: the loss is the clipped surrogate alone
        "train.minibatch_size=8",  # one optimizer step over the whole batch: no old-logprob pass
        "train.microbatch_size=8",
        "train.optim.max_grad_norm=0",  # capture the raw gradient
        out=tmp_path / "run",
    )
    cfg, parts, _, algo, terms, stream = setup_run(cfg, [length])
    assert cfg.algo.mask_truncated and cfg.algo.loss_agg == "token_mean"  # DAPO's defaults
    generator = _ScriptedGenerator(parts.tok, MIXED)
    capture = _GradCapture(parts.model)
    parts.optimizer = capture
    a = cfg.algo
    state = RLState(0, stream, NonFiniteGuard(3), AdaptiveKLController(a.kl_coef, a.target_kl, a.kl_horizon))
    metrics, batch = rl_step(cfg, parts, generator, algo, terms, state, update_plan(cfg))
    r = batch.rollouts

    assert r.truncated.tolist() == [not eos for _, eos in MIXED]
    assert r.response_mask.sum(-1).tolist() == [2, 3, 4, 4, 2, 4, 3, 4]
    assert batch.scores.tolist() == [1.0, 2.0, 4.0, 4.0, 1.0, 4.0, 2.0, 4.0]
    # both groups score {1, 2, 4, 4}: mean 2.75, centred (-1.75, -0.75, 1.25, 1.25), unbiased std
    # sqrt((1.75^2 + 0.75^2 + 2 * 1.25^2) / 3) = sqrt(6.75 / 3) = 1.5; advantage = centred / (1.5 + eps).
    # Every row, truncated ones included, has a non-zero advantage: only the filter can drop them.
    d = 1.5 + a.std_eps
    centred = [-1.75, -0.75, 1.25, 1.25, -1.75, 1.25, -0.75, 1.25]
    assert batch.advantages[:, 0].tolist() == pytest.approx([c / d for c in centred], abs=1e-6)
    assert metrics["rollout/sampling_rounds"] == 1.0  # no flat group: nothing re-sampled

    # the overlong filter: truncated rows lose every token, finished rows keep their response mask
    mask = loss_mask(batch)
    assert mask.sum(-1).tolist() == [2, 3, 0, 0, 2, 0, 3, 0]
    assert torch.equal(mask[FINISHED], r.response_mask[FINISHED])
    # only the 4 finished rows run a forward/backward
    assert metrics["perf/active_rows_frac"] == 0.5
    # token_mean over the 10 finished tokens, ratio 1 (one optimizer step: old = current):
    # loss = -sum(A_i * len_i) / 10 = -(2 * -1.75 + 3 * -0.75) * 2 / (10 d) = 11.5 / (10 d) = 0.76661
    assert metrics["loss/policy"] == pytest.approx(11.5 / (10 * d), abs=1e-6)

    # a truncated row's log-probs get exactly zero gradient: the loss of the update phase
    # (token loss x aggregation weights of the loss mask) differentiated w.r.t. the log-probs.
    # d/dlogp of -min(rho A, clip(rho) A) at rho = 1 is -A, times the weight 1/10 per finished token
    p = dataclasses.replace(a, kl_coef=state.kl.value)
    logp = rollout_logprobs(parts.model, r, 8).requires_grad_(True)
    token_loss, _ = algo.token_loss(logp, logp.detach(), None, batch.advantages, mask, p)
    (token_loss * aggregation_weights(mask, p.loss_agg)).sum().backward()
    expected = torch.zeros(8, 4)
    for i in FINISHED:
        expected[i, : int(mask[i].sum())] = -centred[i] / d / 10
    assert torch.allclose(logp.grad, expected, atol=1e-7)
    assert logp.grad[r.truncated].abs().max() == 0.0

    # the model's gradient from the DAPO step is the gradient of the finished rows alone...
    dapo_grads = capture.grads
    assert dapo_grads and any(float(g.abs().max()) > 0 for g in dapo_grads.values())
    max_len = cfg.rollout.max_new_tokens

    def grads_of(b):
        cap = _GradCapture(parts.model)
        plan = UpdatePlan(minibatch_size=8, microbatch_size=8, max_len=max_len)
        m = minibatch_step(parts.model, cap, algo, b, p, plan, NonFiniteGuard(3))
        return cap.grads, m

    alone, _ = grads_of(batch.select(torch.tensor(FINISHED)))
    assert alone.keys() == dapo_grads.keys()
    for k in alone:  # equal up to float32 summation order (about 1e-7 on entries up to 0.7)
        assert torch.allclose(dapo_grads[k], alone[k], rtol=1e-4, atol=1e-6), k
    # ...and without the filter the truncated rows (positive advantage) would count: all 8 rows
    # run, token_mean over 10 + 4 * 4 = 26 tokens, sum(A_i * len_i) = (-11.5 + 4 * 4 * 1.25) / d
    # = 8.5 / d, so loss = -8.5 / (26 d) = -0.21793, and the gradient moves (by up to 0.4 here)
    unfiltered, m = grads_of(batch.with_(extras={}))
    assert m["perf/active_rows_frac"] == 1.0
    assert m["loss/policy"] == pytest.approx(-8.5 / (26 * d), abs=1e-6)
    assert max(float((unfiltered[k] - alone[k]).abs().max()) for k in alone) > 1e-2
