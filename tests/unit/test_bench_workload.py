"""Workload W (configs/bench_w.yaml, docs/performance.md): its prompt stream, chat messages and
rewards match the TRL benchmark's recipe (bench/vs_trl.py runs that side)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rlft.config.loader import load_config
from rlft.config.rl import RLConfig
from rlft.data.prompts import load_train_rows, to_messages
from rlft.rewards.builtin import answer_tags_present, first_answer_int

ROOT = Path(__file__).resolve().parents[2]
W = load_config(RLConfig, str(ROOT / "configs" / "bench_w.yaml"), [])


def test_first_w_prompts_match_the_peer_generator() -> None:
    # the TRL benchmark's generator: random.Random(1234); prompt i even draws
    # A, B = randint(2, 99) twice -> 58, 16; i odd draws randint(2, 19) twice -> 2, 4; then
    # 76 + 6 and 4 * 5 (printed by running that generator once)
    rows = load_train_rows(W.data, W.seed, needed=4)
    assert [(r["prompt"], r["answer"]) for r in rows] == [
        ("What is 58 + 16?", "74"),
        ("What is 2 * 4?", "8"),
        ("What is 76 + 6?", "82"),
        ("What is 4 * 5?", "20"),
    ]


def test_w_prompt_stream_follows_the_peer_recipe_for_96_prompts() -> None:
    # the TRL benchmark's recipe, re-derived: A drawn before B, ops alternate
    rng = random.Random(1234)
    expected = []
    for i in range(96):
        hi, op = (99, "+") if i % 2 == 0 else (19, "*")
        a, b = rng.randint(2, hi), rng.randint(2, hi)
        expected.append((f"What is {a} {op} {b}?", str(a + b if op == "+" else a * b)))
    rows = load_train_rows(W.data, W.seed, needed=96)
    assert [(r["prompt"], r["answer"]) for r in rows] == expected


def test_w_chat_messages_and_batch_shape() -> None:
    msgs = to_messages("What is 2 * 4?", W.data.system_prompt)
    assert msgs == [
        {
            "role": "system",
            "content": "Answer the question. Put only the final number inside <answer></answer> tags.",
        },
        {"role": "user", "content": "What is 2 * 4?"},
    ]
    r, a, t = W.rollout, W.algo, W.train
    assert (r.prompts_per_step, r.samples_per_prompt, r.max_new_tokens, r.temperature) == (8, 4, 64, 1.0)
    assert (a.name, a.kl_coef, a.kl_estimator, a.epochs) == ("grpo", 0.04, "k3", 1)
    assert (t.optim.lr, t.microbatch_size, W.model.gradient_checkpointing, W.model.lora_rank) == (
        1e-6,
        32,
        False,
        0,
    )
    assert [(x.fn, x.weight) for x in W.rewards] == [("first_answer_int", 1.0), ("answer_tags_present", 0.1)]


@pytest.mark.parametrize(
    ("completion", "correct", "tags"),
    [
        ("<answer>74</answer>", 1.0, 1.0),
        ("<answer> 74 \n</answer>", 1.0, 1.0),  # int(" 74 \n".strip()) == 74
        ("<answer>75</answer> then <answer>74</answer>", 0.0, 1.0),  # only the FIRST pair counts
        ("<answer>seventy-four</answer>", 0.0, 1.0),  # int() fails: wrong, but tagged
        ("<answer>74.0</answer>", 0.0, 1.0),  # int("74.0") raises
        ("The answer is 74.", 0.0, 0.0),  # no tags: nothing
        ("<ANSWER>74</ANSWER>", 0.0, 0.0),  # the TRL benchmark's regex is case-sensitive
        ("<answer>74", 0.0, 0.0),  # unclosed
    ],
)
def test_w_rewards(completion: str, correct: float, tags: float) -> None:
    row = {"prompt": "What is 58 + 16?", "answer": "74"}
    assert first_answer_int("", completion, row) == correct
    assert answer_tags_present("", completion, row) == tags
