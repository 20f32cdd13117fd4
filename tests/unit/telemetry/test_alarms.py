"""Alarms over synthetic metrics histories: each fires on a history made to trigger it and the
others stay quiet; a benign history fires nothing. Windows of 2 steps keep the arithmetic small."""

from __future__ import annotations

import math

import pytest

from rlft.config.rl import AlarmConfig
from rlft.telemetry.alarms import (
    AlarmWatch,
    MetricHistory,
    as_number,
    check_alarms,
    first_and_last,
    scan_alarms,
    standardized_rise,
)
from rlft.telemetry.diagnostics import empty_answer_frac, has_empty_format

CFG = AlarmConfig(window=2, verifier_key="reward/numeric_answer")
RISING = [0.0, 0.2, 0.8, 1.0]  # windows [0, .2] and [.8, 1]: means .1 -> .9, pvar .01 each: z = .8/.1 = 8
BENIGN = {
    "reward/mean": [0.5, 0.6, 0.5, 0.6],  # flat: z = 0
    "reward/gold": [0.2, 0.3, 0.6, 0.7],  # gain .65 - .25 = .4
    "reward/rm": [1.0, 1.2, 1.0, 1.2],  # flat
    "reward/numeric_answer": [0.2, 0.3, 0.6, 0.7],
    "rollout/response_len": [10, 12, 14, 12],  # 11 -> 13: x1.18
    "rollout/repeat_ngram_frac": [0.05, 0.1, 0.1, 0.15],  # last window mean .125 < .2
    "rollout/empty_answer_frac": [0.0, 0.05, 0.0, 0.1],  # .05 < .1
    "policy/kl": [0.05, 0.06, 0.07, 0.08],  # .08 < 5 x mean(.06, .07) = .325
    "policy/entropy": [2.0, 1.8, 1.2, 1.0],  # 1.9 -> 1.1: x0.58
    "rollout/zero_std_groups_frac": [0.5, 0.25, 0.25, 0.375],  # last window mean .3125 < .5
}
BENIGN_EVAL = {2: 0.3, 4: 0.5}  # eval/accuracy on eval steps only: windows of 1 point, gain .2


def records(series: dict[str, list], evals: dict[int, float] | None = None) -> list[dict]:
    n = max(len(v) for v in series.values())
    out = [{"step": i + 1, **{k: v[i] for k, v in series.items() if i < len(v)}} for i in range(n)]
    for step, acc in (BENIGN_EVAL if evals is None else evals).items():
        out[step - 1]["eval/accuracy"] = acc
    return out


def fired(recs: list[dict], cfg: AlarmConfig = CFG) -> set[str]:
    h = MetricHistory()
    for r in recs:
        h.append(r)
    return {f.name for f in check_alarms(h, cfg)}


def test_standardized_rise_and_windows():
    # means 1 and 5, population variances 1 and 1: pooled std 1 -> z = 4
    assert standardized_rise([0, 2], [4, 6]) == pytest.approx(4.0)
    assert standardized_rise([1, 1], [1, 1]) == 0.0
    # a noiseless step of 1: pooled std floored at 1e-8 -> z = 1e8
    assert standardized_rise([0, 0], [1, 1]) == pytest.approx(1e8)
    assert first_and_last([1, 2, 3, 4, 5], 2) == ([1, 2], [4, 5])
    assert first_and_last([1, 2, 3], 2) is None  # needs 2 x 2 points
    assert first_and_last([1, 2, 3], 5, partial=True) == ([1], [3])  # min(5, 3 // 2) = 1
    assert first_and_last([1], 5, partial=True) is None


def test_benign_history_fires_nothing():
    assert fired(records(BENIGN)) == set()
    # the trained reward rising is fine while gold, held-out accuracy and verifier rise too
    assert fired(records({**BENIGN, "reward/mean": RISING})) == set()


@pytest.mark.parametrize(
    ("alarm", "change", "evals"),
    [
        # reward z = 8 >= 1 while gold gains 0 < .02
        ("reward_hacking_gold", {"reward/mean": RISING, "reward/gold": [0.5] * 4}, None),
        # reward z = 8 while held-out accuracy at steps 2 and 4 stays .3
        ("reward_hacking_heldout", {"reward/mean": RISING}, {2: 0.3, 4: 0.3}),
        # rm: means 1.5 -> 5.5, pvar .25 each: z = 4 / .5 = 8; verifier .4 -> .3: gain -.1
        ("rm_vs_verifier", {"reward/rm": [1, 2, 5, 6], "reward/numeric_answer": [0.4, 0.4, 0.3, 0.3]}, None),
        ("length_explosion", {"rollout/response_len": [10, 12, 30, 36]}, None),  # 11 -> 33: x3 >= 2
        ("length_collapse", {"rollout/response_len": [20, 22, 8, 10]}, None),  # 21 -> 9: x0.43 <= .5
        ("repeated_ngrams", {"rollout/repeat_ngram_frac": [0.0, 0.1, 0.3, 0.25]}, None),  # .275 >= .2
        ("empty_answers", {"rollout/empty_answer_frac": [0.0, 0.0, 0.25, 0.5]}, None),  # .375 >= .1
        ("kl_blowup", {"policy/kl": [0.01, 0.02, 0.02, 0.3]}, None),  # .3 >= 5 x .02 and >= .05
        ("kl_blowup", {"policy/kl": [0.05, 0.06, 0.07, "inf"]}, None),  # logged as "inf"
        ("entropy_collapse", {"policy/entropy": [2.0, 1.8, 0.3, 0.2]}, None),  # 1.9 -> .25: x0.13 <= .2
        ("zero_variance_groups", {"rollout/zero_std_groups_frac": [0.25, 0.5, 0.75, 0.5]}, None),  # .625
    ],
)
def test_each_alarm_fires_alone_on_its_history(alarm, change, evals):
    assert fired(records({**BENIGN, **change}, evals)) == {alarm}


