"""Held-out evaluation of the RL loop: before and after training (`evaluate_heldout`, optionally
in a fresh process), and every `eval.every` RL steps, logged as eval/* metrics. Which rows and
which scoring (answer matching or the run's rewards): rlft.rl.heldout.

Periodic evaluation must not change training: generation runs in eval mode (HFGenerator restores
train mode; with gradient checkpointing, train-mode generation would run without a KV cache),
under no_grad, and on its own seeded RNG, so the training run draws exactly the numbers it would
draw without it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rlft.config.loader import ConfigError
from rlft.config.rl import RLConfig
from rlft.data.prompts import PromptFormat
from rlft.dist.ranks import is_main
from rlft.dist.sharding import full_parameters
from rlft.eval.accuracy import check_references, evaluate_rows, write_eval_results
from rlft.rewards.scoring import RewardTerm
from rlft.rl.heldout import eval_terms, heldout_rows, is_user_task, reward_arguments
from rlft.runtime.checkpoint import rng_state, set_rng_state

log = logging.getLogger(__name__)


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run the body on a torch RNG seeded with `seed`; afterwards every RNG (torch CPU and the
    current accelerator, Python, NumPy) is back where it was."""
    saved = rng_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        set_rng_state(saved)


def check_eval_config(cfg: RLConfig) -> None:
    e = cfg.eval
    for key, value, low in [
        ("eval.every", e.every, 0),
        ("eval.every_samples", e.every_samples, 1),
        ("eval.every_limit", e.every_limit, 0),
        ("eval.limit", e.limit, 0),
    ]:
        if value < low:
            raise ConfigError(f"'{key}' must be >= {low}, got {value}")
    if cfg.diagnostics.repeat_ngram < 1:
        raise ConfigError(f"'diagnostics.repeat_ngram' must be >= 1, got {cfg.diagnostics.repeat_ngram}")
    if not 0.0 <= e.heldout_fraction < 1.0:
        raise ConfigError(f"'eval.heldout_fraction' must be in [0, 1), got {e.heldout_fraction}")
    if not math.isfinite(e.pass_threshold):
        raise ConfigError(f"'eval.pass_threshold' must be a finite number, got {e.pass_threshold}")
    if not e.reward.strip():
        raise ConfigError("'eval.reward' is empty: auto, answer, run, or a reward name")


class PeriodicEval:
    """`due(step)` says whether step is an eval step; calling it evaluates and returns eval/* metrics.
    `rows`: the user's rows given in Python (rlft.rl.heldout.heldout_rows); `terms`: the run's
    reward terms (else built from the config when eval.reward needs them)."""

    def __init__(self, cfg: RLConfig, rows: Any = None, terms: Sequence[RewardTerm] | None = None):
        check_eval_config(cfg)
        self.cfg = cfg
        e = cfg.eval
        self.rows: list[dict[str, Any]] = []
        self.terms: list[RewardTerm] = []
        if e.every:
            self.rows = heldout_rows(cfg, rows, limit=e.every_limit or e.limit)
            self.terms = eval_terms(cfg, is_user_task(cfg, rows), terms)
            if not self.terms:
                check_references(self.rows, cfg.data.answer_field)  # now, not at the first eval step

    def due(self, step: int) -> bool:
        return self.cfg.eval.every > 0 and step % self.cfg.eval.every == 0

    def __call__(self, model: Any, tok: Any, step: int) -> dict[str, float]:
        cfg, e = self.cfg, self.cfg.eval
        start = time.perf_counter()
        with isolated_rng(cfg.seed + step):
            res = evaluate_rows(
                model,
                tok,
                self.rows,
                prompt_field=cfg.data.prompt_field,
                answer_field=cfg.data.answer_field,
                system_prompt=PromptFormat.of(cfg.data),
                samples=e.every_samples,
                max_new_tokens=e.max_new_tokens,
                batch_size=e.batch_size,
                terms=self.terms or None,
                pass_threshold=e.pass_threshold,
                group_by=e.group_by,
            )
        return {**eval_metrics(res), "perf/eval_s": time.perf_counter() - start}


def eval_metrics(res: Mapping[str, Any]) -> dict[str, float]:
    """eval/* metrics of an evaluation: accuracy, pass@k, maj@k (answer matching only), response
    length, truncated share, and under reward scoring eval/reward and eval/reward/<name>."""
    metrics = {
        "eval/accuracy": res["accuracy"],
        "eval/pass@k": res["pass@k"],
        "eval/response_len": res["mean_response_tokens"],
        "eval/truncated_frac": res["truncated_frac"],
    }
    if res.get("maj@k") is not None:
        metrics["eval/maj@k"] = res["maj@k"]
    metrics.update(
        {
            f"eval/{k}": float(v)
            for k, v in res.items()
            if k == "reward" or k.startswith(("reward/", "accuracy/"))
        }
    )
    return metrics


