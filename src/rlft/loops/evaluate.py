"""Held-out evaluation: accuracy, pass@k and maj@k of K samples per prompt (greedy when K=1)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rlft.data.prompts import encode_prompts
from rlft.rewards.answers import answers_equal, extract_answer, to_number
from rlft.rollout.base import SamplingParams
from rlft.rollout.hf import HFGenerator


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, eq. 1):
    1 - C(n - c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@k needs k <= n samples (k={k}, n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def answer_key(answer: str | None) -> str | None:
    """Canonical form for voting: numbers compare by value ('1,000' == '1000.0')."""
    if answer is None:
        return None
    num = to_number(answer)
    return str(num) if num is not None else " ".join(answer.split()).lower()


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """Most frequent non-empty answer; ties go to the one seen first."""
    keyed = [(answer_key(a), a) for a in answers if a is not None]
    if not keyed:
        return None
    counts = Counter(k for k, _ in keyed)
    best = max(counts.values())
    return next(a for k, a in keyed if counts[k] == best)


def score_row(completions: Sequence[str], reference: Any, k: int) -> dict[str, Any]:
    answers = [extract_answer(c) for c in completions]
    correct = [answers_equal(a, reference) for a in answers]
    return {
        "accuracy": sum(correct) / len(correct),
        "pass": pass_at_k(len(correct), sum(correct), k),
        "maj": float(answers_equal(majority_answer(answers), reference)),
        "answers": answers,
        "correct": correct,
    }


def evaluate_rows(
    model: Any,
    tok: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    system_prompt: str | None = None,
    samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float | None = None,
    batch_size: int = 64,
    max_prompt_tokens: int = 2048,
) -> dict[str, Any]:
    """Generate `samples` completions per row and score them with math answer equivalence.

    temperature None means greedy for one sample and 1.0 for several.
    """
    if temperature is None:
        temperature = 0.0 if samples == 1 else 1.0
    examples, _ = encode_prompts(rows, tok, prompt_field, system_prompt, max_prompt_tokens, "truncate")
    generator = HFGenerator(model, tok, batch_size)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    gens = generator.generate([ex.ids for ex in examples], params, samples)
    texts = tok.batch_decode(gens.response_ids, skip_special_tokens=True)
    per_row, lengths = [], [len(r) for r in gens.response_ids]
    for i, row in enumerate(rows):
        comps = texts[i * samples : (i + 1) * samples]
        scored = score_row(comps, row[answer_field], samples)
        per_row.append(
            {"prompt": row[prompt_field], "answer": row[answer_field], "completions": comps, **scored}
        )
    n = len(per_row)
    return {
        "accuracy": sum(r["accuracy"] for r in per_row) / n,
        "pass@k": sum(r["pass"] for r in per_row) / n,
        "maj@k": sum(r["maj"] for r in per_row) / n,
        "k": samples,
        "mean_response_tokens": sum(lengths) / max(len(lengths), 1),
        "n": n,
        "rows": per_row,
    }


SUMMARY_KEYS = ("accuracy", "pass@k", "maj@k", "n", "k", "mean_response_tokens")


def write_eval_results(res: Mapping[str, Any], json_path: str | None, rows_path: str | None) -> None:
    """Summary as JSON (the CLI contract's keys) and per-row results as JSONL."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump({k: res[k] for k in SUMMARY_KEYS}, f, indent=1)
    if rows_path:
        with open(rows_path, "w") as f:
            for r in res["rows"]:
                f.write(json.dumps(r) + "\n")
