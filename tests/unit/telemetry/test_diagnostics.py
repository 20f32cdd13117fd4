"""rlft.telemetry.diagnostics on hand-made texts and token lists, and rollout_metrics on a
hand-built batch."""

from __future__ import annotations

import pytest
import torch

from rlft.batch import Rollouts, ScoredBatch
from rlft.config.rl import DiagnosticsConfig
from rlft.rl.records import rollout_metrics
from rlft.telemetry.diagnostics import (
    percentile,
    reflection_counts,
    repeated_ngram_frac,
    text_diagnostics,
    think_text,
    think_words,
)

PHRASES = ["wait", "let me check", "verify", "re-evaluate"]


def test_reflection_counts_whole_words_any_case():
    texts = [
        "Wait, let me check: 2+2=4. wait.",  # 'Wait', 'let me check', 'wait' -> 3
        "I awaited, verifying it.",  # 'awaited' and 'verifying' are longer words -> 0
        "Let  me\ncheck. Re-Evaluate!",  # whitespace runs match a space; case ignored -> 2
        "",
    ]
    assert reflection_counts(texts, PHRASES) == [3, 0, 2, 0]


def test_reflection_longest_phrase_counts_once_and_empty_list():
    # 'let me check' starts where 'let me' does: the longer one matches, counted once
    assert reflection_counts(["let me check"], ["let me", "let me check"]) == [1]
    assert reflection_counts(["wait wait"], []) == [0]
    assert reflection_counts(["wait wait"], ["  "]) == [0]  # blank phrases are ignored


@pytest.mark.parametrize(
    ("text", "tag", "part", "words"),
    [
        ("<think>a b c</think> answer 4", "think", "a b c", 3),
        ("<think>a b", "think", "a b", 2),  # never closed: to the end
        ("x y</think> 5", "think", "x y", 2),  # opened by the prompt: from the start
        ("no tags at all", "think", None, 0),
        ("<reasoning> one </reasoning>", "reasoning", " one ", 1),
        ("<think></think>4", "think", "", 0),
    ],
)
def test_think_part(text, tag, part, words):
    assert think_text(text, tag) == part
    assert think_words(text, tag) == words


def test_repeated_ngram_frac_hand_computed():
    # trigrams of 1231231: 123, 231, 312, 123, 231 -> 5 in total, 3 distinct -> (5 - 3) / 5 = 0.4
    assert repeated_ngram_frac([1, 2, 3, 1, 2, 3, 1], 3) == pytest.approx(0.4)
    # unigrams of 5555: 4 in total, 1 distinct -> 3/4
    assert repeated_ngram_frac([5, 5, 5, 5], 1) == pytest.approx(0.75)
    assert repeated_ngram_frac([1, 2, 3, 4], 2) == 0.0  # all distinct
    assert repeated_ngram_frac([1, 2], 3) == 0.0  # shorter than n: no n-gram at all
    assert repeated_ngram_frac("abab", 2) == pytest.approx(1 / 3)  # ab, ba, ab -> 1 repeat of 3
    with pytest.raises(ValueError, match=">= 1"):
        repeated_ngram_frac([1], 0)


def test_percentile_linear_interpolation():
    # sorted [1, 2, 3, 4, 10], q=0.9: position 4 * 0.9 = 3.6 -> 4 + (10 - 4) * 0.6 = 7.6
    assert percentile([10, 1, 3, 2, 4], 0.9) == pytest.approx(7.6)
    assert percentile([5], 0.9) == 5  # one value
    assert percentile([3, 1, 2], 0.0) == 1 and percentile([3, 1, 2], 1.0) == 3
    # [1, 2, 3, 4], q=0.5: position 1.5 -> 2 + (3 - 2) * 0.5 = 2.5 (the median)
    assert percentile([1, 2, 3, 4], 0.5) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_text_diagnostics_means_over_completions():
    completions = ["<think>wait a b</think> 4", "so 5"]
    ids = [[1, 1, 1, 1, 1], [1, 2]]
    d = text_diagnostics(completions, ids, PHRASES, "think", 2)
    # phrase counts [1, 0]: any -> [1, 0], mean 0.5; count mean 0.5
    assert d["rollout/reflection_frac"] == 0.5 and d["rollout/reflection_count"] == 0.5
    # think words [3 ('wait a b'), 0] -> 1.5
    assert d["rollout/think_words"] == 1.5
    # bigrams of 11111: 4, 1 distinct -> 0.75; of 12: 1, 1 distinct -> 0; mean 0.375
    assert d["rollout/repeat_ngram_frac"] == pytest.approx(0.375)


