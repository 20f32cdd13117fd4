"""Text-level diagnostics of sampled completions, logged every RL step: the R1-Zero emergence
signals (reflection phrases, length of the <think> part; DeepSeek-AI 2025, sec. 2.2.4) and signs
of degeneration (repeated n-grams, long length tails).

Pure functions over strings and token lists; imports nothing else from the package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence

from rlft.config.rl import DEFAULT_REFLECTION_PHRASES


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any phrase as whole words (not inside a longer word);
    a space in a phrase matches any run of whitespace. None when there are no phrases."""
    parts = [r"\s+".join(re.escape(w) for w in p.split()) for p in phrases if p.strip()]
    if not parts:
        return None
    parts.sort(key=len, reverse=True)  # the longest phrase wins where several start at one place
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def reflection_counts(texts: Sequence[str], phrases: Sequence[str]) -> list[int]:
    """Non-overlapping occurrences of the reflection phrases in each text."""
    pattern = phrase_pattern(phrases)
    return [len(pattern.findall(t)) if pattern else 0 for t in texts]


def think_text(text: str, tag: str = "think") -> str | None:
    """The reasoning part: between <tag> and </tag>; to the end of the text when the block is never
    closed; from the start when only the closing tag appears (the prompt opened it). None if no tag."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    start = text.find(open_tag)
    if start >= 0:
        body = text[start + len(open_tag) :]
        end = body.find(close_tag)
        return body if end < 0 else body[:end]
    end = text.find(close_tag)
    return text[:end] if end >= 0 else None


def think_words(text: str, tag: str = "think") -> int:
    """Whitespace-separated words in the reasoning part (0 without one)."""
    part = think_text(text, tag)
    return len(part.split()) if part is not None else 0


def repeated_ngram_frac(items: Sequence[Hashable], n: int) -> float:
    """Share of the n-grams of a sequence that repeat an earlier one: (total - distinct) / total,
    total = len - n + 1; 0 for sequences shorter than n."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    total = len(items) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(items[i : i + n]) for i in range(total)})
    return (total - distinct) / total


_BLOCK = re.compile(r"<(think|answer)>(.*?)</\1>|\\boxed\{([^{}]*)\}", re.S)


def has_empty_format(completion: str) -> bool:
    """True when the completion has a <think>/<answer> block or a \\boxed{} (the format a format
    reward pays for) and one of them holds only whitespace."""
    blocks = [m.group(2) if m.group(1) else m.group(3) for m in _BLOCK.finditer(completion)]
    return any(not b.strip() for b in blocks)


def empty_answer_frac(completions: Sequence[str]) -> float:
    """Share of completions whose format is satisfied with empty content (rollout/empty_answer_frac)."""
    return sum(map(has_empty_format, completions)) / max(len(completions), 1)


def percentile(values: Sequence[float], q: float) -> float:
    """q-quantile (0 <= q <= 1) with linear interpolation between the two closest ranks (numpy's
    default): position (len - 1) * q in the sorted values."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def text_diagnostics(
    completions: Sequence[str],
    response_ids: Sequence[Sequence[int]],
    phrases: Sequence[str] = DEFAULT_REFLECTION_PHRASES,
    think_tag: str = "think",
    ngram: int = 4,
) -> dict[str, float]:
    """Means over completions of: having any reflection phrase, the phrase count, words in the
    think part (0 without one), and the repeated token n-gram fraction."""
    counts = reflection_counts(completions, phrases)
    return {
        "rollout/reflection_frac": _mean([float(c > 0) for c in counts]),
        "rollout/reflection_count": _mean([float(c) for c in counts]),
        "rollout/empty_answer_frac": empty_answer_frac(completions),
        "rollout/think_words": _mean([float(think_words(t, think_tag)) for t in completions]),
        "rollout/repeat_ngram_frac": _mean([repeated_ngram_frac(ids, ngram) for ids in response_ids]),
    }
