"""rlft.rewards: guarded scoring (raise / NaN / inf / None / str), weights, plugin resolution."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch

from rlft.config.rl import RewardSpec
from rlft.rewards.registry import resolve_reward, reward_name
from rlft.rewards.scoring import RewardError, RewardTerm, as_named, build_terms, score_completions

PROMPTS = ["p0", "p1", "p2", "p3"]
COMPS = ["good", "raise", "bad", "good"]
EXAMPLES = [{}, {}, {}, {}]


def _bad_on(value):
    """A reward returning 1.0 for 'good', raising for 'raise', and `value` for 'bad'."""

    def fn(prompt, completion, example):
        if completion == "raise":
            raise RuntimeError("boom")
        return value if completion == "bad" else 1.0

    return fn


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf, "high", [1.0], object()])
def test_failures_are_counted_and_scored_zero(bad):
    scores, m = score_completions([RewardTerm("r", _bad_on(bad))], PROMPTS, COMPS, EXAMPLES)
    # good -> 1, raise -> 0 (failure), bad value -> 0 (failure), good -> 1
    assert torch.equal(scores, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.isfinite(scores).all()
    assert m["reward/r_failures"] == 2.0
    assert m["reward/r"] == pytest.approx(0.5)  # (1+0+0+1)/4
    assert m["reward/mean"] == pytest.approx(0.5)


def test_numeric_string_is_a_failure():
    scores, m = score_completions([RewardTerm("r", _bad_on("0.5"))], PROMPTS, COMPS, EXAMPLES)
    # contract: fn -> float; '0.5' is a str -> failure scored 0, like the other non-numbers
    assert m["reward/r_failures"] == 2.0
    assert scores[2].item() == 0.0


def test_numpy_and_torch_scalars_are_accepted():
    import numpy as np

    vals = iter([np.float32(0.25), torch.tensor(0.5), np.int64(2), 1])
    scores, m = score_completions([RewardTerm("r", lambda p, c, e: next(vals))], PROMPTS, PROMPTS, EXAMPLES)
    # 0.25, 0.5, 2, 1 pass through as floats, nothing counted as a failure
    assert torch.equal(scores, torch.tensor([0.25, 0.5, 2.0, 1.0]))
    assert m["reward/r_failures"] == 0.0


def test_none_means_the_reward_does_not_apply_to_that_sample():
    scores, m = score_completions([RewardTerm("r", _bad_on(None))], PROMPTS, COMPS, EXAMPLES)
    # good -> 1, raise -> 0 (failure), None -> 0 and left out of the mean, good -> 1
    assert torch.equal(scores, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert m["reward/r_failures"] == 1.0  # the raise only
    assert m["reward/r"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3 samples it applies to
    # None everywhere: the term applies to nothing in this batch, which is no failure
    scores, m = score_completions([RewardTerm("r", lambda p, c, e: None)], ["a"], ["b"], [{}])
    assert scores.tolist() == [0.0] and m["reward/r_failures"] == 0.0 and m["reward/r"] == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high"])
def test_on_error_error_raises_reward_error(bad):
    fn = _bad_on(bad)
    with pytest.raises(RewardError, match="reward 'r' returned a non-finite or non-numeric value"):
        score_completions([RewardTerm("r", fn, on_error="error")], ["a", "b"], ["good", "bad"], [{}, {}])


def test_on_error_error_on_raise_names_exception():
    with pytest.raises(RewardError, match="reward 'r' raised RuntimeError: boom"):
        score_completions([RewardTerm("r", _bad_on(0.0), on_error="error")], ["a"], ["raise"], [{}])


def test_weights_combine_hand_computed():
    a = RewardTerm("a", lambda p, c, e: 1.0 if c == "x" else 0.0, weight=1.0)
    b = RewardTerm("b", lambda p, c, e: len(c) / 10, weight=0.5)
    c = RewardTerm("c", lambda p, c, e: 2.0, weight=-0.25)
    scores, m = score_completions([a, b, c], ["", ""], ["x", "yyyy"], [{}, {}])
    # "x":    1*1.0 + 0.5*0.1 + (-0.25)*2 = 1 + 0.05 - 0.5 = 0.55
    # "yyyy": 1*0.0 + 0.5*0.4 + (-0.25)*2 = 0 + 0.2 - 0.5 = -0.3
    assert torch.allclose(scores, torch.tensor([0.55, -0.3]), atol=1e-6)
    assert m["reward/mean"] == pytest.approx(0.125, abs=1e-6)  # (0.55 - 0.3)/2
    # unbiased std of [0.55, -0.3]: |diff| / sqrt 2 = 0.85 / 1.41421 = 0.601041
    assert m["reward/std"] == pytest.approx(0.601041, abs=1e-5)
    assert m["reward/b"] == pytest.approx(0.25)  # (0.1 + 0.4)/2, unweighted


def test_kwargs_are_passed():
    t = RewardTerm("r", lambda p, c, e, scale: scale * len(c), kwargs={"scale": 3.0})
    scores, _ = score_completions([t], [""], ["ab"], [{}])
    assert scores.item() == 6.0  # 3 * 2


# ---------------------------------------------------------------- resolution


def test_builtin_and_unknown_names():
    from rlft.rewards.builtin import numeric_answer

    assert resolve_reward("numeric_answer") is numeric_answer
    with pytest.raises(ValueError, match="unknown reward 'numeric_anwser': not a built-in"):
        resolve_reward("numeric_anwser")


def test_file_plugin(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text(
        textwrap.dedent("""
        def length_bonus(prompt, completion, example):
            return len(completion) / 4
        NOT_CALLABLE = 3
    """)
    )
    fn = resolve_reward(f"{f}:length_bonus")
    assert fn("", "abc", {}) == 0.75  # 3 / 4
    with pytest.raises(ValueError, match="'NOT_CALLABLE' is not a callable"):
        resolve_reward(f"{f}:NOT_CALLABLE")
    with pytest.raises(ValueError, match="'missing' is not a callable"):
        resolve_reward(f"{f}:missing")
    with pytest.raises(ValueError, match="reward file not found"):
        resolve_reward(f"{tmp_path}/nope.py:fn")


def test_module_plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "rwpkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def two(prompt, completion, example):\n    return 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rwpkg_for_test", raising=False)
    assert resolve_reward("rwpkg_for_test.mod:two")("", "", {}) == 2.0
    assert resolve_reward("rlft.rewards.builtin:answer_format")("", "<answer>1</answer>", {}) == 1.0
    with pytest.raises(ValueError, match="cannot import module 'rwpkg_for_test.nope'"):
        resolve_reward("rwpkg_for_test.nope:two")


def test_reward_name_and_build_terms(tmp_path):
    assert reward_name("examples/rewards.py:digit_density") == "digit_density"
    assert reward_name("numeric_answer") == "numeric_answer"
    specs = [RewardSpec(fn="numeric_answer", weight=2.0), RewardSpec(fn="answer_format", name="fmt")]
    terms = build_terms(specs)
    assert [(t.name, t.weight) for t in terms] == [("numeric_answer", 2.0), ("fmt", 1.0)]


def test_python_reward_fns_replace_config_list_and_take_weights_by_name():
    def mine(prompt, completion, example):
        return 1.0

    specs = [RewardSpec(fn="numeric_answer"), RewardSpec(fn="x:mine", weight=0.3, on_error="error")]
    terms = build_terms(specs, as_named([mine]))
    # only `mine` is used; its weight/on_error come from the config entry named 'mine'
    assert [(t.name, t.fn, t.weight, t.on_error) for t in terms] == [("mine", mine, 0.3, "error")]
    # a mapping keeps its keys; a name absent from the config gets weight 1, on_error zero
    terms = build_terms(specs, as_named({"other": mine}))
    assert [(t.name, t.weight, t.on_error) for t in terms] == [("other", 1.0, "zero")]
