"""Trace distillation data (the DeepSeek-R1 recipe, DeepSeek-AI 2025, sec. 2.3.3 and 2.4: sample
the teacher several times per prompt, keep only verified-correct samples by rejection sampling,
fine-tune the student on them): teacher samples -> verifier -> SFT rows in a JSONL file.

Also `run_distill`, the entry point of `rlft distill` for every mode (traces here; offline and
on_policy in rlft.train.distill_logits)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlft.config.loader import ConfigError, to_yaml
from rlft.data.prompts import PromptFormat, PromptFormatLike, chat_text, load_train_rows
from rlft.data.rows import DataError
from rlft.dist.ranks import init_distributed, main_first
from rlft.rewards.registry import resolve_reward
from rlft.rollout.base import SamplingParams
from rlft.rollout.factory import make_generator
from rlft.runtime.atomic_fs import fsync_dir
from rlft.runtime.seeding import seed_everything

log = logging.getLogger(__name__)
Verifier = Callable[[str, str, Mapping[str, Any]], float]


def select_traces(
    completions: Sequence[str],
    scores: Sequence[float],
    finished: Sequence[bool],
    keep_per_prompt: int,
    threshold: float,
    drop_truncated: bool = True,
) -> list[int]:
    """Indices (in sampling order) of one prompt's samples to keep: score >= threshold, finished
    (when drop_truncated), the first of each distinct completion text, at most keep_per_prompt."""
    kept: list[int] = []
    seen: set[str] = set()
    for i, (text, score, done) in enumerate(zip(completions, scores, finished, strict=True)):
        if len(kept) >= keep_per_prompt:
            break
        if score >= threshold and (done or not drop_truncated) and text not in seen:
            kept.append(i)
            seen.add(text)
    return kept


def sample_teacher(
    model: Any,
    tok: Any,
    rows: Sequence[Mapping[str, Any]],
    n_samples: int,
    params: SamplingParams,
    batch_size: int = 64,
    prompt_field: str = "prompt",
    system_prompt: PromptFormatLike = None,
) -> Iterator[tuple[Mapping[str, Any], str, list[str], list[bool]]]:
    """Per row, in order: (row, prompt chat text, n_samples decoded completions, finished flags).
    Generates a few generate calls' worth of prompts at a time."""
    generator = make_generator("hf", model.eval(), tok, batch_size)
    chunk = max(1, batch_size // n_samples) * 4
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        texts = [chat_text(tok, row[prompt_field], system_prompt) for row in part]
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        gens = generator.generate(ids, params, samples_per_prompt=n_samples)  # prompt-major
        decoded = tok.batch_decode(gens.response_ids, skip_special_tokens=True)
        for j, (row, text) in enumerate(zip(part, texts, strict=True)):
            span = slice(j * n_samples, (j + 1) * n_samples)
            yield row, text, decoded[span], list(gens.finished[span])
        log.info("traces: %d / %d prompts sampled", min(start + chunk, len(rows)), len(rows))


def trace_row(row: Mapping[str, Any], prompt_field: str, completion: str) -> dict[str, Any]:
    """An SFT row: the row's own fields (bookkeeping `_` fields dropped), its prompt as given
    (string or messages) under "prompt", and the completion."""
    out = {k: v for k, v in row.items() if not k.startswith("_") and k != prompt_field}
    return {"prompt": row[prompt_field], "completion": completion, **out}


def make_traces(
    teacher: Any,
    rows: Sequence[Mapping[str, Any]],
    n_samples: int,
    verifier: str | Verifier,
    params: SamplingParams,
    out_jsonl: str | Path,
    keep_per_prompt: int = 1,
    threshold: float = 1.0,
    drop_truncated: bool = True,
    batch_size: int = 64,
    prompt_field: str = "prompt",
    system_prompt: PromptFormatLike = None,
    dtype: str = "float32",
    device: str = "auto",
) -> dict[str, float]:
    """Sample the teacher (a path / alias, or a (model, tokenizer) pair) n_samples times per row,
    score each sample with `verifier(prompt_text, completion, row)` (a reward fn or its name), keep
    the accepted ones (`select_traces`) and write them as SFT rows to out_jsonl atomically (a temp
    file renamed into place). Sampling uses torch's global RNG: seed it first.

    Returns prompts, samples, kept, kept_fraction (kept / samples), prompts_with_kept, truncated.
    """
    if n_samples < 1 or keep_per_prompt < 1:
        raise ValueError(f"n_samples and keep_per_prompt must be >= 1, got {n_samples}, {keep_per_prompt}")
    model, tok = _teacher(teacher, dtype, device)
    fn = resolve_reward(verifier) if isinstance(verifier, str) else verifier
    stats = {"prompts": 0, "samples": 0, "kept": 0, "prompts_with_kept": 0, "truncated": 0}
    out = Path(out_jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{out.name}-", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            samples = sample_teacher(
                model, tok, rows, n_samples, params, batch_size, prompt_field, system_prompt
            )
            for row, text, completions, finished in samples:
                scores = [float(fn(text, c, row)) for c in completions]
                kept = select_traces(
                    completions, scores, finished, keep_per_prompt, threshold, drop_truncated
                )
                for i in kept:
                    f.write(json.dumps(trace_row(row, prompt_field, completions[i])) + "\n")
                stats["prompts"] += 1
                stats["samples"] += len(completions)
                stats["kept"] += len(kept)
                stats["prompts_with_kept"] += bool(kept)
                stats["truncated"] += sum(not d for d in finished)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    result = {**stats, "kept_fraction": stats["kept"] / max(stats["samples"], 1)}
    log.info("traces: %s -> %s", json.dumps(result), out)
    return result


def _teacher(teacher: Any, dtype: str, device: str) -> tuple[Any, Any]:
    if isinstance(teacher, tuple):
        return teacher
    from rlft.models.load import load_causal_lm, load_tokenizer, resolve_device, resolve_model_path

    path = resolve_model_path(str(teacher))
    return load_causal_lm(path, dtype, resolve_device(device)), load_tokenizer(path)


def with_built_student(cfg: Any) -> Any:
    """cfg with student.path = output_dir/student-init, cut from the teacher (built once) when
    cfg.student_layers is set; cfg unchanged otherwise."""
    if not cfg.student_layers:
        return cfg
    from rlft.models.students import make_layer_subset_student

    spec = cfg.student_layers.strip()
    path = Path(cfg.output_dir) / "student-init"
    if not (path / "config.json").exists():
        model, tok = _teacher(cfg.teacher, cfg.student.dtype, cfg.student.device)
        layers = _layer_spec(spec, cfg, model, tok)
        make_layer_subset_student(model, layers, path, tokenizer=tok)
    return dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, path=str(path)))


