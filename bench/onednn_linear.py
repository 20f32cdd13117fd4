"""aten's fp32 matmul (MKL) against oneDNN's on the linear layers of SmolLM2-135M, side by side
in one process: the evidence for rlft.onednn. Weights are 30 layers' worth of distinct matrices,
cycled, so decode rows read them from memory as a real decode step does.

    OMP_NUM_THREADS=2 .venv/bin/python bench/onednn_linear.py

Prints GFLOP/s per engine for decode batches (rows = sequences decoded together) and for a
training-sized forward (rows = tokens of a W microbatch).
"""

from __future__ import annotations

import time

import torch
from torch.nn.functional import linear

from rlft.onednn import onednn_matmul, pack_linear

# [out, in] of one SmolLM2-135M layer: q, k, v, o, gate, up, down
LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
LM_HEAD = (49152, 576)


def _rate(fn, flops: float, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - start) / 1e9


def compare(rows: int, shapes: list[tuple[int, int]]) -> dict[str, float]:
    weights = [torch.randn(o, i) * 0.02 for o, i in shapes]
    inputs = {i: torch.randn(rows, i) for _, i in shapes}
    flops = sum(2.0 * rows * o * i for o, i in shapes)
    packed = [pack_linear(w, rows) for w in weights]

    def run(product, mats):
        return lambda: [product(inputs[w.shape[1]], m) for w, m in zip(weights, mats, strict=True)]

    return {
        "aten": _rate(run(linear, weights), flops),
        "onednn": _rate(run(onednn_matmul, weights), flops),
        "onednn packed": _rate(run(onednn_matmul, packed), flops),
    }


def main() -> None:
    print(f"fp32, {torch.get_num_threads()} threads; GFLOP/s (higher is better)")
    cases = [(f"decode, {n} rows, 30 layers", n, LAYER * 30) for n in (1, 4, 16, 32)]
    cases += [("decode, 32 rows, LM head", 32, [LM_HEAD]), ("forward, 2600 tokens, 1 layer", 2600, LAYER)]
    for name, rows, shapes in cases:
        rates = compare(rows, shapes)
        print(f"  {name:32} " + "  ".join(f"{k} {v:6.1f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
