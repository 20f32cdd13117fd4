"""Held-out evaluation of the RL loop: before and after training (`evaluate_heldout`, optionally
in a fresh process), and every `eval.every` RL steps, logged as eval/* metrics.

Periodic evaluation must not change training: generation runs in eval mode (HFGenerator restores
train mode; with gradient checkpointing, train-mode generation would run without a KV cache),
under no_grad, and on its own seeded RNG, so the training run draws exactly the numbers it would
draw without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rlft.config.loader import ConfigError
from rlft.config.rl import RLConfig
from rlft.data.prompts import PromptFormat, load_eval_rows
from rlft.dist.ranks import is_main
from rlft.dist.sharding import full_parameters
from rlft.eval.accuracy import evaluate_rows, write_eval_results
from rlft.runtime.checkpoint import rng_state, set_rng_state


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
                system_prompt=PromptFormat.of(cfg.data),
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


def evaluate_heldout(
    cfg: RLConfig, parts: Any, out_dir: Path, tag: str, model_dir: str | None = None
) -> dict[str, Any]:
    """Greedy accuracy on the held-out set; writes heldout.jsonl and eval_<tag>.json. With
    eval.fresh_process and a `model_dir`, a new `rlft eval` process loads the saved model (rank 0
    only; the others return {}). In process, every rank evaluates (the same rows), rank 0 writes."""
    fresh = model_dir is not None and cfg.eval.fresh_process
    if fresh and not is_main():
        return {}
    rows = load_eval_rows(cfg.eval.path, cfg.data, cfg.eval.limit)
    heldout = Path(cfg.eval.path) if cfg.eval.path else out_dir / "heldout.jsonl"
    if not cfg.eval.path and is_main():
        heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = time.perf_counter()
    if fresh:
        res = eval_in_fresh_process(cfg, model_dir, heldout, out_dir / f"eval_{tag}.json")
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
            )
        json_path = out_dir / f"eval_{tag}.json"
        if is_main():
            write_eval_results(res, str(json_path), str(json_path.with_suffix(".rows.jsonl")))
    res["seconds"] = time.perf_counter() - t
    summary = {k: res[k] for k in ("accuracy", "n", "mean_response_tokens", "seconds")}
    where = " in a fresh process" if fresh else ""
    if is_main():
        print(
            f"[rlft] held-out greedy accuracy ({tag} training{where}): {res['accuracy']:.1%} "
            f"on {res['n']} problems ({res['seconds']:.0f}s)",
            flush=True,
        )
    return summary


def eval_in_fresh_process(cfg: RLConfig, model_dir: str, data: Path, out_json: Path) -> dict[str, Any]:
    """Run `python -m rlft eval` on the saved model, exactly as a user would."""
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
        "--json",
        str(out_json),
        "--rows-out",
        str(out_json.with_suffix(".rows.jsonl")),
    ]
    if cfg.data.system_prompt:
        cmd += ["--system-prompt", cfg.data.system_prompt]
    if cfg.eval.limit:
        cmd += ["--limit", str(cfg.eval.limit)]
    subprocess.run(cmd, check=True)
    return json.loads(out_json.read_text())
