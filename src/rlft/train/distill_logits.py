"""Logit distillation between models that share a tokenizer (`rlft distill`, modes offline and
on_policy): the student matches the teacher's next-token distribution at every completion token.

- offline: on given prompt/completion rows (e.g. the traces of mode=traces): word-level KD
  (Hinton et al. 2015; Kim & Rush 2016) with the chosen divergence.
- on_policy: each step the student samples completions for a batch of prompts, the teacher scores
  the same tokens, and the loss is the divergence on those student-generated tokens (GKD with
  student-data fraction lambda = 1, Agarwal et al. 2024, Algorithm 1).

Loss = sum of the per-token divergence over the step's completion tokens / their count (the
global token count of the step, so microbatching equals one big batch). The step loop is
`rlft.train.supervised.run_supervised_loop` (checkpoints, resume, graceful stop, final save).
Under dist.strategy=fsdp2 the frozen teacher is sharded too; the student samples with its whole
parameters gathered (rlft.dist.sharding.FullParamsGenerator); every rank runs as many forward passes
(each holds as many sequences per step, and the same held-out prompts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlft.accel.onednn import onednn_for
from rlft.algorithms.distill import (
    forward_kl,
    reverse_kl,
    token_divergence,
    token_level_reverse_kl_from_samples,
)
from rlft.config.distill import DistillConfig
from rlft.data.preferences import as_response, chat_messages, encode_conversation, prompt_key
from rlft.data.prompts import PromptFormat, encode_prompts, load_eval_rows, load_train_rows
from rlft.data.rows import DataError, require_fields
from rlft.dist.ranks import global_sum, init_distributed
from rlft.dist.sharding import is_sharded, prepare_model
from rlft.models.load import add_lora, load_causal_lm, load_tokenizer, resolve_device, resolve_model_path
from rlft.models.logprobs import response_logits
from rlft.ops import gather_logprobs
from rlft.rollout.assemble import pack_prompt_response
from rlft.rollout.base import SamplingParams
from rlft.rollout.factory import make_generator
from rlft.rollout.sharded import FullParamsGenerator
from rlft.runtime.seeding import seed_everything
from rlft.train.supervised import check_processes, run_supervised_loop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillExample:
    prompt_ids: tuple[int, ...]  # the prompt after the chat template
    response_ids: tuple[int, ...]  # offline: the completion through its EOS; on_policy: empty


@dataclass
class Models:
    student: Any
    teacher: Any
    tok: Any
    vocab: int  # logits compared over the first `vocab` entries (padded embedding rows beyond)


def load_models(cfg: DistillConfig) -> Models:
    """Student (trainable, maybe LoRA) and teacher (eval, frozen); their tokenizers must agree."""
    s_path, t_path = resolve_model_path(cfg.student.path), resolve_model_path(cfg.teacher)
    tok, t_tok = load_tokenizer(s_path), load_tokenizer(t_path)
    if tok.get_vocab() != t_tok.get_vocab():
        raise ValueError(f"student {s_path} and teacher {t_path} have different tokenizers (vocabularies)")
    kw = {"device": resolve_device(cfg.student.device), "trust_remote_code": cfg.student.trust_remote_code}
    student = load_causal_lm(s_path, cfg.student.dtype, **kw)
    teacher = load_causal_lm(t_path, cfg.student.dtype, **kw).eval().requires_grad_(False)
    vocab = min(student.config.vocab_size, teacher.config.vocab_size)
    if vocab < len(tok):  # sizes may differ only by padding rows no token maps to (e.g. Qwen2.5)
        raise ValueError(
            f"student vocab_size {student.config.vocab_size} / teacher {teacher.config.vocab_size}: "
            f"both must cover the tokenizer's {len(tok)} tokens"
        )
    if cfg.student.gradient_checkpointing:
        student.gradient_checkpointing_enable()
    if cfg.student.lora_rank > 0:
        student = add_lora(student, cfg.student.lora_rank, cfg.student.lora_alpha, cfg.student.lora_targets)
    return Models(student, teacher, tok, vocab)


def encode_completion_rows(tok: Any, rows: Sequence[dict[str, Any]], data: Any) -> list[DistillExample]:
    """Offline examples: prompt through the chat template, completion (a string, or TRL's
    conversational form: a list of assistant messages) as the assistant turn cut after its first
    EOS; rows with no prompt token or no completion token left are dropped."""
    out = []
    for row in rows:
        completion = row[data.completion_field]
        if isinstance(completion, list):
            completion = as_response(
                chat_messages(completion, row.get("_source", "?"), data.completion_field)
            )
        ids, n = encode_conversation(
            tok,
            row[data.prompt_field],
            completion if isinstance(completion, list) else str(completion),
            data.max_length,
            data.system_prompt,
        )
        response = ids[n:]
        if tok.eos_token_id in response:
            response = response[: response.index(tok.eos_token_id) + 1]
        if n > 0 and response:
            out.append(DistillExample(tuple(ids[:n]), tuple(response)))
    if len(out) < len(rows):
        log.warning("distill: %d row(s) had no prompt or completion token left", len(rows) - len(out))
    return out


def split_rows(rows: list[dict[str, Any]], data: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train / held-out rows by a hash of the prompt (a prompt's rows all land on one side)."""
    train, held = [], []
    for row in rows:
        u = int(prompt_key(row[data.prompt_field])[:8], 16) / 0xFFFFFFFF
        (held if u < data.heldout_fraction else train).append(row)
    return train, held[: data.heldout_size]