def _layer_spec(spec: str, cfg: Any, model: Any, tok: Any) -> list[int] | str:
    """'every_other', 'auto' / 'auto:K' (the best contiguous block to drop, keeping K layers:
    default as many as every_other, scored on the teacher's greedy answers to 16 training
    prompts), or indices like '0,2,3'."""
    from rlft.models.students import best_block_layers, every_other_layer

    if spec == "every_other":
        return spec
    if spec == "auto" or spec.startswith("auto:"):
        n = model.config.num_hidden_layers
        keep = int(spec[5:]) if spec.startswith("auto:") and spec[5:].isdigit() else 0
        if spec != "auto" and not 0 < keep <= n:
            raise ConfigError(f"student_layers='{spec}': 'auto:K' needs 1 <= K <= {n}")
        ids, mask = _calibration_batch(cfg, model, tok)
        layers, scores = best_block_layers(model, ids, mask, keep or len(every_other_layer(n)))
        log.info("student: KL per dropped block start %s -> layers %s", json.dumps(scores), layers)
        return layers
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"student_layers='{spec}': use 'every_other', 'auto', 'auto:K' or indices like '0,2,3'"
        ) from None


def _calibration_batch(cfg: Any, model: Any, tok: Any, prompts: int = 16) -> tuple[Any, Any]:
    """The first `prompts` training prompts with the teacher's greedy answers, right-padded:
    (input_ids [B, L], attention_mask [B, L]) on the teacher's device."""
    from rlft.models.load import model_device
    from rlft.models.reward_model import right_pad

    rows = load_train_rows(cfg.data, cfg.seed, prompts)[:prompts]
    texts = [chat_text(tok, row[cfg.data.prompt_field], PromptFormat.of(cfg.data)) for row in rows]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    params = SamplingParams(cfg.traces.max_new_tokens, temperature=0.0)
    gens = make_generator("hf", model.eval(), tok, prompts).generate(ids, params)
    seqs = [p + r for p, r in zip(ids, gens.response_ids, strict=True)]
    input_ids, mask = right_pad(seqs, tok.pad_token_id)
    return input_ids.to(model_device(model)), mask.to(model_device(model))


