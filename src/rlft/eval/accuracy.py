"""Held-out evaluation: accuracy, pass@k and maj@k of K samples per prompt (greedy when K=1), scored
by math answer matching, or by reward functions (rlft.eval.rewarded) when terms are given."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rlft.data.prompts import PromptFormatLike, encode_prompts
from rlft.errors import DataError
from rlft.eval.rewarded import RewardScores, reward_scores, reward_summary, rewarded_row
from rlft.rewards import answers
from rlft.rewards.answers import answers_equal, extract_answer, to_number
from rlft.rewards.scoring import RewardTerm
from rlft.rollout.base import Generations, SamplingParams
from rlft.rollout.hf import HFGenerator


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, eq. 1):
    1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n correct samples (c={c}, n={n})")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n samples (k={k}, n={n})")
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


def score_row(
    completions: Sequence[str], reference: Any, k: int, k_values: Sequence[int] = ()
) -> dict[str, Any]:
    """One prompt's K completions: accuracy, pass@k ("pass"), maj@k ("maj") and pass@j for each j
    in k_values (all from the same samples)."""
    answers = [extract_answer(c) for c in completions]
    correct = [answers_equal(a, reference) for a in answers]
    return {
        **pass_scores(correct, k, k_values),
        "maj": float(answers_equal(majority_answer(answers), reference)),
        "answers": answers,
        "correct": correct,
    }


def pass_scores(correct: Sequence[bool], k: int, k_values: Sequence[int] = ()) -> dict[str, float]:
    """A prompt's accuracy (share of its samples correct), pass@k ("pass") and each pass@j."""
    n, c = len(correct), sum(correct)
    return {
        "accuracy": c / n,
        "pass": pass_at_k(n, c, k),
        **{f"pass@{j}": pass_at_k(n, c, j) for j in k_values},
    }


def reference_answer(row: Mapping[str, Any], answer_field: str) -> Any:
    """The row's reference answer as the answer rewards read it (rlft.rewards.answers: the field,
    else `solution`, a worked solution reduced to its final answer); a DataError naming the row
    when it has none."""
    try:
        return answers.reference_answer(row, answer_field)
    except KeyError:
        alias = f" (or '{answers.ANSWER_ALIAS}')" if answer_field == answers.DEFAULT_ANSWER_FIELD else ""
        raise DataError(
            f"{row.get('_source', 'a row')}: missing field '{answer_field}'{alias} to match answers "
            "against; score with reward functions instead (rlft eval --reward, eval.reward)"
        ) from None


def check_references(rows: Sequence[Mapping[str, Any]], answer_field: str) -> None:
    """DataError naming the first row with no reference answer (before any model loads)."""
    for row in rows:
        reference_answer(row, answer_field)


def check_k_values(k_values: Sequence[int], samples: int) -> list[int]:
    """Sorted distinct k values; each must lie in 1..samples (pass@k needs k of the K samples)."""
    bad = [k for k in k_values if not 1 <= k <= samples]
    if bad:
        raise ValueError(f"k values {bad} must lie between 1 and the samples per prompt ({samples})")
    return sorted(set(k_values))


