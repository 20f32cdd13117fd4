"""final/README.md, the model card: YAML front matter for a model hub (library, base model, tags,
datasets) and what a reader needs: base model, data, algorithm and its key settings, rewards,
held-out evaluation before and after, how to load the model, and the command and config that
made it. `card_info_from_config` builds the card's facts from any run's config (RL, SFT, DPO)
and its evaluation results; `write_model_card` renders them."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rlft.config.loader import to_yaml

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# the settings a reader looks for first, per kind of run (dotted config keys; None values are skipped)
KEY_SETTINGS = {
    "rl": (
        "algo.name",
        "train.steps",
        "rollout.prompts_per_step",
        "rollout.samples_per_prompt",
        "rollout.max_new_tokens",
        "rollout.temperature",
        "train.optim.lr",
        "train.optim.lr_schedule",
        "algo.kl_coef",
        "algo.kl_estimator",
        "algo.clip_eps_low",
        "algo.clip_eps_high",
        "algo.loss_agg",
        "algo.scale_rewards",
        "algo.epochs",
        "seed",
    ),
    "sft": (
        "train.steps",
        "train.epochs",
        "train.examples_per_step",
        "train.optim.lr",
        "train.optim.lr_schedule",
        "train.optim.warmup_steps",
        "data.max_length",
        "data.packing",
        "seed",
    ),
    "dpo": (
        "dpo.loss",
        "dpo.beta",
        "dpo.label_smoothing",
        "dpo.length_normalize",
        "train.steps",
        "train.epochs",
        "train.rankings_per_step",
        "train.optim.lr",
        "seed",
    ),
}
# held-out metrics shown per kind, and what they measure
EVAL_METRICS = {
    "rl": (("accuracy", "reward", "mean_response_tokens"), "greedy decoding on the held-out problems"),
    "sft": (("loss", "perplexity"), "token-mean cross entropy on the held-out assistant tokens"),
    "dpo": (
        ("loss", "rewards_accuracy", "rewards_margin"),
        "preference loss and implicit-reward accuracy on the held-out rankings",
    ),
}


def run_kind(cfg: Any) -> str:
    """rl, dpo or sft, from the config's sections."""
    if hasattr(cfg, "rollout"):
        return "rl"
    return "dpo" if hasattr(cfg, "dpo") else "sft"


def is_hub_id(name: str) -> bool:
    """`org/name` that is not a local path: a hub repository id."""
    return bool(name) and HUB_ID.match(name) is not None and not Path(name).exists()


