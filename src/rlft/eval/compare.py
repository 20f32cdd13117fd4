"""`rlft eval` over one or several models (HF ids, local dirs, `final/` or `checkpoints/step-N`):
each is evaluated on the same rows with the same seed, then compared side by side."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.data.prompts import PromptFormatLike
from rlft.eval.accuracy import eval_summary, evaluate_rows, write_eval_rows
from rlft.rewards.scoring import RewardTerm
from rlft.runtime.checkpoint import COMPLETE, STEP_DIR, TRAINABLE, complete_checkpoints


@dataclass(frozen=True)
class EvalOptions:
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    system_prompt: PromptFormatLike = None  # a PromptFormat (chat template, kwargs) or a system prompt
    samples: int = 1
    max_new_tokens: int = 64
    temperature: float | None = None
    batch_size: int = 64
    k_values: tuple[int, ...] = ()
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    terms: tuple[RewardTerm, ...] = ()  # score with these rewards (empty: answer matching)
    pass_threshold: float = 1.0  # reward scoring: correct when the weighted total >= this
    group_by: str = ""  # a row field: accuracy per value of it as well


def check_model_dir(name: str) -> str:
    """The loadable path behind `name` (aliases resolved); a clear error for directories that
    `from_pretrained` cannot load: LoRA or incomplete checkpoints, run dirs, checkpoint roots."""
    from rlft.models.load import resolve_model_path

    path = Path(resolve_model_path(name))
    if not path.is_dir():
        return str(path)
    if STEP_DIR.match(path.name) and not (path / COMPLETE).exists():
        raise ValueError(f"--model {name}: incomplete checkpoint (no {COMPLETE} marker)")
    if (path / TRAINABLE).exists():
        raise ValueError(
            f"--model {name}: a LoRA checkpoint holds only the adapter weights; "
            "evaluate the run's final/ (adapters merged) instead"
        )
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():  # adapter: final/
        raise ValueError(f"--model {name}: no config.json, so not a model directory{_hint(path)}")
    if not (path / "tokenizer_config.json").exists():
        raise ValueError(f"--model {name}: no tokenizer files (tokenizer_config.json) next to the weights")
    return str(path)


def _hint(path: Path) -> str:
    if (path / "final" / "config.json").exists():
        return f"; did you mean {path / 'final'}?"
    steps = complete_checkpoints(path) or complete_checkpoints(path / "checkpoints")
    if steps:
        return f"; complete checkpoints inside: {', '.join(str(p) for _, p in steps)}"
    return ""


def evaluate_model(name: str, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> dict[str, Any]:
    """Load one model and evaluate it; the torch RNG is seeded with opts.seed first, so every model
    of a comparison samples from the same random stream."""
    import torch

    from rlft.models.load import load_causal_lm, load_tokenizer, resolve_device

    path = check_model_dir(name)
    tok = load_tokenizer(path)
    model = load_causal_lm(path, device=resolve_device(opts.device)).eval()
    torch.manual_seed(opts.seed)
    return evaluate_rows(
        model,
        tok,
        rows,
        prompt_field=opts.prompt_field,
        answer_field=opts.answer_field,
        system_prompt=opts.system_prompt,
        samples=opts.samples,
        max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature,
        batch_size=opts.batch_size,
        k_values=opts.k_values,
        progress=opts.progress,
        terms=opts.terms or None,
        pass_threshold=opts.pass_threshold,
        group_by=opts.group_by,
    )


def evaluate_models(
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    opts: EvalOptions,
    report: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """name -> evaluate_rows result, in the order given; `report` gets each model's summary line."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--model given more than once: {', '.join(repeated)}")
    results = {}
    for name in names:
        results[name] = evaluate_model(name, rows, opts)
        report(summary_line(name, results[name]))
    return results


def summary_line(name: str, res: Mapping[str, Any]) -> str:
    """`model NAME: accuracy A  pass@1 ..  pass@K P  maj@K M  n=N  mean tokens L` (one model);
    under reward scoring `reward R` instead of maj@K."""
    k = res["k"]
    extra = "".join(f"  {key} {res[key]:.4f}" for key in _extra_pass_keys(res))
    last = f"maj@{k} {res['maj@k']:.4f}" if res.get("maj@k") is not None else f"reward {res['reward']:.4f}"
    groups = "".join(f"  {key[len('accuracy/') :]} {v:.4f}" for key, v in group_items(res))
    return (
        f"model {name}: accuracy {res['accuracy']:.4f}{extra}  pass@{k} {res['pass@k']:.4f}  "
        f"{last}  n={res['n']}  mean tokens {res['mean_response_tokens']:.1f}{groups}"
    )


def group_items(res: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The per-group accuracies (`accuracy/<field>=<value>`) of an evaluation, sorted."""
    return sorted((k, v) for k, v in res.items() if k.startswith("accuracy/"))


def _extra_pass_keys(res: Mapping[str, Any]) -> list[str]:
    """pass@j keys other than pass@K itself, in increasing j."""
    k = str(res["k"])
    return [key for key in eval_summary(res) if key.startswith("pass@") and key[5:] not in ("k", k)]


def comparison_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model: accuracy, every pass@j, pass@K, maj@K (reward scoring: the mean reward),
    mean response tokens, n."""
    first = next(iter(results.values()))
    k = first["k"]
    metric_cols = [("accuracy", "accuracy"), *((key, key) for key in _extra_pass_keys(first))]
    last = ("maj@k", f"maj@{k}") if first.get("maj@k") is not None else ("reward", "reward")
    metric_cols += [
        ("pass@k", f"pass@{k}"),
        last,
        *((key, key[len("accuracy/") :]) for key, _ in group_items(first)),
    ]
    width = max(len("model"), *(len(n) for n in results))
    header = f"{'model':<{width}}" + "".join(f"  {title:>8}" for _, title in metric_cols)
    header += f"  {'mean_tokens':>11}  {'n':>5}"
    lines = [header]
    for name, res in results.items():
        cells = "".join(f"  {res[key]:>8.4f}" for key, _ in metric_cols)
        lines.append(f"{name:<{width}}{cells}  {res['mean_response_tokens']:>11.1f}  {res['n']:>5}")
    return "\n".join(lines)


def rows_path_for(rows_out: str, name: str, several: bool) -> str:
    """rows_out itself for one model; for several, `stem.<model name as a file name>.jsonl`."""
    if not several:
        return rows_out
    out = Path(rows_out)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/")).strip("_") or "model"
    return str(out.with_name(f"{out.stem}.{slug}{out.suffix or '.jsonl'}"))


def write_outputs(
    results: Mapping[str, Mapping[str, Any]], json_out: str | None, rows_out: str | None
) -> list[str]:
    """JSON summary (`eval_summary` for one model, {"models": {name: summary}} for
    several) and per-row JSONL files; returns the row files written."""
    several = len(results) > 1
    if json_out:
        if several:
            payload: dict[str, Any] = {"models": {n: eval_summary(r) for n, r in results.items()}}
        else:
            payload = eval_summary(next(iter(results.values())))
        Path(json_out).write_text(json.dumps(payload, indent=1))
    written = []
    if rows_out:
        for name, res in results.items():
            written.append(rows_path_for(rows_out, name, several))
            write_eval_rows(res, written[-1])
    return written
