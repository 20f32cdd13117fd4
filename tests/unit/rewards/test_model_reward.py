"""rlft.rewards.model: a trained reward model (or an ensemble) as a batched reward.

The RMs are the tiny random Llama with a scalar head set by hand. The head is linear without bias,
so an RM whose head is c * w scores exactly c times what the RM with head w scores: every
expected value below follows from one RM's raw `score_texts` output s.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlft.config.loader import build
from rlft.config.rl import RewardSpec, RLConfig
from rlft.data.preferences import conversation_text as rm_text
from rlft.models.reward_model import score_texts
from rlft.rewards.model import ModelReward, ensemble_metrics, load_member
from rlft.rewards.scoring import RewardError, RewardTerm, build_terms, score_completions

COMPLETIONS = ["4", "The answer is 5.", "", "5"]
EXAMPLES = [{"prompt": "2+3="}, {"prompt": "2+3="}, {"prompt": "1+1="}, {"prompt": "2+3="}]
TEMPLATED = ["<|im_start|>user\nIGNORED<|im_end|>\n<|im_start|>assistant\n"] * 4  # what the policy saw


def save_rm(base: str, target: Path, scale: float) -> str:
    """The tiny LM with a scalar head = scale * w, w ~ N(0, 1) from seed 5, saved as an RM dir."""
    from rlft.models.load import load_tokenizer
    from rlft.models.reward_model import load_reward_model, score_head

    tok = load_tokenizer(base, padding_side="right")
    model = load_reward_model(base, tok)
    head = score_head(model)
    assert head.bias is None  # linear, no bias: scale * w gives scale * s exactly (up to rounding)
    w = torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        head.weight.copy_(scale * w)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return str(target)


@pytest.fixture(scope="module")
def rms(tiny_model_path, tmp_path_factory) -> dict[str, str]:
    """RM dirs with heads 0, w and 3w."""
    root = tmp_path_factory.mktemp("rms")
    return {
        name: save_rm(tiny_model_path, root / name, s) for name, s in [("zero", 0.0), ("w", 1.0), ("3w", 3.0)]
    }


def raw_scores(
    path: str, prompts: list, completions: list[str], system_prompt: str | None = None
) -> list[float]:
    """One RM's raw score_texts on the raw prompts: the hand-check reference."""
    model, tok = load_member(path)
    return score_texts(model, tok, prompts, completions, system_prompt=system_prompt)


def test_zero_head_scores_exactly_zero(rms):
    scores, metrics = ModelReward([rms["zero"]])(TEMPLATED, COMPLETIONS, EXAMPLES)
    # head weight 0 -> h . 0 = 0 for every sequence; one member -> no ensemble metrics
    assert scores == [0.0, 0.0, 0.0, 0.0] and metrics == {}


def test_ensemble_is_the_mean_and_logs_disagreement(rms):
    s = raw_scores(rms["w"], [ex["prompt"] for ex in EXAMPLES], COMPLETIONS)
    # seed 5 gives scores of both signs here, so mean |s| (disagreement) differs from |mean s|
    assert min(s) < -0.5 and max(s) > 0.5
    scores, metrics = ModelReward([rms["w"], rms["3w"]])(TEMPLATED, COMPLETIONS, EXAMPLES)
    # members score s and 3s -> mean (s + 3s) / 2 = 2s
    assert scores == pytest.approx([2 * x for x in s], rel=1e-5, abs=1e-5)
    # population std of {s, 3s} = sqrt(((s - 2s)^2 + (3s - 2s)^2) / 2) = |s|; averaged over completions
    mean_abs = sum(abs(x) for x in s) / 4
    assert metrics["reward/rm_disagreement"] == pytest.approx(mean_abs, rel=1e-5, abs=1e-5)
    assert metrics["reward/rm_0"] == pytest.approx(sum(s) / 4, rel=1e-5, abs=1e-5)
    assert metrics["reward/rm_1"] == pytest.approx(3 * sum(s) / 4, rel=1e-5, abs=1e-5)


def test_ensemble_metrics_by_hand():
    table = torch.tensor([[1.0, 2.0, math.nan], [3.0, 0.0, 5.0]])
    m = ensemble_metrics(table, "rm")
    # column 3 has a NaN: left out. member means: (1+2)/2 = 1.5, (3+0)/2 = 1.5 (they agree on
    # average), but per completion: population std of {1,3} = 1, of {2,0} = 1 -> disagreement 1
    assert m == {"reward/rm_0": 1.5, "reward/rm_1": 1.5, "reward/rm_disagreement": 1.0}
    assert ensemble_metrics(table[:1], "rm") == {}  # one member: nothing to disagree about


