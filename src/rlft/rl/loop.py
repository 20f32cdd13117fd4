"""The RL loop: `train_rl` sets up, then runs `rl_step`, the eight stages of a step (docs/design.md)."""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
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
from rlft.data.prompts import PromptStream
from rlft.dist.checkpoint import load_checkpoint, save_checkpoint  # one or several processes
from rlft.dist.ranks import any_rank, global_mean, is_main, rank_log_dir, reduce_metrics, world_size
from rlft.models.critic import rollout_values
from rlft.models.load import model_device
from rlft.models.save import save_final
from rlft.ops import masked_mean, masked_sum
from rlft.rewards.scoring import RewardTerm
from rlft.rl.collect import collect_rollouts
from rlft.rl.eval import PeriodicEval, evaluate_heldout
from rlft.rl.records import rollout_metrics, sample_records
from rlft.rl.setup import RunParts, batch_arithmetic, setup_run, update_plan
from rlft.rl.trpo import trpo_update
from rlft.rl.update import UpdatePlan, update_policy
from rlft.rollout.base import Generator
from rlft.runtime.checkpoint import latest_checkpoint
from rlft.runtime.guard import NonFiniteGuard
from rlft.runtime.signals import GracefulStop
from rlft.telemetry.alarms import AlarmWatch, alarm_record
from rlft.telemetry.metrics import RunLogger, read_jsonl_records
from rlft.telemetry.perf import Laps, PhaseTimer, mfu, step_flops

log = logging.getLogger(__name__)


@dataclass
class RLState:
    step: int
    stream: PromptStream
    guard: NonFiniteGuard
    kl: AdaptiveKLController

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "stream": self.stream.state_dict(),
            "guard": self.guard.state_dict(),
            "kl": self.kl.state_dict(),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.step = int(s["step"])
        self.stream.load_state_dict(s["stream"])
        self.guard.load_state_dict(s["guard"])
        self.kl.load_state_dict(s["kl"])


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


def train_rl(config: RLConfig, reward_fns: Any = None, peak_flops: float = 0.0) -> dict[str, Any]:
    """Run RL as configured. Returns {"metrics": last step's metrics, "eval": {"before", "after"},
    "final_dir", "steps", "phase_seconds"}; also written to output_dir/summary.json. With the
    machine's `peak_flops` (FLOP/s, `rlft bench` measures it) each step logs perf/mfu."""
    timer = PhaseTimer()
    with timer("setup"):
        config, parts, generator, algo, terms, stream = setup_run(config, reward_fns)
        plan = update_plan(config)
    out_dir = Path(config.output_dir)
    a = config.algo
    state = RLState(
        step=0,
        stream=stream,
        guard=NonFiniteGuard(config.train.max_nonfinite_steps),
        kl=AdaptiveKLController(a.kl_coef, a.target_kl, a.kl_horizon),
    )
    ckpt_root = out_dir / "checkpoints"
    results: dict[str, Any] = {"eval": {}}
    if config.resume and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        state.load_state_dict(
            load_checkpoint(
                ckpt, parts.model, parts.optimizer, parts.scheduler, parts.critic, _run_info(config)
            )
        )
        log.info("resumed from %s (step %d)", ckpt, state.step)
        results["eval"] = _previous_summary(out_dir).get("eval", {})
    elif config.resume:
        log.info("resume requested but no complete checkpoint in %s; starting fresh", ckpt_root)
    if state.step == 0 and config.eval.before:
        with timer("eval_before"):
            results["eval"]["before"] = evaluate_heldout(config, parts, out_dir, "before")
    periodic_eval = PeriodicEval(config)
    log_dir, log_config = rank_log_dir(out_dir, config.log)  # rank 0: out_dir; others: ranks/rank-N
    logger = RunLogger.for_config(log_dir, log_config, config.train.steps, state.step, "rl", to_dict(config))
    # alarms hook (rlft.telemetry.alarms): history in memory; a resumed run rebuilds it from metrics.jsonl
    watch = None
    if config.alarms.enabled:
        watch = AlarmWatch(config.alarms, read_jsonl_records(logger.metrics_path))
    metrics: dict[str, float] = {}
    models = (parts.model, parts.ref_model, parts.critic)
    with GracefulStop() as stop:
        try:
            while state.step < config.train.steps:
                with timer("train"), onednn_for(config, *models):
                    metrics, batch = rl_step(config, parts, generator, algo, terms, state, plan)
                state.step += 1
                _throughput(metrics, peak_flops, state.step)
                if periodic_eval.due(state.step):  # eval/* at this step; training RNG untouched
                    with timer("eval_periodic"):
                        metrics.update(periodic_eval(parts.model, parts.tok, state.step))
                metrics = reduce_metrics(metrics)  # over ranks: rank 0 logs global values
                stop.requested = any_rank(stop.requested)  # every rank stops after the same step
                logger.log_metrics(state.step, metrics)
                for firing in watch.observe({"step": state.step, **metrics}) if watch else []:  # alarms hook
                    logger.log_alarm(alarm_record(state.step, firing))
                logger.log_samples(state.step, sample_records(batch, config.log.samples_per_step))
                every = config.train.save_every
                if (every and state.step % every == 0) or state.step == config.train.steps or stop.requested:
                    with timer("checkpoint"):
                        _checkpoint(config, parts, state, ckpt_root)
                if stop.requested and state.step < config.train.steps:
                    log.warning(
                        "stopped after step %d; resume with: rlft rl --config <config> --resume "
                        "output_dir=%s",
                        state.step,
                        out_dir,
                    )
                    return {**results, "metrics": metrics, "steps": state.step, "stopped": True}
        finally:
            logger.close()
    with timer("save_final"):
        final, parts.model = save_final(parts.model, parts.tok, out_dir)  # LoRA: merged
        results["final_dir"] = str(final)
    if config.eval.after:
        with timer("eval_after"):
            results["eval"]["after"] = evaluate_heldout(config, parts, out_dir, "after", results["final_dir"])
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.update(metrics=metrics, steps=state.step, phase_seconds=timer.seconds, peak_rss_mib=peak_mib)
    if is_main():  # rank 0 writes the summary
        (out_dir / "summary.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def _throughput(metrics: dict[str, float], peak_flops: float, step: int) -> None:
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


def _checkpoint(config: RLConfig, parts: RunParts, state: RLState, root: Path) -> None:
    save_checkpoint(
        root,
        state.step,
        parts.model,
        parts.optimizer,
        parts.scheduler,
        state.state_dict(),
        config.train.keep_checkpoints,
        parts.critic,
        parts.tok,
        _run_info(config),
    )


def _run_info(config: RLConfig) -> dict[str, str]:
    """What a checkpoint of this run records and a resume must match (rlft.runtime.checkpoint)."""
    return {"algorithm": config.algo.name}


def _previous_summary(out_dir: Path) -> dict[str, Any]:
    """Evaluation results of an earlier (interrupted) attempt of this run, for the final report."""
    before = out_dir / "eval_before.json"
    if before.exists():
        return {"eval": {"before": json.loads(before.read_text())}}
    return {}
