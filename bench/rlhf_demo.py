"""RLHF end to end on the real model, with simulated annotators.

1. candidates: SmolLM2-135M-Instruct samples K responses for N arithmetic prompts; with
   --extra-policy, another policy (e.g. the RL-trained runs/demo/final) supplies --extra-k of the K,
   as InstructGPT's labellers saw responses from several policies;
2. rankings: simulated annotators order them by the gold rule (bench/rlhf_gold.py: right answer,
   then concise), perceiving word counts with noise, equal worth tied; written in
   `rlft label export`'s K-way format;
3. rm: `rlft rm` (configs/rlhf_rm.yaml) learns the rankings; held-out pair accuracy is reported;
4. rl: `rlft rl` (configs/rlhf_grpo.yaml): GRPO with the RM as the reward, gold logged alongside
   with weight 0 (and its correctness part, "right"); the curves go to OUT/curves.png.
Each stage is skipped when its output exists (rerun after a crash continues).

    .venv/bin/python bench/rlhf_demo.py [--prompts 320] [--k 4] [--out runs/rlhf]
        [--extra-policy runs/demo/final --extra-k 2]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BASE = "smollm2-135m-instruct"
sys.path.insert(0, str(REPO / "bench"))

from rlhf_gold import gold_score, gold_utility  # noqa: E402


def demo_prompts(n: int, seed: int) -> list[dict]:
    from rlft.config.common import ArithmeticConfig
    from rlft.data.arithmetic import train_rows

    stream = train_rows(ArithmeticConfig(ops=["+", "*"], heldout_fraction=0.3, heldout_size=200), seed)
    return [{**next(stream), "id": f"p{i}"} for i in range(n)]


def sample_responses(
    model_path: str, rows: list[dict], k: int, out: Path, max_new_tokens: int, seed: int
) -> None:
    """k responses per row from one policy (T=1.0), written as candidate rows."""
    from rlft.data.prompts import chat_text
    from rlft.models.load import load_causal_lm, load_tokenizer, resolve_model_path
    from rlft.rollout.base import SamplingParams, make_generator

    path = resolve_model_path(model_path)
    tok, model = load_tokenizer(path), load_causal_lm(path).eval()
    torch.manual_seed(seed)
    ids = tok([chat_text(tok, r["prompt"]) for r in rows], add_special_tokens=False)["input_ids"]
    gen = make_generator("hf", model, tok, batch_size=64)
    t = time.perf_counter()
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0)
    texts = tok.batch_decode(gen.generate(ids, params, k).response_ids, skip_special_tokens=True)
    print(f"[candidates] {model_path}: {len(rows)} x {k} responses in {time.perf_counter() - t:.0f}s")
    with open(out, "w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({**row, "responses": texts[i * k : (i + 1) * k]}) + "\n")


def mix_policies(base: Path, extra: Path, k: int, out: Path, seed: int) -> None:
    """K-way candidate rows mixing policies as InstructGPT's labelling did: the first k - m base
    responses and the m responses of the other policy, in a seeded random order per prompt."""
    rng = random.Random(seed)
    base_rows = [json.loads(line) for line in base.read_text().splitlines()]
    extra_rows = {r["id"]: r for r in map(json.loads, extra.read_text().splitlines())}
    with open(out, "w") as f:
        for row in base_rows:
            other = extra_rows[row["id"]]["responses"]
            tagged = [(r, "base") for r in row["responses"][: k - len(other)]] + [(r, "extra") for r in other]
            rng.shuffle(tagged)
            mixed = {"responses": [r for r, _ in tagged], "sources": [s for _, s in tagged]}
            f.write(json.dumps({**row, **mixed}) + "\n")


def mixed_candidates(base: Path, args: argparse.Namespace) -> Path:
    extra, mixed = base.with_name("candidates_extra_policy.jsonl"), base.with_name("candidates_mixed.jsonl")
    if not extra.exists():
        rows = [json.loads(line) for line in base.read_text().splitlines()]
        rows = [{k: v for k, v in r.items() if k != "responses"} for r in rows]
        sample_responses(args.extra_policy, rows, args.extra_k, extra, args.max_new_tokens, args.seed + 1)
    if not mixed.exists():
        mix_policies(base, extra, args.k, mixed, args.seed)
    return mixed


def simulated_ranking(row: dict, rng: random.Random, noise: float) -> list:
    """Best-first ranking with ties: each response's worth under the gold rule, with its word count
    perceived with multiplicative log-normal noise (sigma = noise); equal worth = a tie."""
    worth = [
        gold_utility(row["prompt"], r, row, len(r.split()) * math.exp(rng.gauss(0.0, noise)))
        for r in row["responses"]
    ]
    ranking = []
    for value in sorted(set(worth), reverse=True):
        group = [i for i, w in enumerate(worth) if w == value]
        ranking.append(group if len(group) > 1 else group[0])
    return ranking


def make_rankings(candidates: Path, out: Path, noise: float, seed: int) -> None:
    rng = random.Random(seed)
    annotators = ["ann_a", "ann_b", "ann_c"]
    rows = [json.loads(line) for line in candidates.read_text().splitlines()]
    with open(out, "w") as f:
        for row in rows:
            ranked = {
                **row,
                "ranking": simulated_ranking(row, rng, noise),
                "annotator": rng.choice(annotators),
            }
            f.write(json.dumps(ranked) + "\n")
    by_source: dict[str, list[bool]] = {}
    for r in rows:
        for x, src in zip(r["responses"], r.get("sources", ["base"] * len(r["responses"])), strict=True):
            by_source.setdefault(src, []).append(gold_score(r["prompt"], x, r) >= 1)
    for src, oks in by_source.items():
        print(f"[rankings] {src} policy: {len(oks)} responses, {sum(oks) / len(oks):.1%} right")
    golds = [gold_score(r["prompt"], x, r) for r in rows for x in r["responses"]]
    right = [gold_score(r["prompt"], x, r) >= 1 for r in rows for x in r["responses"]]
    print(
        f"[rankings] {len(rows)} rankings; candidates right {sum(right) / len(right):.1%}, "
        f"mean gold {sum(golds) / len(golds):.3f}"
    )


def accuracy_by_pair_kind(rankings: Path, rm_dir: Path, heldout_fraction: float) -> dict:
    """Held-out pair accuracy of the RM, split by what separates the pair under the noiseless
    rule (correctness: one right, one wrong; or only conciseness) and by whether both responses
    come from the same policy (with --extra-policy, style alone could tell policies apart)."""
    from rlft.data.preferences import ranked_pairs, read_preferences, split_by_prompt
    from rlft.models.load import load_tokenizer
    from rlft.models.reward_model import load_reward_model, score_texts
    from rlft.rewards.builtin import numeric_answer

    _, held = split_by_prompt(read_preferences(str(rankings)), heldout_fraction)
    tok = load_tokenizer(str(rm_dir))
    model = load_reward_model(str(rm_dir), tok)
    prompts = [r.prompt for r in held for _ in r.responses]
    scores = score_texts(model, tok, prompts, [x for r in held for x in r.responses])
    hits: dict[str, list[bool]] = {}
    at = 0
    for r in held:
        right = [numeric_answer(r.prompt, x, r.extra) >= 1 for x in r.responses]
        sources = r.extra.get("sources", ["base"] * len(r.responses))
        for better, worse in ranked_pairs(r.levels):
            kind = "correctness" if right[better] != right[worse] else "conciseness"
            mix = "same_policy" if sources[better] == sources[worse] else "cross_policy"
            ok = scores[at + better] > scores[at + worse]
            for key in (kind, f"{kind}/{mix}"):
                hits.setdefault(key, []).append(ok)
        at += len(r.responses)
    return {k: {"pairs": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(hits.items())}


def grpo_config(out: Path) -> Path:
    """configs/rlhf_grpo.yaml with the reward model of this run."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "rlhf_grpo.yaml").read_text())
    cfg["rewards"][0]["model"] = [str(out / "rm" / "final")]
    path = out / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(cmd: list[str]) -> None:
    print("[run]", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def verdict(c: dict) -> str:
    """Reward hacking = the RM score rises while gold (or its correctness part) does not."""
    if c["rm_last"] <= c["rm_first"]:
        return "the RM score did not rise"
    if c["gold_last"] <= c["gold_first"]:
        return "reward hacking: the RM score rose but the gold score did not"
    if "right_first" in c and c["right_last"] <= c["right_first"]:
        return "partial reward hacking: RM and gold rose, but the share of right answers did not"
    return "the RM score and the gold score rose together"


def plot_curves(metrics: Path, out_png: Path) -> dict:
    """RM score, gold and (when logged) its correctness part `reward/right` over GRPO steps;
    returns their means over the first and the last fifth of the steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r["step"] for r in rows]
    panels = [
        ("reward/rm", "reward-model score (optimised)", "tab:blue"),
        ("reward/gold", "gold rule (annotators' preference)", "tab:green"),
        ("reward/right", "right answers (gold's correctness part)", "tab:red"),
    ]
    panels = [p for p in panels if p[0] in rows[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (key, title, color) in zip(axes, panels, strict=True):
        ax.plot(steps, [r[key] for r in rows], color=color)
        ax.set(title=title, xlabel="GRPO step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)

    w = max(1, len(rows) // 5)
    keys = [("rm", "reward/rm"), ("gold", "reward/gold"), ("right", "reward/right")]
    keys += [("len", "rollout/response_len")]
    out = {}
    for name, key in keys:
        if key in rows[0]:
            out[f"{name}_first"] = sum(r[key] for r in rows[:w]) / w
            out[f"{name}_last"] = sum(r[key] for r in rows[-w:]) / w
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=320)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--noise", type=float, default=0.1, help="log-normal sigma of perceived word counts")
    ap.add_argument("--out", default="runs/rlhf")
    ap.add_argument(
        "--extra-policy", help="a second policy (e.g. runs/demo/final) giving --extra-k of the K responses"
    )
    ap.add_argument("--extra-k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rl-steps", type=int, default=0, help="override train.steps of the GRPO stage")
    args = ap.parse_args()
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    rlft = str(REPO / ".venv" / "bin" / "rlft")
    candidates, rankings = out / "candidates.jsonl", out / "rankings.jsonl"
    if not candidates.exists():
        rows = demo_prompts(args.prompts, args.seed)
        sample_responses(BASE, rows, args.k, candidates, args.max_new_tokens, args.seed)
    if args.extra_policy:
        candidates = mixed_candidates(candidates, args)
    if not rankings.exists():
        make_rankings(candidates, rankings, args.noise, args.seed)
    if not (out / "rm" / "final").exists():
        run(
            [
                rlft,
                "rm",
                "--config",
                "configs/rlhf_rm.yaml",
                f"data.path={rankings}",
                f"output_dir={out / 'rm'}",
                "resume=true",
            ]
        )
    rm_summary = json.loads((out / "rm" / "summary.json").read_text())
    kinds = out / "rm_pair_kinds.json"
    if not kinds.exists():
        import yaml

        fraction = yaml.safe_load((REPO / "configs" / "rlhf_rm.yaml").read_text())["data"]
        by_kind = accuracy_by_pair_kind(rankings, out / "rm" / "final", fraction["heldout_fraction"])
        kinds.write_text(json.dumps(by_kind, indent=1))
    print("[rm] held-out pair accuracy by kind:", kinds.read_text())
    if not (out / "grpo" / "final").exists():
        extra = [f"train.steps={args.rl_steps}"] if args.rl_steps else []
        run(
            [
                rlft,
                "rl",
                "--config",
                str(grpo_config(out)),
                f"output_dir={out / 'grpo'}",
                "resume=true",
                *extra,
            ]
        )
    curves = plot_curves(out / "grpo" / "metrics.jsonl", out / "curves.png")
    report = {
        "rm_heldout": rm_summary["heldout"],
        "rm_by_pair_kind": json.loads(kinds.read_text()),
        "grpo": curves,
    }
    report["verdict"] = verdict(curves)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