def generate_batched(
    model: Any,
    tok: Any,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    samples: int,
    batch_size: int,
    progress: bool = False,
) -> Generations:
    """K completions per prompt, `batch_size` sequences per generate call, with a progress bar
    over the calls (stderr; only on a terminal)."""
    from tqdm.auto import tqdm

    generator = HFGenerator(model, tok, batch_size)
    per_call = max(1, batch_size // samples)
    starts = range(0, len(prompt_ids), per_call)
    responses: list[list[int]] = []
    finished: list[bool] = []
    for start in tqdm(starts, desc="eval", unit="batch", disable=None if progress else True):
        gens = generator.generate(prompt_ids[start : start + per_call], params, samples)
        responses.extend(gens.response_ids)
        finished.extend(gens.finished)
    return Generations(response_ids=responses, finished=finished)


def evaluate_rows(
    model: Any,
    tok: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    system_prompt: PromptFormatLike = None,
    samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float | None = None,
    batch_size: int = 64,
    max_prompt_tokens: int = 2048,
    k_values: Sequence[int] = (),
    progress: bool = False,
    terms: Sequence[RewardTerm] | None = None,
    pass_threshold: float = 1.0,
    group_by: str = "",
) -> dict[str, Any]:
    """Generate `samples` completions per row and score them: with math answer equivalence, or,
    given reward `terms`, with those rewards (a completion is correct when its weighted total is
    >= pass_threshold; rlft.eval.rewarded).

    temperature None means greedy for one sample and 1.0 for several. The summary holds accuracy,
    pass@k and maj@k for k = samples (maj@k None under reward scoring), pass@j for each j in
    k_values, mean response tokens, the truncated fraction, n, "scoring", the reward keys under
    reward scoring, "accuracy/<group_by>=<value>" for each value of the rows' `group_by` field
    (when given), and "rows" (one record per row).
    """
    if not rows:
        raise ValueError("no rows to evaluate")
    if samples < 1:
        raise ValueError(f"samples per prompt must be >= 1, got {samples}")
    k_values = check_k_values(k_values, samples)
    if not terms:
        check_references(rows, answer_field)  # before any generation
    if temperature is None:
        temperature = 0.0 if samples == 1 else 1.0
    examples, _ = encode_prompts(rows, tok, prompt_field, system_prompt, max_prompt_tokens, "truncate")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    gens = generate_batched(model, tok, [ex.ids for ex in examples], params, samples, batch_size, progress)
    texts = tok.batch_decode(gens.response_ids, skip_special_tokens=True)
    prompts = [ex.text for ex in examples]
    per_row, extra = score_rows(
        rows,
        prompts,
        texts,
        samples,
        prompt_field=prompt_field,
        answer_field=answer_field,
        k_values=k_values,
        terms=terms,
        pass_threshold=pass_threshold,
        completion_ids=gens.response_ids,
    )
    return {
        **summarize(per_row, gens, samples, k_values),
        **extra,
        **group_accuracies(rows, per_row, group_by),
    }


def group_accuracies(
    rows: Sequence[Mapping[str, Any]], per_row: Sequence[Mapping[str, Any]], field: str
) -> dict[str, float]:
    """{"accuracy/<field>=<value>": mean accuracy of the rows with that value} over the values of
    `field` in `rows` (rows without it are left out; sorted by value). {} when field is empty."""
    groups: dict[str, list[float]] = {}
    for row, record in zip(rows, per_row, strict=True):
        if field and row.get(field) is not None:
            groups.setdefault(str(row[field]), []).append(record["accuracy"])
    return {f"accuracy/{field}={v}": sum(a) / len(a) for v, a in sorted(groups.items())}


def score_rows(
    rows: Sequence[Mapping[str, Any]],
    prompts: Sequence[str],
    completions: Sequence[str],
    samples: int,
    *,
    prompt_field: str = "prompt",
    answer_field: str = "answer",
    k_values: Sequence[int] = (),
    terms: Sequence[RewardTerm] | None = None,
    pass_threshold: float = 1.0,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-row records of `samples` completions per row (row-major), and the summary keys the
    scoring adds: by answer matching without `terms`, else by the reward terms. `prompts` are the
    rows' prompts after the chat template, one per row."""
    if terms:
        repeat = [i for i in range(len(rows)) for _ in range(samples)]
        scores: RewardScores = reward_scores(
            terms,
            [prompts[i] for i in repeat],
            completions,
            [rows[i] for i in repeat],
            completion_ids,
            pass_threshold,
        )
    per_row = []
    for i, row in enumerate(rows):
        comps = list(completions[i * samples : (i + 1) * samples])
        record: dict[str, Any] = {"prompt": row[prompt_field]}
        if terms:
            rewarded = rewarded_row(scores, i * samples, samples)
            scored = {**pass_scores(rewarded["correct"], samples, k_values), **rewarded}
            if answer_field in row:
                record["answer"] = row[answer_field]
        else:
            record["answer"] = reference_answer(row, answer_field)
            scored = score_row(comps, record["answer"], samples, k_values)
        per_row.append({**record, "completions": comps, **scored})
    if terms:
        return per_row, {"maj@k": None, **reward_summary(scores, terms, pass_threshold)}
    return per_row, {"scoring": "answer"}


def summarize(
    per_row: Sequence[Mapping[str, Any]], gens: Generations, samples: int, k_values: Sequence[int]
) -> dict[str, Any]:
    """Means over rows of the per-row scores, plus generation length statistics (maj@k None when
    the rows have no majority vote: reward scoring)."""
    n = len(per_row)

    def mean_of(key: str) -> float:
        return sum(r[key] for r in per_row) / n

    lengths = [len(r) for r in gens.response_ids]
    return {
        "accuracy": mean_of("accuracy"),
        "pass@k": mean_of("pass"),
        **{f"pass@{j}": mean_of(f"pass@{j}") for j in k_values},
        "maj@k": mean_of("maj") if all("maj" in r for r in per_row) else None,
        "k": samples,
        "mean_response_tokens": sum(lengths) / len(lengths),
        "truncated_frac": sum(not f for f in gens.finished) / len(gens.finished),
        "n": n,
        "rows": list(per_row),
    }


SUMMARY_KEYS = ("accuracy", "pass@k", "maj@k", "n", "k", "mean_response_tokens", "truncated_frac")
REWARD_KEYS = ("scoring", "pass_threshold", "reward")  # then every reward/<name>, reward/<name>_failures


def eval_summary(res: Mapping[str, Any]) -> dict[str, Any]:
    """The summary without per-row records: SUMMARY_KEYS plus every pass@j, `scoring`, and under
    reward scoring `pass_threshold`, `reward` and every `reward/...` (the keys `rlft eval --json`
    promises; docs/development.md, "The CLI contract")."""
    extra = sorted((k for k in res if k.startswith("pass@") and k != "pass@k"), key=_k_of)
    rewards = sorted(k for k in res if k.startswith("reward/"))
    groups = sorted(k for k in res if k.startswith("accuracy/"))
    return {k: res[k] for k in (*SUMMARY_KEYS, *extra, *REWARD_KEYS, *rewards, *groups) if k in res}


def _k_of(key: str) -> int:
    return int(key.split("@", 1)[1])


def write_eval_rows(res: Mapping[str, Any], rows_path: str) -> None:
    """Per-row results as JSONL: prompt, answer, completions, answers, correct, scores."""
    with open(rows_path, "w") as f:
        for r in res["rows"]:
            f.write(json.dumps(r) + "\n")


def write_eval_results(res: Mapping[str, Any], json_path: str | None, rows_path: str | None) -> None:
    """Summary as JSON (`eval_summary`'s keys) and per-row results as JSONL."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(eval_summary(res), f, indent=1)
    if rows_path:
        write_eval_rows(res, rows_path)
