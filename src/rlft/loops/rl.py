"""The RL loop: `train_rl` sets up, then runs `rl_step` (DESIGN.md "The RL step, in order")."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.algorithms import Algorithm
from rlft.batch import ScoredBatch
from rlft.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlft.data.prompts import PromptStream
from rlft.forward import rollout_logprobs
from rlft.loops.rl_setup import RunParts, batch_arithmetic, evaluate_heldout, save_final, setup_run
from rlft.loops.rl_update import NonFiniteGuard, update_policy
from rlft.metrics import RunLogger
from rlft.rewards.scoring import RewardTerm, score_completions
from rlft.rollout.assemble import sample_rollouts
from rlft.rollout.base import Generator, SamplingParams
from rlft.schema.rl import RLConfig

log = logging.getLogger(__name__)


@dataclass
class RLState:
    step: int
    stream: PromptStream
    guard: NonFiniteGuard

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "stream": self.stream.state_dict(), "guard": self.guard.state_dict()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.step = int(s["step"])
        self.stream.load_state_dict(s["stream"])
        self.guard.load_state_dict(s["guard"])


def rl_step(
    cfg: RLConfig,
    parts: RunParts,
    generator: Generator,
    algo: Algorithm,
    terms: list[RewardTerm],
    state: RLState,
) -> tuple[dict[str, float], ScoredBatch]:
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[f"perf/{name}_s"] = now - clock
        clock = now

    # 1. next prompts   2. generate G completions per prompt
    examples = state.stream.take(cfg.rollout.prompts_per_step)
    r = cfg.rollout
    params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k)
    rollouts = sample_rollouts(generator, examples, r.samples_per_prompt, params, parts.tok)
    lap("generate")
    # 3. score
    scores, metrics = score_completions(terms, rollouts.prompts, rollouts.completions, rollouts.examples)
    batch = ScoredBatch(rollouts=rollouts, scores=scores)
    lap("reward")
    # 4. logprobs under no_grad: old policy (only if the policy moves before the last pass), reference
    ba = batch_arithmetic(cfg)
    mb_size = cfg.train.microbatch_size
    share = cfg.train.share_prompt_forward
    if ba["optimizer_steps_per_rl_step"] > 1:
        batch = batch.with_(old_logprobs=rollout_logprobs(parts.model, rollouts, mb_size, share))
    lap("old_logprobs")
    if parts.ref_model is not None:
        batch = batch.with_(ref_logprobs=rollout_logprobs(parts.ref_model, rollouts, mb_size, share))
    lap("ref_logprobs")
    # 5. advantages
    batch = batch.with_(
        advantages=algo.advantage_fn(scores, rollouts.group_ids, rollouts.response_mask, cfg.algo)
    )
    # 6. update
    o = cfg.train.optim
    metrics.update(
        update_policy(
            parts.model,
            parts.optimizer,
            algo,
            batch,
            cfg.algo,
            ba["minibatch_size"],
            mb_size,
            o.max_grad_norm,
            state.guard,
            r.max_new_tokens,
            share,
        )
    )
    metrics["optim/lr"] = parts.scheduler.get_last_lr()[0]
    parts.scheduler.step()
    lap("update")
    # 7. sync weights to the generator (no-op for the HF backend, which shares the module)
    generator.sync_weights(parts.model)
    metrics.update(rollout_metrics(batch))
    metrics.update(times)
    step_s = sum(times.values())
    gen_tokens = float(rollouts.response_mask.sum())
    metrics.update(
        {"perf/step_s": step_s, "perf/gen_tokens_per_s": gen_tokens / max(times["perf/generate_s"], 1e-9)}
    )
    return metrics, batch


def rollout_metrics(batch: ScoredBatch) -> dict[str, float]:
    r = batch.rollouts
    lengths = r.response_mask.sum(-1).float()
    groups = r.group_ids.unique()
    flat = sum(float(batch.scores[r.group_ids == g].std(unbiased=False)) == 0.0 for g in groups)
    return {
        "rollout/response_len": float(lengths.mean()),
        "rollout/response_len_max": float(lengths.max()),
        "rollout/truncated_frac": float(r.truncated.float().mean()),
        "rollout/zero_std_groups_frac": flat / max(len(groups), 1),
        "reward/max": float(batch.scores.max()),
        "reward/min": float(batch.scores.min()),
    }


def sample_records(batch: ScoredBatch, n: int) -> list[dict[str, Any]]:
    """The first sample of each of the first n prompts."""
    r = batch.rollouts
    firsts = [i for i in range(r.size) if i == 0 or r.group_ids[i] != r.group_ids[i - 1]]
    return [
        {
            "prompt": r.prompts[i],
            "completion": r.completions[i],
            "score": float(batch.scores[i]),
            "answer": r.examples[i].get("answer"),
        }
        for i in firsts[:n]
    ]


class PhaseTimer:
    """Wall seconds per named phase, summed over repeats."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def train_rl(config: RLConfig, reward_fns: Any = None) -> dict[str, Any]:
    """Run RL as configured. Returns {"metrics": last step's metrics, "eval": {"before", "after"},
    "final_dir", "steps", "phase_seconds"}; also written to output_dir/summary.json."""
    timer = PhaseTimer()
    with timer("setup"):
        parts, generator, algo, terms, stream = setup_run(config, reward_fns)
    out_dir = Path(config.output_dir)
    state = RLState(step=0, stream=stream, guard=NonFiniteGuard(config.train.max_nonfinite_steps))
    ckpt_root = out_dir / "checkpoints"
    results: dict[str, Any] = {"eval": {}}
    if config.resume and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        state.load_state_dict(load_checkpoint(ckpt, parts.model, parts.optimizer, parts.scheduler))
        log.info("resumed from %s (step %d)", ckpt, state.step)
        results["eval"] = _previous_summary(out_dir).get("eval", {})
    elif config.resume:
        log.info("resume requested but no complete checkpoint in %s; starting fresh", ckpt_root)
    if state.step == 0 and config.eval.before:
        with timer("eval_before"):
            results["eval"]["before"] = evaluate_heldout(config, parts, out_dir, "before")
    logger = RunLogger(out_dir, config.train.steps, state.step, config.log.tensorboard, config.log.progress)
    metrics: dict[str, float] = {}
    try:
        while state.step < config.train.steps:
            with timer("train"):
                metrics, batch = rl_step(config, parts, generator, algo, terms, state)
            state.step += 1
            logger.log_metrics(state.step, metrics)
            logger.log_samples(state.step, sample_records(batch, config.log.samples_per_step))
            every = config.train.save_every
            if (every and state.step % every == 0) or state.step == config.train.steps:
                with timer("checkpoint"):
                    save_checkpoint(
                        ckpt_root,
                        state.step,
                        parts.model,
                        parts.optimizer,
                        parts.scheduler,
                        state.state_dict(),
                        config.train.keep_checkpoints,
                    )
    finally:
        logger.close()
    with timer("save_final"):
        results["final_dir"] = str(save_final(parts, out_dir))
    if config.eval.after:
        with timer("eval_after"):
            results["eval"]["after"] = evaluate_heldout(config, parts, out_dir, "after", results["final_dir"])
    results.update(metrics=metrics, steps=state.step, phase_seconds=timer.seconds)
    (out_dir / "summary.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def _previous_summary(out_dir: Path) -> dict[str, Any]:
    """Evaluation results of an earlier (interrupted) attempt of this run, for the final report."""
    before = out_dir / "eval_before.json"
    if before.exists():
        return {"eval": {"before": json.loads(before.read_text())}}
    return {}
