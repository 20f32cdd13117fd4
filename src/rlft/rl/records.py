"""What an RL step logs besides losses: rollout statistics, text diagnostics, timings, model FLOPs
and MFU, and the sample records of samples.jsonl (each group's best and worst first)."""

from __future__ import annotations

import logging
from typing import Any

from rlft.algorithms.core import flat_groups
from rlft.batch import ScoredBatch
from rlft.config.rl import DiagnosticsConfig, RLConfig
from rlft.rewards.answers import ANSWER_ALIAS
from rlft.telemetry.diagnostics import percentile, text_diagnostics
from rlft.telemetry.perf import Laps, mfu, step_flops

log = logging.getLogger(__name__)


def rollout_metrics(batch: ScoredBatch, diag: DiagnosticsConfig | None = None) -> dict[str, float]:
    """Length, truncation, flat groups and reward range of the batch, plus the text diagnostics."""
    diag = diag or DiagnosticsConfig()
    r = batch.rollouts
    lengths = r.response_mask.sum(-1).float()
    flat = flat_groups(batch.scores, r.group_ids)[0]
    responses = r.input_ids[:, r.prompt_len :]
    response_ids = [row[m].tolist() for row, m in zip(responses, r.response_mask, strict=True)]
    return {
        "rollout/response_len": float(lengths.mean()),
        "rollout/response_len_p90": percentile(lengths.tolist(), 0.9),
        "rollout/response_len_max": float(lengths.max()),
        "rollout/truncated_frac": float(r.truncated.float().mean()),
        "rollout/zero_std_groups_frac": float(flat.sum()) / max(len(flat), 1),
        "reward/max": float(batch.scores.max()),
        "reward/min": float(batch.scores.min()),
        **text_diagnostics(
            r.completions, response_ids, diag.reflection_phrases, diag.think_tag, diag.repeat_ngram
        ),
    }


def sample_records(batch: ScoredBatch, n: int) -> list[dict[str, Any]]:
    """n samples, prompt by prompt: the best and the worst completion of each group (first on
    ties; `tag` says which), then the other completions in batch order. `group` is the prompt's
    index within the step."""
    r, scores = batch.rollouts, batch.scores.tolist()
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(r.group_ids.tolist()):
        groups.setdefault(g, []).append(i)
    group_of = {i: k for k, members in enumerate(groups.values()) for i in members}
    tags: dict[int, str] = {}
    for members in groups.values():
        best = max(members, key=lambda i: scores[i])
        tags[best] = "best"
        others = [i for i in members if i != best]
        if others:
            tags[min(others, key=lambda i: scores[i])] = "worst"
    order = [*tags, *(i for i in range(r.size) if i not in tags)][:n]
    return [
        {
            "prompt": r.prompts[i],
            "completion": r.completions[i],
            "score": scores[i],
            "answer": r.examples[i].get("answer", r.examples[i].get(ANSWER_ALIAS)),
            "group": group_of[i],
            "tag": tags.get(i, ""),
        }
        for i in order
    ]


def step_metrics(batch: ScoredBatch, cfg: RLConfig, lap: Laps) -> dict[str, float]:
    """The step's rollout diagnostics and timings."""
    out = {**rollout_metrics(batch, cfg.diagnostics), **lap.times}
    out["perf/step_s"] = sum(lap.times.values())
    out["perf/generate_and_reward_s"] = lap.times["perf/generate_s"] + lap.times["perf/reward_s"]
    gen_tokens = float(batch.rollouts.response_mask.sum())
    out["perf/gen_tokens_per_s"] = gen_tokens / max(lap.times["perf/generate_s"], 1e-9)
    return out


def rollout_flops(model: Any, rollouts: Any, no_grad_passes: int, trained_passes: float) -> float:
    """`step_flops` of a batch: a pass processes each distinct prompt once (shared across its G
    samples) and every response token; `trained_passes` = passes with gradient (epochs x share
    of rows that had a gradient)."""
    n_params = sum(p.numel() for p in model.parameters())
    response = float(rollouts.response_mask.sum())
    prompt = float(rollouts.attention_mask.sum()) - response
    groups = int(rollouts.group_ids.max()) + 1 if rollouts.size else 0
    pass_tokens = prompt * groups / max(rollouts.size, 1) + response
    return step_flops(n_params, pass_tokens, no_grad_passes, pass_tokens * trained_passes)


def log_throughput(metrics: dict[str, float], peak_flops: float, step: int) -> None:
    """perf/mfu (given the peak) and a one-line throughput summary (INFO with a peak, else DEBUG)."""
    if peak_flops > 0:
        metrics["perf/mfu"] = mfu(metrics["perf/model_flops"], metrics["perf/step_s"], peak_flops)
    log.log(
        logging.INFO if peak_flops > 0 else logging.DEBUG,
        "step %d: %.1f gen tokens/s, step %.2f s, MFU %s",
        step,
        metrics["perf/gen_tokens_per_s"],
        metrics["perf/step_s"],
        f"{metrics['perf/mfu']:.2%}" if "perf/mfu" in metrics else "n/a (no peak)",
    )
