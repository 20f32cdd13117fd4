"""Training-health alarms over a run's metrics history (the records of metrics.jsonl).

Every check looks at the history up to the latest step and reads windows of `cfg.window` points
of one metric (points = the steps that logged it; NaN points are dropped):
- a *trend* compares the mean of the first window with the mean of the last window;
- a *level* checks the mean of the last window against a threshold.
Trend checks wait until a metric has two full, disjoint windows (2 * window points); level checks
wait for one full window. Reference metrics (gold reward, held-out accuracy, verifier) may be
sparse (eval/* only on eval steps): their windows shrink to half the points they have.

"Rises" for the trained reward is scale-free: the standardized rise
    z = (mean(last) - mean(first)) / sqrt((var(first) + var(last)) / 2)
(population variances; Cohen's d with pooled std). A reference "stalls" when its absolute gain
mean(last) - mean(first) is below `cfg.reference_min_rise` (gold rewards and accuracies are
on a known 0..1 scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlft.config.rl import AlarmConfig

LENGTH_KEY = "rollout/response_len"
REPEAT_KEY = "rollout/repeat_ngram_frac"
EMPTY_KEY = "rollout/empty_answer_frac"
ENTROPY_KEY = "policy/entropy"
ZERO_STD_KEY = "rollout/zero_std_groups_frac"
_STD_FLOOR = 1e-8  # a noiseless step change still counts as a (very large) rise


@dataclass(frozen=True)
class Firing:
    """An alarm firing at the latest step of the history."""

    name: str
    message: str
    keys: tuple[str, ...]  # metrics it is about (the report shades their plots)


@dataclass(frozen=True)
class Alarm:
    """An episode of an alarm: it fired at every checked step from first_step to last_step."""

    name: str
    first_step: int
    last_step: int
    message: str  # as of last_step
    keys: tuple[str, ...]


def as_number(value: Any) -> float | None:
    """A metric value as a float: numbers, and "nan"/"inf"/"-inf" (how metrics.jsonl writes
    non-finite values); None for anything else (strings, lists, bools)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return None


