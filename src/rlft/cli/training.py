"""Handlers of the training subcommands (sft, rm, rl, dpo, distill, pipeline): load the config,
call the loop, print where its results are."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rlft.config.loader import load_config

CONFIG_KINDS = {
    "rl": ("rlft.config.rl", "RLConfig"),
    "sft": ("rlft.config.sft", "SFTConfig"),
    "distill": ("rlft.config.distill", "DistillConfig"),
    "rm": ("rlft.config.preference", "RMConfig"),
    "dpo": ("rlft.config.preference", "DPOConfig"),
}


def config_class(kind: str):
    import importlib

    module, name = CONFIG_KINDS[kind]
    return getattr(importlib.import_module(module), name)


def rl_config(args: argparse.Namespace, overrides: list[str], show_trl: bool = True):
    """The RLConfig of `rl` / `check-config`: --config, or with --trl-config a TRL GRPOConfig file
    mapped over it (precedence: --config < TRL file < overrides), its notes printed as one block."""
    from rlft.config.rl import RLConfig

    trl_path = getattr(args, "trl_config", None)
    if not trl_path:
        return load_config(RLConfig, args.config, overrides)
    from rlft.config.trl_load import load_rl_config_with_trl, notes_block

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg, mapping, notes = load_rl_config_with_trl(trl_path, args.config, overrides, world_size=world)
    if show_trl:
        print(notes_block(trl_path, mapping, notes), flush=True)
    return cfg


def cmd_rl(args: argparse.Namespace) -> int:
    from rlft.rl.loop import train_rl

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    cfg = rl_config(args, overrides, show_trl=os.environ.get("RANK", "0") == "0")  # before ranks exist
    result = train_rl(cfg)
    if not _prints_results():
        return 0
    if result.get("stopped"):
        files = "".join(f"--{k.replace('_', '-')} {v} " for k, v in _config_files(args).items())
        again = f"rlft rl {files}{' '.join(args.overrides)} --resume"
        print(f"[rlft] stopped after step {result['steps']}; resume with: {again}")
        return 0
    ev = result["eval"]
    if "before" in ev and "after" in ev:
        print(
            f"[rlft] held-out greedy accuracy: base {ev['before']['accuracy']:.1%} -> "
            f"trained {ev['after']['accuracy']:.1%} (n={ev['after']['n']})"
        )
    phases = ", ".join(f"{k} {v:.0f}s" for k, v in result["phase_seconds"].items())
    print(f"[rlft] wall time per phase: {phases}")
    print(f"[rlft] final model: {result['final_dir']}")
    return 0


def _config_files(args: argparse.Namespace) -> dict[str, str]:
    return {k: getattr(args, k) for k in ("config", "trl_config") if getattr(args, k, None)}


def _train_config(args: argparse.Namespace, kind: str):
    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    return load_config(config_class(kind), args.config, overrides)


def _prints_results() -> bool:
    """Only rank 0 prints a run's results: it alone has some of them (held-out evaluation in a
    fresh process, the summary), and one report per run is enough."""
    from rlft.dist.ranks import is_main

    return is_main()


def _print_run_end(result: dict, command: str) -> None:
    if not _prints_results():
        return
    if result.get("stopped"):
        print(f"[rlft] stopped after step {result['steps']}; resume with: rlft {command} ... --resume")
        return
    held = ", ".join(f"{k} {v:.4f}" for k, v in result.get("heldout", {}).items())
    print(f"[rlft] held-out: {held or 'no held-out rows'}")
    print(f"[rlft] final model: {result['final_dir']}")


def cmd_rm(args: argparse.Namespace) -> int:
    if args.rm_command == "score":
        from rlft.train.reward_model import score_file

        scores = score_file(
            args.model,
            args.data,
            args.out,
            args.prompt_field,
            args.response_field,
            args.batch_size,
            args.max_length,
        )
        mean = sum(scores) / len(scores)
        print(
            f"[rlft] {len(scores)} responses scored, mean {mean:.4f}"
            + (f"; wrote {args.out}" if args.out else "")
        )
        if not args.out:
            print(json.dumps(scores))
        return 0
    from rlft.train.reward_model import train_reward_model

    _print_run_end(train_reward_model(_train_config(args, "rm")), "rm")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from rlft.train.sft import train_sft

    _print_run_end(train_sft(_train_config(args, "sft")), "sft")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from rlft.train.distill import run_distill

    result = run_distill(_train_config(args, "distill"))
    if "traces" in result:
        t = result["traces"]
        print(
            f"[rlft] traces: kept {t['kept']} of {t['samples']} samples ({t['kept_fraction']:.1%}); "
            f"{t['prompts_with_kept']} of {t['prompts']} prompts have one -> {result['traces_path']}"
        )
        if not result["steps"] and not result.get("stopped"):
            return 0
    before, after = result.get("heldout_before"), result.get("heldout")
    if before and after and "forward_kl" in after:
        print(f"[rlft] held-out forward KL: {before['forward_kl']:.4f} -> {after['forward_kl']:.4f}")
    _print_run_end(result, "distill")
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    from rlft.train.dpo import train_dpo

    _print_run_end(train_dpo(_train_config(args, "dpo")), "dpo")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from rlft.config.pipeline import load_pipeline_config
    from rlft.pipeline import StageFailed, run_pipeline

    overrides = list(args.overrides) + (["resume=true"] if args.resume else [])
    try:
        run_pipeline(load_pipeline_config(args.config, overrides))
    except StageFailed as e:
        print(f"rlft pipeline: {e}", file=sys.stderr)
        return 1
    return 0