def evaluate_heldout(
    cfg: RLConfig,
    parts: Any,
    out_dir: Path,
    tag: str,
    model_dir: str | None = None,
    rows: Any = None,
    terms: Sequence[RewardTerm] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy on the held-out set, scored as eval.reward says; writes heldout.jsonl (the
    rows evaluated) and eval_<tag>.json. `rows`: the user's rows given in Python; `terms`: the
    run's reward terms. With eval.fresh_process and a `model_dir`, a new `rlft eval` process loads
    the saved model (rank 0 only; the others return {}), unless a reward cannot be named on its
    command line (then in process, logged). In process, every rank evaluates (the same rows),
    rank 0 writes."""
    terms = eval_terms(cfg, is_user_task(cfg, rows), terms)
    rows = heldout_rows(cfg, rows, limit=cfg.eval.limit)
    reward_args, why = reward_arguments(cfg, terms)
    fresh = model_dir is not None and cfg.eval.fresh_process
    if fresh and why:
        log.info("evaluating the final model in this process, not a fresh one: %s", why)
        fresh = False
    if fresh and not is_main():
        return {}
    heldout = out_dir / "heldout.jsonl"
    if is_main():
        heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = time.perf_counter()
    if fresh:
        res = eval_in_fresh_process(cfg, model_dir, heldout, out_dir / f"eval_{tag}.json", reward_args)
    else:
        with full_parameters(parts.model):
            res = evaluate_rows(
                parts.model,
                parts.tok,
                rows,
                prompt_field=cfg.data.prompt_field,
                answer_field=cfg.data.answer_field,
                system_prompt=PromptFormat.of(cfg.data),
                max_new_tokens=cfg.eval.max_new_tokens,
                batch_size=cfg.eval.batch_size,
                terms=terms or None,
                pass_threshold=cfg.eval.pass_threshold,
                group_by=cfg.eval.group_by,
            )
        json_path = out_dir / f"eval_{tag}.json"
        if is_main():
            write_eval_results(res, str(json_path), str(json_path.with_suffix(".rows.jsonl")))
    res["seconds"] = time.perf_counter() - t
    keep = ("accuracy", "n", "mean_response_tokens", "seconds", "scoring", "reward")
    summary = {k: res[k] for k in res if k in keep or k.startswith(("reward/", "accuracy/"))}
    where = " in a fresh process" if fresh else ""
    reward = f", mean reward {res['reward']:.3f}" if "reward" in res else ""
    reward += "".join(
        f", {k[len('accuracy/') :]} {v:.1%}" for k, v in sorted(res.items()) if k.startswith("accuracy/")
    )
    if is_main():
        print(
            f"[rlft] held-out greedy accuracy ({tag} training{where}): {res['accuracy']:.1%} "
            f"on {res['n']} problems{reward} ({res['seconds']:.0f}s)",
            flush=True,
        )
    return summary


def eval_in_fresh_process(
    cfg: RLConfig, model_dir: str, data: Path, out_json: Path, reward_args: Sequence[str] = ()
) -> dict[str, Any]:
    """Run `python -m rlft eval` on the saved model, exactly as a user would: the run's prompt
    format, and its rewards (`reward_args`: rlft.rl.heldout.reward_arguments) when they score."""
    cmd = [
        sys.executable,
        "-m",
        "rlft",
        "eval",
        "--model",
        model_dir,
        "--data",
        str(data),
        "--max-new-tokens",
        str(cfg.eval.max_new_tokens),
        "--batch-size",
        str(cfg.eval.batch_size),
        "--prompt-field",
        cfg.data.prompt_field,
        "--answer-field",
        cfg.data.answer_field,
        "--chat-template",
        cfg.data.chat_template,
        "--json",
        str(out_json),
        "--rows-out",
        str(out_json.with_suffix(".rows.jsonl")),
    ]
    if cfg.data.system_prompt:
        cmd += ["--system-prompt", cfg.data.system_prompt]
    if cfg.data.chat_template_kwargs:
        cmd += ["--chat-template-kwargs", json.dumps(dict(cfg.data.chat_template_kwargs))]
    if reward_args:
        cmd += [*reward_args, "--pass-threshold", repr(cfg.eval.pass_threshold)]
    if cfg.eval.limit:
        cmd += ["--limit", str(cfg.eval.limit)]
    if cfg.eval.group_by:
        cmd += ["--group-by", cfg.eval.group_by]
    subprocess.run(cmd, check=True)
    return json.loads(out_json.read_text())
