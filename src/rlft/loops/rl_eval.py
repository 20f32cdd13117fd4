"""Evaluation every `eval.every` RL steps on the held-out set, logged as eval/* metrics.

It must not change training: generation runs in eval mode (HFGenerator restores train mode; with
gradient checkpointing, train-mode generation would run without a KV cache), under no_grad, and
on its own seeded RNG, so the training run draws exactly the numbers it would draw without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rlft.checkpoint import rng_state, set_rng_state
from rlft.config import ConfigError
from rlft.data.prompts import load_eval_rows
from rlft.loops.evaluate import evaluate_rows
from rlft.schema.rl import RLConfig


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


class PeriodicEval:
    """`due(step)` says whether step is an eval step; calling it evaluates and returns eval/* metrics."""

    def __init__(self, cfg: RLConfig):
        check_eval_config(cfg)
        self.cfg = cfg
        e = cfg.eval
        self.rows = load_eval_rows(e.path, cfg.data, e.every_limit or e.limit) if e.every else []

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
                system_prompt=cfg.data.system_prompt,
                samples=e.every_samples,
                max_new_tokens=e.max_new_tokens,
                batch_size=e.batch_size,
            )
        return {
            "eval/accuracy": res["accuracy"],
            "eval/pass@k": res["pass@k"],
            "eval/maj@k": res["maj@k"],
            "eval/response_len": res["mean_response_tokens"],
            "eval/truncated_frac": res["truncated_frac"],
            "perf/eval_s": time.perf_counter() - start,
        }