def load_examples(cfg: DistillConfig, tok: Any) -> tuple[list[DistillExample], list[DistillExample]]:
    """Training and held-out examples: offline, prompt/completion rows of data.path split by
    prompt hash; on_policy, prompts (held out: by prompt hash, or the built-in task's own split)."""
    data = cfg.data
    if cfg.mode == "offline" and not data.path:
        raise DataError("mode=offline needs data.path: prompt/completion rows (e.g. mode=traces output)")
    needed = data.num_prompts or max(cfg.train.steps * cfg.train.prompts_per_step, 1)
    rows = load_train_rows(data, cfg.seed, needed)
    rows = rows[: data.num_prompts] if data.num_prompts else rows
    if cfg.mode == "offline":
        require_fields(rows, [data.completion_field])
        train, held = split_rows(rows, data)
        return encode_completion_rows(tok, train, data), encode_completion_rows(tok, held, data)
    if data.path:
        rows, held = split_rows(rows, data)
    else:
        held = load_eval_rows("", data, data.heldout_size) if data.heldout_fraction > 0 else []
    return encode_prompt_rows(tok, rows, data), encode_prompt_rows(tok, held, data)


def encode_prompt_rows(tok: Any, rows: Sequence[dict[str, Any]], data: Any) -> list[DistillExample]:
    """On-policy examples: prompts only (the student writes the completions)."""
    if not rows:
        return []
    args = (data.prompt_field, PromptFormat.of(data), data.max_prompt_tokens, data.overlong_prompts)
    return [DistillExample(tuple(ex.ids), ()) for ex in encode_prompts(rows, tok, *args)[0]]


def divergence_sums(
    m: Models, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], cfg: DistillConfig
) -> dict[str, torch.Tensor]:
    """Summed per-token losses of one microbatch: "loss" (the configured divergence, with grad),
    and under no_grad "forward_kl", "reverse_kl" (at temperature 1), "logprob_gap"
    (log p_s(y) - log p_t(y) of the response tokens: on_policy, the sampled estimate of the
    reverse KL) and "tokens"."""
    input_ids, attention_mask, mask = pack_prompt_response(prompts, responses, m.tok.pad_token_id)
    device = next(m.student.parameters()).device
    input_ids, attention_mask, mask = input_ids.to(device), attention_mask.to(device), mask.to(device)
    t = mask.shape[1]
    s_logits = response_logits(m.student, input_ids, attention_mask, t)[..., : m.vocab]
    with torch.no_grad():
        t_logits = response_logits(m.teacher, input_ids, attention_mask, t)[..., : m.vocab]
    loss = token_divergence(cfg.loss, s_logits, t_logits, mask, cfg.temperature, cfg.jsd_beta)
    with torch.no_grad():
        s_logits = s_logits.detach()
        targets = input_ids[:, -t:]
        gap = token_level_reverse_kl_from_samples(
            gather_logprobs(s_logits, targets), gather_logprobs(t_logits, targets), mask
        )
        stats = {
            "forward_kl": forward_kl(s_logits, t_logits, mask).sum(),
            "reverse_kl": reverse_kl(s_logits, t_logits, mask).sum(),
            "logprob_gap": gap.sum(),
            "tokens": mask.sum(),
        }
    return {"loss": loss.sum(), **stats}


