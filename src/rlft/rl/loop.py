"""The RL loop: `train_rl` sets up, then runs `rl_step`, the eight stages of a step (docs/design.md)."""

from __future__ import annotations

import dataclasses
import logging
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlft.accel.onednn import onednn_for
from rlft.algorithms import GRADIENT, TRUST_REGION, Algorithm, UpdateRule
from rlft.algorithms.core import KL_ESTIMATORS
from rlft.algorithms.kl_control import AdaptiveKLController
from rlft.algorithms.registry import AdvantageInputs
from rlft.batch import ScoredBatch
from rlft.config.loader import to_dict
from rlft.config.rl import AlgoConfig, RLConfig
from rlft.dist.ranks import global_mean, rank_log_dir, reduce_metrics, world_size
from rlft.models.critic import rollout_values
from rlft.models.hub import publish_final
from rlft.models.load import model_device
from rlft.models.save import save_final
from rlft.ops import masked_mean, masked_sum
from rlft.rewards.scoring import RewardTerm
from rlft.rl.collect import collect_rollouts
from rlft.rl.eval import PeriodicEval, evaluate_heldout
from rlft.rl.heldout import given_heldout_rows
from rlft.rl.inputs import UserObjects, callback_hooks, run_callbacks
from rlft.rl.records import log_throughput, rollout_flops, sample_records, step_metrics
from rlft.rl.setup import RunParts, batch_arithmetic, setup_run, update_plan
from rlft.rl.state import RLState, load_rl_checkpoint, previous_evaluation, save_rl_checkpoint
from rlft.rl.trpo import trpo_update
from rlft.rl.update import UpdatePlan, update_policy
from rlft.rollout.base import Generator
from rlft.runtime.guard import NonFiniteGuard
from rlft.runtime.shell import resume_step, run_steps, write_summary
from rlft.telemetry.alarms import AlarmWatch, alarm_record
from rlft.telemetry.metrics import RunLogger, read_jsonl_records
from rlft.telemetry.perf import Laps, PhaseTimer

log = logging.getLogger(__name__)


def rl_step(
    cfg: RLConfig,
    parts: RunParts,
    generator: Generator,
    algo: Algorithm,
    terms: list[RewardTerm],
    state: RLState,
    plan: UpdatePlan,
) -> tuple[dict[str, float], ScoredBatch]:
    """One RL step, its eight stages in order (docs/design.md)."""
    lap = Laps()
    p = dataclasses.replace(cfg.algo, kl_coef=state.kl.value)
    # 1-3. prompts, G completions each, rewards (dynamic sampling refills flat groups)
    rollouts, scores, metrics = collect_rollouts(
        cfg, parts, generator, terms, state.stream, p.dynamic_sampling
    )
    device = model_device(parts.model)  # every later phase runs where the model lives
    batch = ScoredBatch(rollouts=rollouts.to(device), scores=scores.to(device))
    lap("generate")
    lap.split("generate", "reward", metrics.pop("perf/reward_s"))
    # 4. no-grad passes: the sampling policy (when the record needs it), reference, values
    batch, passes = no_grad_passes(cfg, parts, algo, p, batch, plan, lap)
    # 5. advantages (the algorithm record)
    batch = with_advantages(algo, p, batch, metrics)
    # 6. update (the record's update rule)
    metrics.update(UPDATES[algo.update](parts, algo, batch, p, plan, state.guard))
    metrics["optim/lr"] = parts.scheduler.get_last_lr()[0]
    parts.scheduler.step()
    lap("update")
    if "perf/optimizer_s" in metrics:
        lap.split("update", "optimizer", metrics.pop("perf/optimizer_s"))
    # 7. sync weights to the generator (no-op for the HF backend, which shares the module)
    generator.sync_weights(parts.model)
    lap("sync")
    # 8. metrics (logging, checkpoints and evaluation follow in train_rl)
    if "policy/kl_ref_seq" in metrics:
        kl_seq, n_seqs = global_mean(metrics["policy/kl_ref_seq"]), batch.rollouts.size * world_size()
        metrics["policy/kl_coef"] = state.kl.update(kl_seq, n_seqs)  # the same on every rank
    trained = p.epochs * metrics.get("perf/active_rows_frac", 1.0)  # passes with gradient
    metrics.update(step_metrics(batch, cfg, lap))
    metrics["perf/model_flops"] = rollout_flops(parts.model, batch.rollouts, passes, trained)
    return metrics, batch


