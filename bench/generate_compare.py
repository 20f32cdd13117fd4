"""Rollout speed: rlft's decode loop (rollout.backend=hf) against transformers' `generate`
(rollout.backend=hf_generate), and vLLM (rollout.backend=vllm) when asked, on workload W's first
prompts, same model, same sampling settings.

    .venv/bin/python bench/generate_compare.py                          # SmolLM2, CPU, W's 8 x 4
    python bench/generate_compare.py --model /tmp/m05 --device cuda     # a GPU, a bigger model
    python bench/generate_compare.py --backends hf,hf_generate,vllm     # where vLLM is installed

Each repeat runs both backends back to back (A, B, A, B, ...) from the same seed; printed: the
median seconds and generated tokens/s of each, and their ratio. Tokens = real response tokens
(through EOS), so a backend that stops rows early is not credited with padding.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def w_prompts(tok, n: int) -> list[list[int]]:
    """Token ids of workload W's first n prompts (configs/bench_w.yaml's data section)."""
    import tempfile

    from rlft.config.loader import load_config
    from rlft.config.rl import RLConfig
    from rlft.data.prompts import load_prompt_examples

    cfg = load_config(RLConfig, str(REPO / "configs" / "bench_w.yaml"), [])
    with tempfile.TemporaryDirectory() as tmp:
        examples, _ = load_prompt_examples(cfg.data, tok, cfg.data.max_prompt_tokens, cfg.seed, n, Path(tmp))
    return [ex.ids for ex in examples[:n]]


def time_backend(gen, ids, params, samples: int, seed: int) -> tuple[float, int]:
    import torch

    from rlft.telemetry.perf import sync_device

    torch.manual_seed(seed)
    sync_device()
    start = time.perf_counter()
    out = gen.generate(ids, params, samples)
    sync_device()
    return time.perf_counter() - start, sum(len(r) for r in out.response_ids)


class _Unfused:
    """rlft's loop on packed weights, each linear alone (no q/k/v, gate/up stacking)."""

    def __init__(self, model, tok, batch: int):
        from rlft.rollout.hf import HFGenerator

        self.inner = HFGenerator(model, tok, batch, packed=False)

    def generate(self, *args):
        from rlft.accel.packed import packed_linears

        with packed_linears(self.inner.model, fuse_siblings=False):
            return self.inner.generate(*args)


def _generator(name: str, model, tok, batch: int):
    """A rollout.backend value, `hf_aten`: rlft's loop without packed weights (aten's matmul), or
    `hf_unfused`: packed weights, no sibling stacking."""
    from rlft.rollout.base import make_generator
    from rlft.rollout.hf import HFGenerator

    if name == "hf_aten":
        return HFGenerator(model, tok, batch, packed=False)
    if name == "hf_unfused":
        return _Unfused(model, tok, batch)
    return make_generator(name, model, tok, batch)


def main() -> None:
    import torch

    from rlft.models.load import load_causal_lm, load_tokenizer, resolve_device, resolve_model_path
    from rlft.rollout.base import SamplingParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="hf,hf_generate", help="rollout.backend values, comma-separated")
    args = ap.parse_args()
    path, device = resolve_model_path(args.model), resolve_device(args.device)
    tok = load_tokenizer(path)
    model = load_causal_lm(path, args.dtype, device).eval()
    ids = w_prompts(tok, args.prompts)
    params = SamplingParams(args.max_new_tokens, temperature=1.0)
    batch = args.prompts * args.samples
    backends = {name: _generator(name, model, tok, batch) for name in args.backends.split(",")}
    threads = torch.get_num_threads()
    print(
        f"{args.model} on {device} ({args.dtype}, {threads} threads): {batch} x {args.max_new_tokens} tokens"
    )
    for gen in backends.values():  # warm-up
        time_backend(gen, ids[:1], SamplingParams(4, 1.0), 1, 0)
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in backends}
    for r in range(args.repeats):
        for name, gen in backends.items():
            runs[name].append(time_backend(gen, ids, params, args.samples, seed=r))
    rates = {}
    for name, rows in runs.items():
        seconds = statistics.median(s for s, _ in rows)
        rates[name] = statistics.median(n / s for s, n in rows)
        tokens = statistics.median(n for _, n in rows)
        print(f"  {name:24} median {seconds:7.2f} s  {rates[name]:8.1f} tokens/s  ({tokens:.0f} tokens)")
    if "hf_generate" in rates:
        for name, rate in rates.items():
            if name != "hf_generate":
                print(f"  {name} / hf_generate tokens/s: {rate / rates['hf_generate']:.2f}x")


if __name__ == "__main__":
    main()
