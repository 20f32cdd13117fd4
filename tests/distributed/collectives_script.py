"""Run by test_collectives.py under torchrun (2 ranks): applies rlft.dist.ranks's helpers to
small rank-dependent inputs and writes what each rank got to OUT/rank-<r>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from rlft.dist.ranks import (
    init_distributed,
    on_global_rows,
    rank,
    rank_slice,
    reduce_metrics,
    sum_gradients,
    sum_over_ranks,
)


def main(out: Path) -> None:
    init_distributed("gloo", 60)
    r = rank()
    # parameters of 2, 3 and 1 elements; rank r's grads are (r + 1) * [1, 2, ...]; buckets of 3
    # elements split them [2, 3] | [1]; the third grad is missing on rank 1 (counts as zeros)
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (2, 3, 1)]
    for i, p in enumerate(params):
        if not (r == 1 and i == 2):
            p.grad = (r + 1) * torch.arange(1.0, p.numel() + 1)
    sum_gradients(params, bucket_numel=3)
    # rank 0 holds 1 row of width 2, rank 1 holds 2 rows of width 3; fn = row sums / grand total
    rows = torch.tensor([[1.0, 2.0]]) if r == 0 else torch.tensor([[3.0, 0.0, 1.0], [4.0, 4.0, 0.0]])
    shares = on_global_rows(lambda x: x / x.sum(), rows)
    metrics = reduce_metrics({"a": 1.0 + r, "len_max": 5.0 * (r + 1), "len_min": 5.0 * (r + 1), "same": 7.0})
    result = {
        "grads": [p.grad.tolist() for p in params],
        "shares": shares.tolist(),
        "metrics": metrics,
        "sums": sum_over_ranks({"x": 1.0, **({"only_rank1": 2.0} if r == 1 else {})}),
        "slice": [rank_slice(6, "items").start, rank_slice(6, "items").stop],
    }
    (out / f"rank-{r}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
