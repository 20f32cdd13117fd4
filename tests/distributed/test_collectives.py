"""rlft.dist.ranks's helpers on 2 ranks (torchrun, gloo), against values worked out by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from dist_support import HERE, REPO_ROOT

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("collectives")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(HERE / "collectives_script.py"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]


def test_sum_gradients_sums_every_bucket_and_treats_missing_grads_as_zero(results):
    # rank 0 grads [1,2] [1,2,3] [1]; rank 1 grads [2,4] [2,4,6] and none
    for r in results:
        assert r["grads"] == [[3.0, 6.0], [3.0, 6.0, 9.0], [1.0]]


def test_on_global_rows_sees_all_rows_and_returns_this_ranks(results):
    # all rows, rank 1's width 3 padding rank 0's row: [1,2,0] [3,0,1] [4,4,0]; total 15
    assert results[0]["shares"][0] == pytest.approx([1 / 15, 2 / 15])  # cut to rank 0's width 2
    assert results[1]["shares"][0] == pytest.approx([3 / 15, 0.0, 1 / 15])
    assert results[1]["shares"][1] == pytest.approx([4 / 15, 4 / 15, 0.0])
    assert [len(r["shares"]) for r in results] == [1, 2]


def test_reduce_metrics_mean_max_min_and_equal_values(results):
    # a: mean of 1 and 2; len_max / len_min: max / min of 5 and 10; same: 7 on both
    for r in results:
        assert r["metrics"] == {"a": 1.5, "len_max": 10.0, "len_min": 5.0, "same": 7.0}


def test_sum_over_ranks_and_rank_slice(results):
    for r in results:
        assert r["sums"] == {"x": 2.0, "only_rank1": 2.0}
    # 6 items: rank 0 takes 0..2, rank 1 takes 3..5
    assert [r["slice"] for r in results] == [[0, 3], [3, 6]]
