"""W's policy update (forward + backward of the logprobs of 8 prompts x 4 responses) timed A/B in one
process: the working tree's `rlft.models.logprobs` against another version of that file, steps interleaved
(A, B, B, A, ...), so a noisy machine slows both alike. On these shared 2-core machines identical
runs differ by ~10%, and `rlft bench` alone cannot show a 5-10% change; this can.

    git show HEAD~1:src/rlft/models/logprobs.py > /tmp/forward_before.py
    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python bench/update_ab.py --other /tmp/forward_before.py

The other file is imported with the rest of the package as it is now (rlft.ops, rlft.models.load...).
Batch: W's shape with random tokens: 8 prompts of 41 tokens, 4 responses each, lengths drawn
uniformly in 12..64 (mean ~38, like W's), the update's call (entropy on, shared prompts, buckets).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time


def w_shaped_batch(vocab: int, seed: int = 1):
    """(input_ids [32, 105], attention_mask, T = 64): 8 distinct prompts x 4 random responses."""
    import torch

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(100, vocab, (8, 41), generator=g).repeat_interleave(4, 0)
    responses = torch.randint(100, vocab, (32, 64), generator=g)
    mask = torch.ones(32, 41 + 64, dtype=torch.long)
    for row, n in enumerate(torch.randint(12, 65, (32,), generator=g).tolist()):
        responses[row, n:], mask[row, 41 + n :] = 0, 0
    return torch.cat([prompts, responses], 1), mask, 64


def main() -> None:
    import rlft.models.logprobs
    from rlft.accel.onednn import onednn_linears
    from rlft.models.load import load_causal_lm, resolve_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", required=True, help="another version of src/rlft/models/logprobs.py")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--buckets", type=int, default=4, help="train.length_buckets")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("forward_other", args.other)
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    model = load_causal_lm(resolve_model_path(args.model)).train()
    ids, mask, t = w_shaped_batch(model.config.vocab_size)

    def step(module) -> float:
        start = time.perf_counter()
        logprobs, _ = module.response_logprobs(model, ids, mask, t, True, True, args.buckets)
        (logprobs * mask[:, -t:]).sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    versions = {"working tree": rlft.models.logprobs, args.other: other}
    times: dict[str, list[float]] = {name: [] for name in versions}
    with onednn_linears(model):
        for module in versions.values():
            step(module)  # warm-up
        for i in range(args.pairs):
            for name in list(versions) if i % 2 == 0 else list(versions)[::-1]:
                times[name].append(step(versions[name]))
    print(f"W's update, {int(mask[:, -t:].sum())} response tokens, {args.pairs} interleaved pairs:")
    for name, seconds in times.items():
        print(f"  {name:<40} median {statistics.median(seconds):6.3f} s  min {min(seconds):6.3f} s")
    wins = sum(a < b for a, b in zip(*times.values(), strict=True))
    print(f"  working tree faster in {wins} of {args.pairs} pairs")


if __name__ == "__main__":
    main()