def sample_responses(m: Models, prompts: Sequence[Sequence[int]], cfg: DistillConfig, greedy: bool) -> list:
    """Student completions, one per prompt (`on_policy.samples_per_prompt` per prompt, prompt-major,
    when sampling); each through its EOS or max_new_tokens."""
    p = cfg.on_policy
    params = SamplingParams(p.max_new_tokens, 0.0 if greedy else p.temperature, p.top_p, p.top_k)
    generator = make_generator("hf", m.student, m.tok, p.generation_batch_size)
    if is_sharded(m.student):
        generator = FullParamsGenerator(generator, m.student)
    n = 1 if greedy else p.samples_per_prompt
    gens = generator.generate(prompts, params, samples_per_prompt=n)
    return [r if r else [m.tok.eos_token_id] for r in gens.response_ids]  # never an empty response


def batch_pairs(m: Models, batch: Sequence[DistillExample], cfg: DistillConfig, greedy: bool = False):
    """(prompt ids, response ids) per sequence: the given completions, or fresh student samples."""
    prompts = [ex.prompt_ids for ex in batch]
    if cfg.mode != "on_policy":
        return prompts, [ex.response_ids for ex in batch]
    responses = sample_responses(m, prompts, cfg, greedy)
    repeat = len(responses) // len(prompts)
    return [p for p in prompts for _ in range(repeat)], responses


def backward_token_mean(m: Models, prompts: list, responses: list, cfg: DistillConfig) -> dict[str, float]:
    """Accumulate grad of (sum of the divergence over the step's response tokens, of every rank)
    / (their count); metrics over every rank's tokens."""
    n_tokens = global_sum(sum(len(r) for r in responses))
    mb = cfg.train.microbatch_size
    sums: dict[str, float] = {}
    for i in range(0, len(prompts), mb):
        part = divergence_sums(m, prompts[i : i + mb], responses[i : i + mb], cfg)
        (part["loss"] / n_tokens).backward()
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    names = ("forward_kl", "reverse_kl", "logprob_gap")
    metrics = {f"distill/{k}": global_sum(sums[k]) / n_tokens for k in names}
    metrics.update({"loss/distill": global_sum(sums["loss"]) / n_tokens, "distill/tokens": n_tokens})
    metrics["rollout/response_len"] = n_tokens / global_sum(len(responses))
    return metrics


@torch.no_grad()
def heldout_divergence(m: Models, examples: Sequence[DistillExample], cfg: DistillConfig) -> dict[str, float]:
    """Token-mean divergences over held-out completions (on_policy: the student's greedy ones):
    "loss" (the configured divergence), "forward_kl", "reverse_kl", and "tokens"."""
    was_training = m.student.training
    m.student.eval()
    prompts, responses = batch_pairs(m, examples, cfg, greedy=True)
    sums: dict[str, float] = {}
    mb = cfg.train.microbatch_size
    for i in range(0, len(prompts), mb):
        for k, v in divergence_sums(m, prompts[i : i + mb], responses[i : i + mb], cfg).items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    m.student.train(was_training)
    n = max(sums.get("tokens", 0.0), 1.0)
    return {
        "loss": sums["loss"] / n,
        "forward_kl": sums["forward_kl"] / n,
        "reverse_kl": sums["reverse_kl"] / n,
        "tokens": n,
    }


def train_logit_distill(cfg: DistillConfig) -> dict[str, Any]:
    """Train as configured (mode offline or on_policy); returns the run summary: held-out
    divergences before training ("heldout_before") and after ("heldout")."""
    if cfg.mode not in ("offline", "on_policy"):
        raise ValueError(f"train_logit_distill runs mode offline or on_policy, not '{cfg.mode}'")
    seed_everything(cfg.seed)
    m = load_models(cfg)
    init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    check_processes(cfg, cfg.train.prompts_per_step, m.student)  # before the held-out pass below
    m.teacher = prepare_model(m.teacher, cfg.dist.strategy, trainable=False)
    train, held = load_examples(cfg, m.tok)
    if not train:
        raise DataError("no training examples left (check data.path, heldout_fraction, max_length)")
    log.info("distill (%s, %s): %d training examples, %d held out", cfg.mode, cfg.loss, len(train), len(held))
    with onednn_for(cfg, m.student, m.teacher):  # as the loop's evaluations run
        before = heldout_divergence(m, held, cfg) if held else {}

    def backward(batch: list[DistillExample], n_items: int) -> dict[str, float]:
        prompts, responses = batch_pairs(m, batch, cfg)
        return backward_token_mean(m, prompts, responses, cfg)

    def evaluate(examples: Sequence[DistillExample]) -> dict[str, float]:
        return heldout_divergence(m, examples, cfg)

    return run_supervised_loop(
        cfg,
        m.student,
        m.tok,
        train,
        held,
        backward,
        evaluate,
        f"distill-{cfg.mode}",
        cfg.train.prompts_per_step,
        summary_extra={"heldout_before": before},
        other_models=(m.teacher,),
    )