def _batch() -> ScoredBatch:
    """2 prompts x 2 samples, prompt length 2, T = 4; response lengths 1, 2, 3, 4."""
    lengths = torch.tensor([1, 2, 3, 4])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    responses = torch.tensor([[7, 0, 0, 0], [7, 7, 0, 0], [8, 9, 8, 0], [6, 6, 6, 6]])
    input_ids = torch.cat([torch.full((4, 2), 3), responses], dim=1)
    rollouts = Rollouts(
        input_ids=input_ids,
        attention_mask=torch.cat([torch.ones(4, 2, dtype=torch.long), mask.long()], dim=1),
        response_mask=mask,
        group_ids=torch.tensor([0, 0, 1, 1]),
        prompts=["p0", "p0", "p1", "p1"],
        completions=["Wait.", "<think>a b</think>", "verify", "x"],
        examples=[{}, {}, {}, {}],
        truncated=torch.tensor([False, False, False, True]),
    )
    return ScoredBatch(rollouts=rollouts, scores=torch.tensor([1.0, 1.0, 0.0, 2.0]))


def test_rollout_metrics_on_a_hand_built_batch():
    m = rollout_metrics(_batch(), DiagnosticsConfig(repeat_ngram=1))
    assert m["rollout/response_len"] == 2.5  # (1 + 2 + 3 + 4) / 4
    # sorted [1, 2, 3, 4], q=0.9: position 2.7 -> 3 + (4 - 3) * 0.7 = 3.7
    assert m["rollout/response_len_p90"] == pytest.approx(3.7)
    assert m["rollout/response_len_max"] == 4.0 and m["rollout/truncated_frac"] == 0.25
    # group 0 scores (1, 1) are flat, group 1 (0, 2) is not -> 1/2
    assert m["rollout/zero_std_groups_frac"] == 0.5
    # phrases: 'Wait.' and 'verify' -> 2 of 4 completions, 1 each -> frac 0.5, count 0.5
    assert m["rollout/reflection_frac"] == 0.5 and m["rollout/reflection_count"] == 0.5
    assert m["rollout/think_words"] == 0.5  # [0, 2, 0, 0] / 4
    # unigrams of the masked responses: [7] 0; [7,7] 1/2; [8,9,8] 1/3; [6,6,6,6] 3/4
    # mean (0 + 1/2 + 1/3 + 3/4) / 4 = (19/12) / 4 = 19/48
    assert m["rollout/repeat_ngram_frac"] == pytest.approx(19 / 48)


def test_approx_kl_old_to_new_in_every_gradient_family():
    from rlft.algorithms.registry import ALGORITHMS
    from rlft.config.rl import AlgoConfig

    algo = ALGORITHMS["grpo"]
    p = algo.resolve(AlgoConfig())
    old = torch.log(torch.tensor([[0.5, 0.5, 0.9]]))
    new = torch.log(torch.tensor([[0.25, 0.5, 0.1]]))
    mask = torch.tensor([[True, True, False]])
    _, m = algo.token_loss(new, old, None, torch.ones(1, 3), mask, p)
    # k3 with log r = new - old: token 1 log r = log 0.5 -> 0.5 - 1 + 0.693147 = 0.193147;
    # token 2 log r = 0 -> 0; token 3 masked out -> mean (0.193147 + 0) / 2 = 0.0965736
    assert float(m["policy/approx_kl"]) == pytest.approx(0.0965736, abs=1e-6)
    _, m = algo.token_loss(old, old, None, torch.ones(1, 3), mask, p)
    assert float(m["policy/approx_kl"]) == 0.0  # first pass: the policy is its own old policy
