"""`rlft label serve | export | agreement`: argparse wiring for the ranking app.

The main CLI calls `add_label_parser(subparsers)` and dispatches `label` to `cmd_label(args)`.
`python -m rlft.label.cli serve|export|agreement ...` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Sequence


def add_label_parser(subparsers) -> None:
    """Add `label` with its serve / export / agreement sub-commands."""
    p = subparsers.add_parser("label", help="human-feedback ranking web app, export and agreement")
    add_label_commands(p)


def add_label_commands(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="label_command", required=True)
    s = sub.add_parser("serve", help="serve the ranking app (prints its URL with the access token)")
    s.add_argument("--db", required=True, help="SQLite file (created if absent)")
    s.add_argument("--prompts", help="JSONL of {prompt, id?, extra...}; needs --model")
    s.add_argument("--model", help="HF id, local directory or alias that samples the K responses")
    s.add_argument("--k", type=int, default=4, help="responses sampled per prompt")
    s.add_argument("--responses", help="JSONL of {prompt, responses: [...], id?, extra...} to import")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument(
        "--token",
        default=os.environ.get("RLFT_LABEL_TOKEN"),
        help="access token (default: $RLFT_LABEL_TOKEN, else a random one)",
    )
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export", help="write the K-way rankings as JSONL (atomic)")
    e.add_argument("--db", required=True)
    e.add_argument("--out", required=True, help="JSONL written via a temp file + rename")
    a = sub.add_parser("agreement", help="mean pairwise Kendall tau-b between annotators")
    a.add_argument("--db", required=True)
    a.add_argument("--json", action="store_true", help="print one JSON object")


def _require_db(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"database not found: {path}")


def prepare_db(args: argparse.Namespace) -> int:
    """Import / generate candidates into the db; return the number of prompts it holds."""
    from rlft.label.candidates import GenerationSettings, generate_missing, import_responses
    from rlft.label.db import LabelStore

    if bool(args.prompts) != bool(args.model):
        raise ValueError("--prompts and --model go together (or import ready responses with --responses)")
    store = LabelStore(args.db)
    if args.responses:
        added = import_responses(store, args.responses)
        print(f"[rlft label] imported {added} new prompt(s) from {args.responses}", flush=True)
    if args.prompts:
        settings = GenerationSettings(args.model, args.k, args.max_new_tokens, args.temperature, args.seed)
        added = generate_missing(store, args.prompts, settings)
        print(f"[rlft label] generated responses for {added} new prompt(s)", flush=True)
    total = len(store.prompt_ids())
    if total == 0:
        raise ValueError(f"{args.db} holds no prompts: pass --prompts with --model, or --responses")
    return total


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlft.label.app import create_app
    from rlft.label.security import new_token

    total = prepare_db(args)
    token = args.token or new_token()
    if not _is_loopback(args.host):
        print(
            f"[rlft label] warning: binding {args.host} exposes the app beyond this machine "
            "over plain HTTP; anyone with the token can rank",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(args.db, token)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"[rlft label] {total} prompt(s) in {args.db}", flush=True)
    print(f"[rlft label] open http://{shown}:{args.port}/?token={token}", flush=True)
    print(f"[rlft label] token: {token}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_export(args: argparse.Namespace) -> int:
    from rlft.label.db import LabelStore, export_rows, write_jsonl_atomic

    _require_db(args.db)
    n = write_jsonl_atomic(args.out, export_rows(LabelStore(args.db)))
    print(f"[rlft label] wrote {n} ranking(s) to {args.out}")
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    from rlft.label.agreement import agreement
    from rlft.label.db import LabelStore

    _require_db(args.db)
    by_prompt: dict[str, dict[str, list]] = {}
    ks: dict[str, int] = {}
    for item, annotator, ranking, _ in LabelStore(args.db).ranked_rows():
        by_prompt.setdefault(item.id, {})[annotator] = ranking
        ks[item.id] = len(item.responses)
    res = agreement(by_prompt, ks)
    if args.json:
        print(json.dumps(res))
    elif res["mean_tau_b"] is None:
        print(f"no agreement to report: {res['prompts_overlap']} prompt(s) ranked by >= 2 annotators")
    else:
        print(
            f"mean pairwise Kendall tau-b {res['mean_tau_b']:.4f} over {res['prompts_overlap']} "
            f"prompt(s) ranked by >= 2 annotators ({res['pairs']} annotator pair(s), "
            f"{res['undefined_pairs']} undefined)"
        )
    return 0


LABEL_COMMANDS = {"serve": cmd_serve, "export": cmd_export, "agreement": cmd_agreement}


def cmd_label(args: argparse.Namespace) -> int:
    return LABEL_COMMANDS[args.label_command](args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlft label", description="human-feedback ranking app")
    add_label_commands(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_label(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"rlft label: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
