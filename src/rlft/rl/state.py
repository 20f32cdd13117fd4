"""What an RL run carries from step to step and through a checkpoint: the step, the prompt
stream, the non-finite guard and the adaptive KL coefficient, saved with the weights and restored
on resume (rlft.dist.checkpoint: one or several processes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.algorithms.kl_control import AdaptiveKLController
from rlft.config.rl import RLConfig
from rlft.data.prompts import PromptStream
from rlft.dist.checkpoint import load_checkpoint, save_checkpoint
from rlft.rl.setup import RunParts
from rlft.runtime.guard import NonFiniteGuard


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


def save_rl_checkpoint(config: RLConfig, parts: RunParts, state: RLState, root: Path) -> None:
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
        run_info(config),
    )


def load_rl_checkpoint(config: RLConfig, parts: RunParts, state: RLState, ckpt: Path) -> int:
    """Weights, optimizer and `state` restored from `ckpt`; returns its step."""
    saved = load_checkpoint(
        ckpt, parts.model, parts.optimizer, parts.scheduler, parts.critic, run_info(config)
    )
    state.load_state_dict(saved)
    return state.step


def run_info(config: RLConfig) -> dict[str, str]:
    """What a checkpoint of this run records and a resume must match (rlft.runtime.checkpoint)."""
    return {"algorithm": config.algo.name}


def previous_evaluation(out_dir: Path) -> dict[str, Any]:
    """Evaluation results of an earlier (interrupted) attempt of this run, for the final report."""
    before = out_dir / "eval_before.json"
    return {"before": json.loads(before.read_text())} if before.exists() else {}
