"""aten's fp32 matmul (MKL) against oneDNN's on the linear layers of SmolLM2-135M, side by side
in one process: the evidence for rlft.accel.onednn. Weights are 30 layers' worth of distinct matrices,
cycled, so decode rows read them from memory as a real decode step does.

    OMP_NUM_THREADS=2 .venv/bin/python bench/onednn_linear.py

Prints GFLOP/s per engine for decode batches (rows = sequences decoded together) and for a
training-sized forward and backward (rows = tokens of a W microbatch); "packed+stacked" runs the decode
products with sibling weights stacked (q+k+v, gate+up) as rlft's decode does.
"""

from __future__ import annotations

import time

import torch
from torch.nn.functional import linear

from rlft.accel.onednn import onednn_matmul, pack_linear

# [out, in] of one SmolLM2-135M layer: q, k, v, o, gate, up, down
LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
# the same layer with siblings stacked (rlft.accel.onednn_siblings): q+k+v, o, gate+up, down
STACKED = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
LM_HEAD = (49152, 576)


def _rate(fn, flops: float, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - start) / 1e9


def compare(
    rows: int, shapes: list[tuple[int, int]], stacked: list[tuple[int, int]] | None
) -> dict[str, float]:
    """GFLOP/s of each engine over `shapes`; `stacked`: the same products with siblings stacked."""
    weights = [torch.randn(o, i) * 0.02 for o, i in shapes]
    inputs = {i: torch.randn(rows, i) for _, i in shapes}
    flops = sum(2.0 * rows * o * i for o, i in shapes)
    packed = [pack_linear(w, rows) for w in weights]

    def run(product, mats):
        mats = list(mats)  # (dense weight for its shape, the operand to multiply by)
        return lambda: [product(inputs[m.shape[1]], p) for m, p in mats]

    rates = {
        "aten": _rate(run(linear, zip(weights, weights, strict=True)), flops),
        "onednn": _rate(run(onednn_matmul, zip(weights, weights, strict=True)), flops),
        "onednn packed": _rate(run(onednn_matmul, zip(weights, packed, strict=True)), flops),
    }
    if stacked:
        dense = [torch.randn(o, i) * 0.02 for o, i in stacked]
        rates["packed+stacked"] = _rate(run(onednn_matmul, [(w, pack_linear(w, rows)) for w in dense]), flops)
    return rates


def compare_backward(rows: int, shapes: list[tuple[int, int]]) -> dict[str, float]:
    """GFLOP/s of a linear's two backward products: dL/dx = dy W and dL/dW = dy^T x."""
    weights = [torch.randn(o, i) * 0.02 for o, i in shapes]
    inputs = [torch.randn(rows, i) for _, i in shapes]
    grads = [torch.randn(rows, o) for o, _ in shapes]
    flops = sum(2.0 * rows * o * i for o, i in shapes)
    triples = list(zip(weights, inputs, grads, strict=True))
    return {
        "dL/dx aten": _rate(lambda: [dy @ w for w, _, dy in triples], flops),
        "oneDNN": _rate(lambda: [onednn_matmul(dy, w.t()) for w, _, dy in triples], flops),
        "dL/dW aten": _rate(lambda: [dy.t() @ x for _, x, dy in triples], flops),
        "oneDNN ": _rate(lambda: [onednn_matmul(dy.t(), x.t()) for _, x, dy in triples], flops),
    }


def main() -> None:
    print(f"fp32, {torch.get_num_threads()} threads; GFLOP/s (higher is better)")
    cases = [(f"decode, {n} rows, 30 layers", n, LAYER * 30, STACKED * 30) for n in (1, 4, 16, 32)]
    cases += [("decode, 32 rows, LM head", 32, [LM_HEAD], None)]
    cases += [("forward, 2600 tokens, 1 layer", 2600, LAYER, None)]
    for name, rows, shapes, stacked in cases:
        rates = compare(rows, shapes, stacked)
        print(f"  {name:32} " + "  ".join(f"{k} {v:6.1f}" for k, v in rates.items()))
    rates = compare_backward(2600, LAYER)
    print(f"  {'backward, 2600 tokens, 1 layer':32} " + "  ".join(f"{k} {v:6.1f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