class MetricHistory:
    """Per-metric series of (step, value), appended one metrics record at a time."""

    def __init__(self) -> None:
        self.steps: dict[str, list[int]] = {}
        self.values: dict[str, list[float]] = {}
        self.last_step = 0

    def append(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        self.last_step = step
        for key, raw in record.items():
            value = as_number(raw)
            if key == "step" or value is None or math.isnan(value):
                continue
            self.steps.setdefault(key, []).append(step)
            self.values.setdefault(key, []).append(value)

    def series(self, key: str) -> list[float]:
        return self.values.get(key, [])


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def population_var(xs: Sequence[float]) -> float:
    m = mean(xs)
    return sum((x - m) ** 2 for x in xs) / len(xs)


def standardized_rise(first: Sequence[float], last: Sequence[float]) -> float:
    """(mean(last) - mean(first)) / pooled population std (floored at 1e-8); see module doc."""
    pooled = math.sqrt((population_var(first) + population_var(last)) / 2)
    return (mean(last) - mean(first)) / max(pooled, _STD_FLOOR)


def first_and_last(
    values: Sequence[float], window: int, partial: bool = False
) -> tuple[Sequence[float], Sequence[float]] | None:
    """(first window, last window), disjoint; None until there are 2 * window points (partial:
    windows of min(window, len // 2) points, None below 2 points)."""
    w = min(window, len(values) // 2) if partial else window
    if w < 1 or len(values) < 2 * w:
        return None
    return values[:w], values[-w:]


def last_window(values: Sequence[float], window: int) -> list[float] | None:
    return list(values[-window:]) if len(values) >= window else None


def proxy_outruns_reference(h: MetricHistory, proxy: str, reference: str, cfg: AlarmConfig) -> str | None:
    """The proxy rises by >= reward_rise_z pooled stds while the reference gains < reference_min_rise."""
    p = first_and_last(h.series(proxy), cfg.window)
    r = first_and_last(h.series(reference), cfg.window, partial=True)
    if not proxy or not reference or p is None or r is None:
        return None
    z, gain = standardized_rise(*p), mean(r[1]) - mean(r[0])
    if z < cfg.reward_rise_z or gain >= cfg.reference_min_rise:
        return None
    return (
        f"{proxy} rose {z:.1f} pooled std ({mean(p[0]):.4g} -> {mean(p[1]):.4g}) while {reference} "
        f"changed {gain:+.4g} ({mean(r[0]):.4g} -> {mean(r[1]):.4g})"
    )


def window_ratio(h: MetricHistory, key: str, window: int) -> tuple[float, float, float] | None:
    """(first-window mean, last-window mean, last / first); None without data or a zero first mean."""
    fl = first_and_last(h.series(key), window)
    if fl is None or mean(fl[0]) == 0:
        return None
    a, b = mean(fl[0]), mean(fl[1])
    return a, b, b / a


def level(h: MetricHistory, key: str, threshold: float, window: int, what: str) -> str | None:
    """The last window's mean of `key` is at or above `threshold`."""
    w = last_window(h.series(key), window)
    if w is None or mean(w) < threshold:
        return None
    return f"{what}: mean {key} over the last {len(w)} steps is {mean(w):.3g} (threshold {threshold:g})"


def kl_blowup(h: MetricHistory, cfg: AlarmConfig) -> str | None:
    """The latest KL >= kl_min and >= kl_jump x the mean of the `window` values before it."""
    values = h.series(cfg.kl_key)
    if len(values) < cfg.window + 1:
        return None
    latest, before = values[-1], mean(values[-cfg.window - 1 : -1])
    if latest < cfg.kl_min or latest < cfg.kl_jump * before:
        return None
    return (
        f"{cfg.kl_key} jumped to {latest:.4g} from a mean of {before:.4g} over the {cfg.window} steps before"
    )


def _ratio_message(
    h: MetricHistory, key: str, cfg: AlarmConfig, test: Callable[[float], bool], verb: str
) -> str | None:
    r = window_ratio(h, key, cfg.window)
    if r is None or not test(r[2]):
        return None
    return f"{key} {verb}: {r[0]:.4g} -> {r[1]:.4g} (x{r[2]:.2f}, first vs last {cfg.window} steps)"


def reward_failures(h: MetricHistory) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """The `reward_failures` alarm: some completions of the latest step could not be scored by a
    reward function (`reward/<fn>_failures` > 0; they scored 0). No window: one such step is worth
    a look. (A function that fails on every completion stops the run instead: rlft.rewards.scoring.)"""
    keys = sorted(
        k
        for k, steps in h.steps.items()
        if k.startswith("reward/")
        and k.endswith("_failures")
        and steps[-1] == h.last_step
        and h.values[k][-1] > 0
    )
    if not keys:
        return {}
    counts = ", ".join(f"{k[len('reward/') : -len('_failures')]} {h.values[k][-1]:g}" for k in keys)
    return {
        "reward_failures": (
            f"completions a reward function could not score (scored 0): {counts}",
            tuple(keys),
        )
    }


def check_alarms(h: MetricHistory, cfg: AlarmConfig) -> list[Firing]:
    """Every alarm firing at the latest step of `h` (each check costs O(window))."""
    c = cfg
    checks = {
        "reward_hacking_gold": (
            proxy_outruns_reference(h, c.reward_key, c.gold_key, c),
            (c.reward_key, c.gold_key),
        ),
        "reward_hacking_heldout": (
            proxy_outruns_reference(h, c.reward_key, c.heldout_key, c),
            (c.reward_key, c.heldout_key),
        ),
        "rm_vs_verifier": (
            proxy_outruns_reference(h, c.rm_key, c.verifier_key, c),
            (c.rm_key, c.verifier_key),
        ),
        "length_explosion": (
            _ratio_message(h, LENGTH_KEY, c, lambda x: x >= c.length_ratio_high, "exploded"),
            (LENGTH_KEY,),
        ),
        "length_collapse": (
            _ratio_message(h, LENGTH_KEY, c, lambda x: x <= c.length_ratio_low, "collapsed"),
            (LENGTH_KEY,),
        ),
        "repeated_ngrams": (level(h, REPEAT_KEY, c.repeat_ngram_max, c.window, "repetition"), (REPEAT_KEY,)),
        "empty_answers": (
            level(h, EMPTY_KEY, c.empty_answer_max, c.window, "format satisfied with empty content"),
            (EMPTY_KEY,),
        ),
        "kl_blowup": (kl_blowup(h, c), (c.kl_key,)),
        "entropy_collapse": (
            _ratio_message(h, ENTROPY_KEY, c, lambda x: x <= c.entropy_ratio_min, "collapsed"),
            (ENTROPY_KEY,),
        ),
        "zero_variance_groups": (
            level(h, ZERO_STD_KEY, c.zero_std_max, c.window, "groups with equal rewards dominate"),
            (ZERO_STD_KEY,),
        ),
        **reward_failures(h),
    }
    return [Firing(name, msg, keys) for name, (msg, keys) in checks.items() if msg is not None]


class AlarmWatch:
    """Alarms during a run: feed each step's metrics; returns the alarms that start firing. An
    alarm that fires again within `window` steps of its last firing continues its episode (it
    is not reported again), so a metric hovering at a threshold warns once."""

    def __init__(self, cfg: AlarmConfig, past: Iterable[Mapping[str, Any]] = ()):
        if cfg.window < 1:
            raise ValueError(f"alarms.window must be >= 1, got {cfg.window}")
        self.cfg, self.history = cfg, MetricHistory()
        self.firing: list[Firing] = []  # at the latest step
        self.last_fired: dict[str, int] = {}  # alarm -> latest step it fired at
        for record in past:  # a resumed run: rebuild the history; its alarms were logged before
            self.observe(record)

    def continues(self, name: str, step: int) -> bool:
        """Whether `name` firing at `step` belongs to its current episode."""
        return name in self.last_fired and step - self.last_fired[name] <= self.cfg.window

    def observe(self, record: Mapping[str, Any]) -> list[Firing]:
        self.history.append(record)
        step = self.history.last_step
        self.firing = check_alarms(self.history, self.cfg)
        new = [f for f in self.firing if not self.continues(f.name, step)]
        self.last_fired.update({f.name: step for f in self.firing})
        return new


def scan_alarms(records: Iterable[Mapping[str, Any]], cfg: AlarmConfig) -> list[Alarm]:
    """Every alarm episode over a whole history, as AlarmWatch groups them during the run."""
    watch = AlarmWatch(cfg)
    episodes: list[Alarm] = []
    current: dict[str, int] = {}  # alarm -> index of its latest episode
    for record in records:
        for f in watch.observe(record):
            current[f.name] = len(episodes)
            episodes.append(
                Alarm(f.name, watch.history.last_step, watch.history.last_step, f.message, f.keys)
            )
        for f in watch.firing:  # extend every episode still firing
            i = current[f.name]
            episodes[i] = Alarm(f.name, episodes[i].first_step, watch.history.last_step, f.message, f.keys)
    return episodes


def alarm_record(step: int, firing: Firing) -> dict[str, Any]:
    """The alarms.jsonl line of a newly fired alarm."""
    return {"step": step, "alarm": firing.name, "message": firing.message, "keys": list(firing.keys)}