def run_distill(cfg: Any) -> dict[str, Any]:
    """`rlft distill`: mode traces -> `run_traces`; offline / on_policy -> `train_logit_distill`."""
    init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    with main_first():  # several processes: rank 0 builds the student, the others then load it
        cfg = with_built_student(cfg)
    if cfg.mode == "traces":
        return run_traces(cfg)
    from rlft.train.distill_logits import train_logit_distill

    return train_logit_distill(cfg)


def run_traces(cfg: Any) -> dict[str, Any]:
    """Teacher traces (rejection-sampled) to a JSONL, then SFT of the student on them. With
    cfg.resume and the JSONL present, sampling is skipped and SFT resumes."""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "distill_config.yaml").write_text(to_yaml(cfg))
    path = Path(cfg.traces.path) if cfg.traces.path else out_dir / "traces.jsonl"
    stats_path = out_dir / "traces_stats.json"
    if cfg.resume and path.exists() and stats_path.exists():
        stats = json.loads(stats_path.read_text())
        log.info("traces: reusing %s (%s)", path, json.dumps(stats))
    else:
        seed_everything(cfg.seed)
        t, n = cfg.traces, cfg.data.num_prompts
        if not n and not cfg.data.path:
            raise ConfigError("mode=traces with the built-in prompt generator needs data.num_prompts > 0")
        rows = load_train_rows(cfg.data, cfg.seed, n)
        rows = rows[:n] if n else rows
        params = SamplingParams(t.max_new_tokens, t.temperature, t.top_p)
        stats = make_traces(
            cfg.teacher, rows, t.n_samples, t.verifier, params, path, t.keep_per_prompt, t.threshold,
            t.drop_truncated, t.generation_batch_size, cfg.data.prompt_field, PromptFormat.of(cfg.data),
            cfg.student.dtype, cfg.student.device,
        )  # fmt: skip
        stats_path.write_text(json.dumps(stats, indent=1))
    if stats["kept"] == 0:
        raise DataError(
            f"the verifier '{cfg.traces.verifier}' accepted none of the {stats['samples']} teacher "
            "samples: lower traces.threshold, raise traces.max_new_tokens / n_samples, or check the verifier"
        )
    sft_cfg = sft_config(cfg, path)
    if sft_cfg is None:
        return {"traces": stats, "traces_path": str(path), "steps": 0}
    from rlft.train.sft import train_sft

    return {**train_sft(sft_cfg), "traces": stats, "traces_path": str(path)}


def sft_config(cfg: Any, traces_path: Path) -> Any:
    """The SFT run on the traces (`rlft.train.sft.train_sft`'s config): same output_dir, seed,
    student, schedule and log settings; None when the SFT trainer is not available."""
    try:
        from rlft.config.sft import SFTConfig, SFTDataConfig, SFTTrainConfig
        from rlft.train.sft import train_sft  # noqa: F401
    except ImportError:
        log.warning("rlft.train.sft is not available: traces written, no SFT run")
        return None
    d, t = cfg.data, cfg.train
    data = SFTDataConfig(
        path=str(traces_path),
        prompt_field="prompt",
        completion_field="completion",
        system_prompt=d.system_prompt,
        max_length=d.max_length,
        heldout_fraction=d.heldout_fraction,
    )
    train = SFTTrainConfig(
        steps=t.steps,
        epochs=t.epochs,
        examples_per_step=t.prompts_per_step,
        microbatch_size=t.microbatch_size,
        save_every=t.save_every,
        keep_checkpoints=t.keep_checkpoints,
        eval_every=t.eval_every,
        optim=t.optim,
    )
    return SFTConfig(
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        resume=cfg.resume,
        model=cfg.student,
        data=data,
        train=train,
        log=cfg.log,
    )