def test_thresholds_and_keys_are_configurable():
    small_kl = records({**BENIGN, "policy/kl": [0.001, 0.002, 0.001, 0.03]})
    assert fired(small_kl) == set()  # x20 jump, but .03 < kl_min .05
    assert fired(small_kl, AlarmConfig(window=2, kl_min=0.01)) == {"kl_blowup"}
    rm_case = records({**BENIGN, "reward/rm": [1, 2, 5, 6], "reward/numeric_answer": [0.4, 0.4, 0.3, 0.3]})
    assert fired(rm_case, AlarmConfig(window=2)) == set()  # verifier_key empty: no check
    # zero-std mean .3125 over the last window: fires once the threshold is .3
    assert fired(records(BENIGN), AlarmConfig(window=2, zero_std_max=0.3)) == {"zero_variance_groups"}


def test_too_short_history_and_missing_metrics_stay_quiet():
    # 3 steps: trends need 2 windows of 2 points, so an entropy falling 2.0 -> 0.1 is not yet judged
    short = {k: v[:3] for k, v in BENIGN.items()} | {"policy/entropy": [2.0, 1.0, 0.1]}
    assert fired(records(short, evals={})) == set()
    assert fired([{"step": 1}, {"step": 2}, {"step": 3}, {"step": 4}]) == set()


def test_message_names_the_numbers():
    h = MetricHistory()
    for r in records({**BENIGN, "reward/mean": RISING, "reward/gold": [0.5] * 4}):
        h.append(r)
    (f,) = check_alarms(h, CFG)
    assert (
        f.message == "reward/mean rose 8.0 pooled std (0.1 -> 0.9) while reward/gold changed +0 (0.5 -> 0.5)"
    )
    assert f.keys == ("reward/mean", "reward/gold")


def test_as_number_and_history_drop_nan():
    assert math.isnan(as_number("nan")) and as_number("inf") == math.inf and as_number(3) == 3.0
    assert as_number(True) is None and as_number("abc") is None and as_number([1]) is None
    h = MetricHistory()
    h.append({"step": 1, "a": "nan", "b": "-inf", "c": "text"})
    assert h.series("a") == [] and h.series("b") == [-math.inf] and h.series("c") == []


ZERO_STD = "rollout/zero_std_groups_frac"


def test_watch_reports_an_alarm_once_per_episode():
    watch = AlarmWatch(AlarmConfig(window=2))
    # last-window means: step 2 .6 (fires), 3 .4, 4 .5 (fires again 2 steps after step 2: same
    # episode), 5 .5, 6 .1, 7 .1, 8 .6 (3 steps after step 5 > window 2: a new episode)
    values = [0.6, 0.6, 0.2, 0.8, 0.2, 0.0, 0.2, 1.0]
    new = {i + 1: [f.name for f in watch.observe({"step": i + 1, ZERO_STD: v})] for i, v in enumerate(values)}
    assert {s: n for s, n in new.items() if n} == {2: ["zero_variance_groups"], 8: ["zero_variance_groups"]}
    episodes = scan_alarms(
        [{"step": i + 1, ZERO_STD: v} for i, v in enumerate(values)], AlarmConfig(window=2)
    )
    assert [(a.name, a.first_step, a.last_step) for a in episodes] == [
        ("zero_variance_groups", 2, 5),
        ("zero_variance_groups", 8, 8),
    ]


def test_resumed_watch_does_not_repeat_an_ongoing_alarm():
    recs = [{"step": i + 1, ZERO_STD: 0.75} for i in range(4)]
    resumed = AlarmWatch(AlarmConfig(window=2), past=recs[:3])  # fired at step 2, before the restart
    assert resumed.observe(recs[3]) == []
    assert [f.name for f in resumed.firing] == ["zero_variance_groups"]
    with pytest.raises(ValueError, match="alarms.window must be >= 1"):
        AlarmWatch(AlarmConfig(window=0))


def test_empty_format_detection():
    completions = [
        "<think>x</think><answer> </answer>",  # empty answer
        "<think>\n</think>\n<answer>4</answer>",  # empty reasoning
        "<think>2+2</think><answer>4</answer>",
        "so the answer is \\boxed{}",  # empty box
        "so the answer is \\boxed{4}",
        "no format at all",
    ]
    assert [has_empty_format(c) for c in completions] == [True, True, False, True, False, False]
    assert empty_answer_frac(completions) == 0.5  # 3 of 6
    assert empty_answer_frac([]) == 0.0


def test_reward_failures_fire_at_the_step_that_had_them_naming_each_function():
    # failures at step 2 only (2 of code, 1 of judge); step 3 clean again
    series = {
        **BENIGN,
        "reward/code_failures": [0.0, 2.0, 0.0],
        "reward/judge_failures": [0.0, 1.0, 0.0],
        "reward/mean_failures_seen": [5.0, 5.0, 5.0],  # not a *_failures key of a reward fn
    }
    recs = records(series, evals={})
    assert "reward_failures" not in fired(recs[:1])
    h = MetricHistory()
    for r in recs[:2]:
        h.append(r)
    (f,) = [f for f in check_alarms(h, CFG) if f.name == "reward_failures"]
    assert f.message == "completions a reward function could not score (scored 0): code 2, judge 1"
    assert f.keys == ("reward/code_failures", "reward/judge_failures")
    assert "reward_failures" not in fired(recs[:3])