def no_grad_passes(
    cfg: RLConfig,
    parts: RunParts,
    algo: Algorithm,
    p: AlgoConfig,
    batch: ScoredBatch,
    plan: UpdatePlan,
    lap: Laps,
) -> tuple[ScoredBatch, int]:
    """Step 4: the sampling policy's logprobs when the algorithm needs them (else the update takes
    its first pass's own), the reference's when there is a KL term, the critic's values. Returns
    the batch with them and the number of no-grad forward passes of the policy's size."""
    rollouts, ref = batch.rollouts, parts.ref_model is not None
    steps = batch_arithmetic(cfg)["optimizer_steps_per_rl_step"]
    old = algo.needs_old_logprobs(p, steps, ref)
    if old:
        batch = batch.with_(old_logprobs=plan.rollout_logprobs(parts.model, rollouts))
    lap("old_logprobs")
    if ref:
        batch = batch.with_(ref_logprobs=plan.rollout_logprobs(parts.ref_model, rollouts))
    lap("ref_logprobs")
    if parts.critic is not None:
        batch = batch.with_(extras={"values": rollout_values(parts.critic, rollouts, plan.microbatch_size)})
    lap("values")
    return batch, 1 + old + ref


def with_advantages(
    algo: Algorithm, p: AlgoConfig, batch: ScoredBatch, metrics: dict[str, float]
) -> ScoredBatch:
    """Step 5: the KL to the reference per token (when both logprobs are there), then the record's
    advantages (and value targets), and the loss mask of rows filtered out (e.g. truncated)."""
    r, values = batch.rollouts, batch.extras.get("values")
    kl = None
    if batch.ref_logprobs is not None and batch.old_logprobs is not None:
        kl = KL_ESTIMATORS[p.kl_estimator](batch.old_logprobs, batch.ref_logprobs)
        metrics["policy/kl_ref_seq"] = float(masked_sum(kl, r.response_mask) / r.size)
        metrics["policy/kl"] = float(masked_mean(kl, r.response_mask))  # a KL loss term overrides
    inputs = AdvantageInputs(batch.scores, r.group_ids, r.response_mask, kl, values)
    advantages, returns = algo.advantage_fn(inputs, p)
    extras = {} if values is None else {"values": values, "returns": returns}
    if p.mask_truncated:
        extras["loss_mask"] = r.response_mask & ~r.truncated[:, None]
    return batch.with_(advantages=advantages, extras=extras)


def _gradient_update(
    parts: RunParts,
    algo: Algorithm,
    batch: ScoredBatch,
    p: AlgoConfig,
    plan: UpdatePlan,
    guard: NonFiniteGuard,
) -> dict[str, float]:
    return update_policy(parts.model, parts.optimizer, algo, batch, p, plan, guard, parts.critic)


def _trust_region_update(
    parts: RunParts,
    algo: Algorithm,
    batch: ScoredBatch,
    p: AlgoConfig,
    plan: UpdatePlan,
    guard: NonFiniteGuard,
) -> dict[str, float]:
    return trpo_update(parts.model, algo, batch, p, plan, guard)


# what runs each update rule of the algorithm records (rlft.algorithms.registry.UpdateRule)
UPDATES: dict[UpdateRule, Callable[..., dict[str, float]]] = {
    GRADIENT: _gradient_update,
    TRUST_REGION: _trust_region_update,
}