def command_line() -> str | None:
    """The `rlft ...` command of this process, None when it is not the CLI (the Python API)."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog == "rlft" or sys.argv[0].endswith(("rlft/__main__.py", "rlft/cli/main.py")):
        return shlex.join(["rlft", *sys.argv[1:]])
    return None


def _setting(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def _data_info(cfg: Any, rows: int | None) -> dict[str, Any]:
    d = cfg.data
    path = d.path
    if not path:
        source = f"built-in `{getattr(d, 'builtin', '')}` task (rlft.data)"
    elif is_hub_id(path):
        source = f"hub dataset `{path}`" + (f" ({d.config})" if getattr(d, "config", "") else "")
    else:
        source = f"`{path}`"
    ev = getattr(cfg, "eval", None)
    held = getattr(ev, "heldout_fraction", 0.0) if path and not getattr(ev, "path", "") else 0.0
    return {
        "source": source,
        "hub_id": path if is_hub_id(path) else None,
        "split": getattr(d, "split", "") if path else "",
        "rows": rows,
        "heldout_fraction": held,
    }


def _rewards(cfg: Any) -> list[dict[str, Any]]:
    from rlft.rewards.registry import reward_name

    out = []
    for spec in getattr(cfg, "rewards", []):
        name = spec.name or ("reward_model" if spec.model else reward_name(spec.fn))
        source = f"reward model {', '.join(spec.model)}" if spec.model else spec.fn
        out.append({"name": name, "weight": spec.weight, "fn": source})
    return out


def _eval_info(kind: str, eval_results: Mapping[str, Any]) -> dict[str, Any]:
    keys, what = EVAL_METRICS[kind]
    info: dict[str, Any] = {"what": what}
    for side in ("before", "after"):
        res = eval_results.get(side) or {}
        info[side] = {k: res[k] for k in keys if isinstance(res.get(k), (int, float))}
        info[f"{side}_label"] = eval_results.get(f"{side}_label", f"{side} training")
    info["metrics"] = [k for k in keys if k in info["before"] or k in info["after"]]
    info["n"] = (eval_results.get("after") or eval_results.get("before") or {}).get("n")
    return info


def supervised_eval_results(out_dir: Path, results: Mapping[str, Any]) -> dict[str, Any]:
    """Held-out results of a supervised run (SFT, DPO) for its card: the final evaluation
    (results["heldout"]) and, when an earlier one was logged, the first from metrics.jsonl."""
    from rlft.telemetry.metrics import read_jsonl_records

    out: dict[str, Any] = {"after": dict(results.get("heldout") or {})}
    out["after_label"] = f"step {results.get('steps')} (final)"
    logged = [
        r for r in read_jsonl_records(out_dir / "metrics.jsonl") if any(k.startswith("eval/") for k in r)
    ]
    if logged and logged[0].get("step") != results.get("steps"):
        out["before"] = {k[5:]: v for k, v in logged[0].items() if k.startswith("eval/")}
        out["before_label"] = f"step {logged[0].get('step')} (first evaluation)"
    return out


def card_info_from_config(
    cfg: Any, eval_results: Mapping[str, Any], rows: int | None = None, command: str | None = None
) -> dict[str, Any]:
    """The model card's facts from a run's config (RLConfig, SFTConfig or DPOConfig) and its
    held-out results: {"before": {...}, "after": {...}} with the kind's metrics (RL: accuracy
    and n; SFT: loss, perplexity; DPO: loss, rewards_accuracy, ...), optionally "before_label" /
    "after_label" (e.g. "step 5"). `rows`: training rows read; `command`: default this process's
    `rlft ...` command line."""
    kind = run_kind(cfg)
    m = cfg.model
    lora = {"rank": m.lora_rank, "alpha": m.lora_alpha, "targets": m.lora_targets} if m.lora_rank else None
    settings = {k: v for k in KEY_SETTINGS[kind] if (v := _setting(cfg, k)) is not None}
    return {
        "kind": kind,
        "algorithm": cfg.algo.name if kind == "rl" else cfg.dpo.loss if kind == "dpo" else kind,
        "base_model": m.path,
        "lora": lora,
        "adapter": bool(lora) and not cfg.save.merge_lora,
        "data": _data_info(cfg, rows),
        "settings": settings,
        "rewards": _rewards(cfg),
        "eval": _eval_info(kind, eval_results),
        "model_id": cfg.hub.model_id or None,
        "command": command or command_line(),
        "config": to_yaml(cfg),
    }


def front_matter(info: Mapping[str, Any]) -> str:
    meta: dict[str, Any] = {"library_name": "rlft"}
    if is_hub_id(info["base_model"]):
        meta["base_model"] = info["base_model"]
    tags = ["rlft", info["algorithm"]] + (["lora", "peft"] if info["lora"] else [])
    meta["tags"] = list(dict.fromkeys(tags))
    if info["data"]["hub_id"]:
        meta["datasets"] = [info["data"]["hub_id"]]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _number(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if metric.endswith("accuracy") else f"{value:.4g}"


def _eval_section(ev: Mapping[str, Any]) -> list[str]:
    if not ev["before"] and not ev["after"]:
        return ["No held-out evaluation ran (eval.after / eval_every off, or no held-out data)."]
    sides = [s for s in ("before", "after") if ev[s]]
    rows = [[m, *(_number(m, ev[s].get(m)) for s in sides)] for m in ev["metrics"]]
    n = f" (n = {ev['n']})" if ev.get("n") else ""
    return [
        f"{ev['what'].capitalize()}{n}.",
        "",
        *_table(["metric", *(ev[f"{s}_label"] for s in sides)], rows),
    ]


def _load_section(info: Mapping[str, Any], where: str) -> list[str]:
    if info["adapter"]:
        code = [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{where}")  # base model + this adapter',
            "model = model.merge_and_unload()  # optional: one plain model",
            f'tok = AutoTokenizer.from_pretrained("{where}")',
        ]
        note = (
            f"This is a LoRA adapter (PEFT) for `{info['base_model']}`, which is loaded first "
            "(adapter_config.json names it)."
        )
    else:
        code = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{where}")',
            f'tok = AutoTokenizer.from_pretrained("{where}")',
        ]
        note = "A complete model in Hugging Face format (safetensors)."
    evaluate = f"`rlft eval --model {where} --data <rows.jsonl>` evaluates it."
    return [note, "", "```python", *code, "```", "", evaluate]


def render_model_card(info: Mapping[str, Any], where: str) -> str:
    """The README.md text; `where` is how readers name the model (hub id or final/ directory)."""
    algo = info["algorithm"]
    lora = info["lora"]
    name = f"`{info['base_model']}`"
    base = name
    if lora:
        how = "saved as the adapter alone" if info["adapter"] else "merged into the weights"
        base += f", trained with LoRA (rank {lora['rank']}, alpha {lora['alpha']:g}, "
        base += f"{lora['targets']}; {how})"
    data = info["data"]
    data_lines = [f"- source: {data['source']}"]
    if data["split"]:
        data_lines.append(f"- split: {data['split']}")
    if data["rows"] is not None:
        data_lines.append(f"- rows: {data['rows']}")
    if data.get("heldout_fraction"):
        share = f"{data['heldout_fraction']:.0%}"
        data_lines.append(f"- {share} of the prompts held out for evaluation, never trained on")
    settings = [[f"`{k}`", f"`{v}`"] for k, v in info["settings"].items()]
    lines = [
        front_matter(info),
        f"# {info['model_id'] or where}",
        "",
        f"Fine-tuned from {name} with [rlft](https://pypi.org/project/rlft/) ({algo.upper()}).",
        "",
        "## Base model",
        "",
        base + ".",
        "",
        "## Data",
        "",
        *data_lines,
        "",
        "## Algorithm",
        "",
        f"{algo.upper()}; key settings (config keys):",
        "",
        *_table(["key", "value"], settings),
        "",
    ]
    if info["rewards"]:
        rows = [[r["name"], f"{r['weight']:g}", f"`{r['fn']}`"] for r in info["rewards"]]
        lines += [
            "## Rewards",
            "",
            "Summed with these weights:",
            "",
            *_table(["reward", "weight", "function"], rows),
            "",
        ]
    lines += ["## Held-out evaluation", "", *_eval_section(info["eval"]), ""]
    lines += ["## How to load it", "", *_load_section(info, where), ""]
    command = f"`{info['command']}`" if info["command"] else "the Python API (no command line)"
    lines += [
        "## How it was made",
        "",
        f"Command: {command}. The resolved config:",
        "",
        "<details><summary>config.yaml</summary>",
        "",
        "```yaml",
        info["config"].rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def write_model_card(final_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """final_dir/README.md from `info` (card_info_from_config); returns its path."""
    final_dir = Path(final_dir)
    where = info["model_id"] or str(final_dir)
    path = final_dir / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render_model_card(info, where), encoding="utf-8")
    tmp.replace(path)
    return path
