"""Command line: parse, load config, call a loop; nothing else (exit codes, error lines and
outputs: docs/development.md, "The CLI contract")."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from rlft import __version__
from rlft.bench import add_bench_parser, cmd_bench
from rlft.cli.config_cmd import add_config_parser, cmd_config
from rlft.cli.training import (
    CONFIG_KINDS,
    cmd_distill,
    cmd_dpo,
    cmd_pipeline,
    cmd_rl,
    cmd_rm,
    cmd_sft,
    config_class,
    rl_config,
)
from rlft.config.loader import ConfigError, field_docs, load_config, to_yaml
from rlft.data.rows import DataError
from rlft.errors import RunError
from rlft.label.cli import add_label_parser, cmd_label

TRL_HELP = "a TRL GRPOConfig YAML, mapped over --config (docs/coming_from_trl.md)"


def _training_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", help="YAML config file (defaults apply to absent keys)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. algo.kl_coef=0.02")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlft", description="RL fine-tuning of language models")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"rlft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    rl = _training_parser(sub, "rl", "RL fine-tuning (GRPO and family)")
    rl.add_argument("--trl-config", help=TRL_HELP)
    _training_parser(sub, "sft", "supervised fine-tuning on chat or prompt/completion rows")
    _rm_parser(sub)
    _training_parser(sub, "dpo", "offline preference optimisation (DPO / IPO) on preference data")
    _training_parser(sub, "distill", "distillation: teacher traces -> SFT, offline or on-policy logit KD")
    _training_parser(sub, "pipeline", "run stages (sft, rm, rl, distill, dpo, eval), each feeding the next")
    c = sub.add_parser("check-config", help="print the resolved config and batch arithmetic")
    c.add_argument("--config")
    c.add_argument("--kind", default="rl", choices=sorted(CONFIG_KINDS))
    c.add_argument("--docs", action="store_true", help="list every key with its default and doc")
    c.add_argument("--trl-config", help=TRL_HELP + " and print what it maps to")
    c.add_argument("overrides", nargs="*")
    e = sub.add_parser(
        "eval", help="accuracy, pass@k and maj@k of models on prompt rows (answers or rewards)"
    )
    e.add_argument(
        "--model",
        required=True,
        nargs="+",
        action="extend",
        help="HF id, local dir, alias, run final/ or checkpoints/step-N; several = side by side",
    )
    e.add_argument(
        "--data",
        required=True,
        help="rows with `prompt` (and `answer`): JSONL / Parquet, `datasets` dir, hub id",
    )
    e.add_argument("--split", default="train", help="split of a `datasets` dir or hub dataset")
    e.add_argument("--config-name", default="", help="hub dataset: its configuration (subset) name")
    e.add_argument("--samples", type=int, default=1, help="completions per prompt (K)")
    e.add_argument("--max-new-tokens", type=int, default=64)
    e.add_argument("--temperature", type=float, default=None, help="default: greedy for K=1, else 1.0")
    e.add_argument("--batch-size", type=int, default=64, help="sequences per generate call")
    e.add_argument("--prompt-field", default="prompt")
    e.add_argument("--answer-field", default="answer")
    e.add_argument("--system-prompt", default=None)
    e.add_argument(
        "--chat-template", default="auto", choices=("auto", "none"), help="none: prompts as written"
    )
    e.add_argument(
        "--chat-template-kwargs",
        type=_json_object,
        default=None,
        help='JSON, e.g. {"enable_thinking": false}',
    )
    e.add_argument(
        "--reward",
        action="append",
        default=[],
        help="score with this reward (repeatable; summed): built-in name, pkg.mod:fn, pkg.mod.fn, "
        "file.py:fn or a JSON `rewards` entry; without it, answer matching",
    )
    e.add_argument(
        "--reward-weight", action="append", type=float, default=[], help="one per --reward, in order"
    )
    e.add_argument(
        "--pass-threshold", type=float, default=1.0, help="with --reward: correct when reward >= this"
    )
    e.add_argument("--limit", type=int, default=0, help="only the first N rows")
    e.add_argument("--group-by", default="", help="also report accuracy per value of this row field")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--k-values", type=_k_list, default=(), help="extra pass@k values, e.g. 1,4,8 (<= K)")
    e.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    e.add_argument("--json", dest="json_out", help="write the summary as JSON here")
    e.add_argument(
        "--rows-out",
        "--rows",
        help="per-row results (JSONL); several models: one file each, ROWS.<model>.jsonl",
    )
    _sandbox_parser(sub)
    add_label_parser(sub)
    _report_parser(sub)
    add_bench_parser(sub)
    add_config_parser(sub)
    return parser


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text}")
    return value


def _k_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,8, got '{text}'") from None


def _rm_parser(sub) -> None:
    r = sub.add_parser("rm", help="train a reward model on rankings (`rm train`, the default) or score rows")
    rsub = r.add_subparsers(dest="rm_command", required=True)
    _training_parser(rsub, "train", "train a reward model (Bradley-Terry / Plackett-Luce)")
    s = rsub.add_parser("score", help="score (prompt, response) rows with a reward model")
    s.add_argument("--model", required=True, help="reward model dir (an `rlft rm` final/)")
    s.add_argument("--data", required=True, help="JSONL rows with prompt and response (or responses)")
    s.add_argument("--out", help="write the rows with score(s) added here (JSONL)")
    s.add_argument("--prompt-field", default="prompt")
    s.add_argument("--response-field", default="response")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--max-length", type=int, default=1024)


def _sandbox_parser(sub) -> None:
    s = sub.add_parser("sandbox", help="probe the code sandbox or run a Python file in it")
    ssub = s.add_subparsers(dest="sandbox_command", required=True)
    ssub.add_parser("probe", help="print the strongest available backend (exit 1 if none)")
    r = ssub.add_parser("run", help="run a Python program in the sandbox")
    r.add_argument("file", help="the Python program")
    r.add_argument("--stdin", help="file fed to the program's stdin")
    r.add_argument("--timeout", type=float, default=10.0, help="wall-clock limit in seconds")
    r.add_argument("--json", action="store_true", help="print the result as one JSON object")


def cmd_check_config(args: argparse.Namespace) -> int:
    cls = config_class(args.kind)
    if args.docs:
        for key, default, doc in field_docs(cls):
            print(f"{key} = {default!r}  # {doc}")
        return 0
    if args.trl_config and args.kind != "rl":
        raise ConfigError("--trl-config is a TRL GRPOConfig: it needs --kind rl")
    rl = args.kind == "rl"
    cfg = rl_config(args, args.overrides) if rl else load_config(cls, args.config, args.overrides)
    if args.kind == "rl":
        import dataclasses

        from rlft.algorithms import get_algorithm

        cfg = dataclasses.replace(cfg, algo=get_algorithm(cfg.algo.name).resolve(cfg.algo))
    print(to_yaml(cfg), end="")
    if args.kind == "rl":
        from rlft.rl.setup import batch_arithmetic

        print("# batch arithmetic: " + json.dumps(batch_arithmetic(cfg)))
    check_data_sources(cfg)
    return 0


def check_data_sources(cfg: object) -> None:
    """DataError naming each dataset of the config that a run could not read: a missing local
    path, a missing split, a hub id that cannot be reached (offline) or lacks the split."""
    from rlft.data.sources import check_source

    sections = [("data", getattr(cfg, "data", None)), ("eval", getattr(cfg, "eval", None))]
    problems = []
    for name, section in sections:
        path = getattr(section, "path", "")
        if not path:
            continue
        split = getattr(section, "split", "") or getattr(cfg.data, "split", "train")
        config = getattr(section, "config", "") or (getattr(cfg.data, "config", "") if name == "eval" else "")
        if (problem := check_source(path, config, split)) is not None:
            problems.append(f"'{name}.path': {problem}")
    if problems:
        raise DataError("; ".join(problems))


def cmd_eval(args: argparse.Namespace) -> int:
    from rlft.data.prompts import PromptFormat
    from rlft.data.rows import read_rows, require_fields
    from rlft.eval.accuracy import check_references
    from rlft.eval.compare import EvalOptions, comparison_table, evaluate_models, write_outputs
    from rlft.eval.rewarded import terms_from_args

    fmt = PromptFormat(args.system_prompt, args.chat_template, args.chat_template_kwargs)
    rows = read_rows(args.data, args.split, config=args.config_name, limit=args.limit)
    require_fields(rows, [args.prompt_field])
    terms = terms_from_args(args.reward, args.reward_weight, args.prompt_field, args.system_prompt)
    if not terms:
        check_references(rows, args.answer_field)
    opts = EvalOptions(
        prompt_field=args.prompt_field,
        answer_field=args.answer_field,
        system_prompt=fmt,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        k_values=args.k_values,
        seed=args.seed,
        device=args.device,
        terms=tuple(terms),
        pass_threshold=args.pass_threshold,
        group_by=args.group_by,
    )
    results = evaluate_models(args.model, rows, opts)
    if len(results) > 1:
        print(comparison_table(results))
    for path in write_outputs(results, args.json_out, args.rows_out):
        print(f"per-row results: {path}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from rlft.sandbox import Limits, LocalSandbox, SandboxUnavailable, probe_backend

    try:
        backend = probe_backend()
    except SandboxUnavailable as e:
        print(f"rlft sandbox: {e}", file=sys.stderr)
        return 1
    if args.sandbox_command == "probe":
        print(backend)
        return 0
    code = Path(args.file).read_text(encoding="utf-8")
    stdin = Path(args.stdin).read_text(encoding="utf-8") if args.stdin else None
    result = LocalSandbox(backend, Limits().with_wall(args.timeout)).run(code, stdin)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        print(f"[rlft sandbox] {backend}: {result.status} {result.reason}".rstrip(), file=sys.stderr)
    return 0 if result.status == "ok" else 1


def _report_parser(sub) -> None:
    r = sub.add_parser("report", help="HTML report of a run: plots, alarms, eval, samples (also mid-run)")
    r.add_argument("run_dir", help="run directory (output_dir of rlft rl / sft / ...)")
    r.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR", help="runs overlaid on the plots")
    r.add_argument("--out", help="HTML file to write (default RUN_DIR/report.html; PNGs beside it)")
    r.add_argument("--sample-steps", type=int, default=10, help="steps whose sample completions are shown")


def cmd_report(args: argparse.Namespace) -> int:
    from rlft.report import write_report

    path = write_report(args.run_dir, args.compare, args.out, args.sample_steps)
    print(f"report written to {path} (plots in {path.with_suffix('')}/)")
    return 0


COMMANDS = {
    "rl": cmd_rl,
    "sft": cmd_sft,
    "distill": cmd_distill,
    "pipeline": cmd_pipeline,
    "rm": cmd_rm,
    "dpo": cmd_dpo,
    "check-config": cmd_check_config,
    "eval": cmd_eval,
    "sandbox": cmd_sandbox,
    "label": cmd_label,
    "report": cmd_report,
    "bench": cmd_bench,
    "config": cmd_config,
}
RM_SUBCOMMANDS = ("train", "score", "-h", "--help")


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """`rlft rm --config X` means `rlft rm train --config X` (train is rm's default)."""
    argv = list(argv)
    i = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if i is not None and argv[i] == "rm" and (i + 1 == len(argv) or argv[i + 1] not in RM_SUBCOMMANDS):
        argv.insert(i + 1, "train")
    return argv


def process_defaults() -> None:
    """Environment defaults for this process and its children (a user's own setting wins).

    THP_MEM_ALLOC_ENABLE=1: PyTorch puts CPU tensors of 2 MB and more on transparent huge pages
    (c10's allocator, read once at torch's first allocation, so before torch is imported). A
    fresh [49152, 576] gradient or [256, 49152] logits chunk then faults in 2 MB pages instead of
    4 KB ones: the W update ran 5.7-5.9 s instead of 6.9-7.0 (docs/performance.md)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _report_error(args: argparse.Namespace, error: BaseException) -> None:
    """One line for an error rlft expects (bad config, data, a failed run); its traceback too with
    -v or RLFT_DEBUG=1, for an error that is really a bug to report."""
    debug = args.verbose or os.environ.get("RLFT_DEBUG", "") not in ("", "0")
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    print(f"rlft {args.command}: error: {error}", file=sys.stderr)
    if not debug:
        print("  (rlft -v ... or RLFT_DEBUG=1 shows the traceback)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    process_defaults()
    args = build_parser().parse_args(_normalise_argv(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    code = 1
    try:
        code = COMMANDS[args.command](args)
        return code
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        _report_error(args, e)
        return 2
    except RunError as e:
        _report_error(args, e)
        return 1
    except KeyboardInterrupt:
        print("rlft: interrupted; resume with --resume", file=sys.stderr)
        return 130
    finally:
        if "rlft.dist.ranks" in sys.modules:  # the command may have joined a process group
            from rlft.dist.ranks import finish

            finish(ok=code == 0)


if __name__ == "__main__":
    sys.exit(main())