def test_rm_reads_the_raw_prompt_string_or_messages(rms):
    msgs = [{"role": "user", "content": "2+3="}]
    examples = [{"prompt": "2+3="}, {"prompt": msgs}]
    scores, _ = ModelReward([rms["w"]])(TEMPLATED[:2], ["5", "5"], examples)
    (expected,) = raw_scores(rms["w"], ["2+3="], ["5"])
    # a string prompt is the single user message: both rows are the same conversation
    assert scores == pytest.approx([expected, expected], rel=1e-5, abs=1e-5)
    model, tok = load_member(rms["w"])
    # the policy's templated text would be templated again: a different conversation, another score
    assert rm_text(tok, TEMPLATED[0], "5") != rm_text(tok, "2+3=", "5")
    (on_templated,) = score_texts(model, tok, [TEMPLATED[0]], ["5"])
    assert abs(on_templated - expected) > 1e-4


def test_build_terms_uses_the_data_prompt_field_and_system_prompt(rms):
    data = SimpleNamespace(prompt_field="question", system_prompt="Be brief.")
    (term,) = build_terms([RewardSpec(model=[rms["w"]], weight=0.5)], data=data)
    assert (term.name, term.batched, term.weight) == ("rm", True, 0.5)
    examples = [{"question": "2+3=", "prompt": "unused"}, {"question": "1+1=", "prompt": "unused"}]
    scores, metrics = score_completions([term], TEMPLATED[:2], ["5", "2"], examples)
    s = raw_scores(rms["w"], ["2+3=", "1+1="], ["5", "2"], system_prompt="Be brief.")
    assert s != raw_scores(rms["w"], ["2+3=", "1+1="], ["5", "2"])  # the system prompt matters
    # total = weight * s; reward/rm logs the unweighted mean
    assert scores.tolist() == pytest.approx([0.5 * x for x in s], rel=1e-5, abs=1e-5)
    assert metrics["reward/rm"] == pytest.approx(sum(s) / 2, rel=1e-5, abs=1e-5)
    assert metrics["reward/rm_failures"] == 0.0


def test_missing_prompt_field_or_nonfinite_score_is_a_failure(rms):
    (term,) = build_terms([RewardSpec(model=[rms["w"], rms["3w"]], name="judge")])
    # no 'prompt' field -> the batch call raises -> every completion fails: the step stops, naming
    # the term and chaining the model's own exception
    with pytest.raises(RewardError, match="reward 'judge' failed on all 2 completions") as caught:
        score_completions([term], ["a", "b"], ["x", "y"], [{"question": "q"}, {"question": "q"}])
    assert "prompt" in str(caught.value.__cause__)
    model, _ = term.fn.members[1]
    with torch.no_grad():
        model.score.weight.fill_(math.nan)  # member 2 returns NaN -> the mean is NaN
    with pytest.raises(RewardError, match="returned a non-finite or non-numeric value"):
        score_completions([term], TEMPLATED[:2], ["x", "y"], EXAMPLES[:2])
    strict = RewardTerm("judge", term.fn, on_error="error", batched=True)
    with pytest.raises(RewardError, match="reward 'judge' returned a non-finite or non-numeric value"):
        score_completions([strict], TEMPLATED[:2], ["x", "y"], EXAMPLES[:2])


def test_batched_term_contract():
    def lengths(prompts, completions, examples, scale=1.0):
        return [scale * len(c) for c in completions], {"reward/len_calls": 1.0}

    lengths.rlft_batched = True
    spec = RewardSpec(fn="x:lengths", name="len", weight=0.5, kwargs={"scale": 2.0})
    (term,) = build_terms([spec], {"len": lengths})
    assert term.batched and term.kwargs == {"scale": 2.0}
    scores, m = score_completions([term], ["", ""], ["ab", "abcd"], [{}, {}])
    # values 2*2 = 4, 2*4 = 8; weighted 0.5 -> 2, 4; reward/len = (4+8)/2 = 6; one call per batch
    assert scores.tolist() == [2.0, 4.0] and m["reward/len"] == 6.0 and m["reward/len_calls"] == 1.0
    short = RewardTerm("len", lambda p, c, e: ([1.0], {}), batched=True)
    with pytest.raises(RewardError, match="reward 'len' failed on all 2 .* returned 1 values for 2"):
        score_completions([short], ["", ""], ["a", "b"], [{}, {}])


def test_config_accepts_a_single_model_path():
    cfg = build(RLConfig, {"rewards": [{"model": "runs/rm/final", "weight": 2.0}]})
    assert cfg.rewards[0].model == ["runs/rm/final"] and cfg.rewards[0].fn == "numeric_answer"
    cfg = build(RLConfig, {"rewards": [{"model": ["a/final", "b/final"]}]})
    assert cfg.rewards[0].model == ["a/final", "b/final"]


def test_import_stays_light():
    code = "import sys, rlft.rewards.scoring, rlft.rewards.model; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