def train_rl(
    config: RLConfig, reward_fns: Any = None, peak_flops: float = 0.0, given: UserObjects | None = None
) -> dict[str, Any]:
    """Run RL as configured. Returns {"metrics": last step's metrics, "eval": {"before", "after"},
    "final_dir", "steps", "phase_seconds"}; also written to output_dir/summary.json. With the
    machine's `peak_flops` (FLOP/s, `rlft bench` measures it) each step logs perf/mfu. `given`:
    objects the Python API hands over (a loaded model, datasets, callbacks: rlft.rl.inputs)."""
    timer = PhaseTimer()
    given = given or UserObjects()
    hooks = callback_hooks(given.callbacks)
    with timer("setup"):
        config, parts, generator, algo, terms, stream = setup_run(config, reward_fns, given)
        plan = update_plan(config)
        eval_rows = given_heldout_rows(config, given.eval_dataset, given.train_dataset)  # API datasets
    out_dir, a = Path(config.output_dir), config.algo
    guard = NonFiniteGuard(config.train.max_nonfinite_steps)
    state = RLState(0, stream, guard, AdaptiveKLController(a.kl_coef, a.target_kl, a.kl_horizon))
    ckpt_root = out_dir / "checkpoints"
    start = resume_step(config.resume, ckpt_root, lambda ckpt: load_rl_checkpoint(config, parts, state, ckpt))
    results: dict[str, Any] = {"eval": previous_evaluation(out_dir) if start else {}}
    if start == 0 and config.eval.before:
        with timer("eval_before"):
            results["eval"]["before"] = evaluate_heldout(
                config, parts, out_dir, "before", rows=eval_rows, terms=terms
            )
    periodic_eval = PeriodicEval(config, rows=eval_rows, terms=terms)
    log_dir, log_config = rank_log_dir(out_dir, config.log)  # rank 0: out_dir; others: ranks/rank-N
    logger = RunLogger.for_config(log_dir, log_config, config.train.steps, start, "rl", to_dict(config))
    # alarms hook (rlft.telemetry.alarms): history in memory; a resumed run rebuilds it from metrics.jsonl
    watch = (
        AlarmWatch(config.alarms, read_jsonl_records(logger.metrics_path)) if config.alarms.enabled else None
    )
    models, last_batch = (parts.model, parts.ref_model, parts.critic), None

    def one_step(step: int) -> dict[str, float]:
        nonlocal last_batch
        with timer("train"), onednn_for(config, *models):
            metrics, batch = rl_step(config, parts, generator, algo, terms, state, plan)
        state.step, last_batch = step, batch
        log_throughput(metrics, peak_flops, step)
        if periodic_eval.due(step):  # eval/* at this step; training RNG untouched
            with timer("eval_periodic"):
                metrics.update(periodic_eval(parts.model, parts.tok, step))
        return reduce_metrics(metrics)  # over ranks: rank 0 logs global values

    def after_log(step: int, metrics: dict[str, float]) -> bool:
        for firing in watch.observe({"step": step, **metrics}) if watch else []:  # alarms hook
            logger.log_alarm(alarm_record(step, firing))
        logger.log_samples(step, sample_records(last_batch, config.log.samples_per_step))
        return run_callbacks(hooks, step, metrics)  # True: a callback ends the run here

    def save(step: int) -> None:
        with timer("checkpoint"):
            save_rl_checkpoint(config, parts, state, ckpt_root)

    hint = f"rlft rl --config <config> --resume output_dir={out_dir}"
    done = run_steps(
        start, config.train.steps, config.train.save_every, logger, one_step, save, after_log, hint
    )
    if done.stopped:
        return {**results, "metrics": done.metrics, "steps": done.step, "stopped": True}
    with timer("save_final"):
        # LoRA: merged, or the adapter alone (save.merge_lora=false)
        final, parts.model = save_final(parts.model, parts.tok, out_dir, config.save.merge_lora)
        results["final_dir"] = str(final)
    if config.eval.after:
        with timer("eval_after"):
            results["eval"]["after"] = evaluate_heldout(
                config, parts, out_dir, "after", results["final_dir"], rows=eval_rows, terms=terms
            )
    if hub_url := publish_final(config, final, results["eval"]):  # model card (needs the eval), hub push
        results["hub_url"] = hub_url
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.update(metrics=done.metrics, steps=done.step, phase_seconds=timer.seconds, peak_rss_mib=peak_mib)
    if done.ended_early:
        results["ended_early"] = True
    write_summary(out_dir, results)
    return results
