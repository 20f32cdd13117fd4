"""Where a process computes: `model.device` names and the process-group backend for its GPUs."""

from __future__ import annotations

import pytest
import torch

from rlft.config.loader import ConfigError
from rlft.dist.ranks import auto_backend
from rlft.models.load import resolve_device


def test_resolve_device_names_and_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")  # no GPU: auto falls back to the CPU
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"'model.device=cuda' but torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"unknown device 'model.device=gpu0'"):
        resolve_device("gpu0")
    # with 2 GPUs, torchrun's local ranks 0..3 take cuda:0, cuda:1, cuda:0, cuda:1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for local_rank, index in [(0, 0), (1, 1), (3, 1)]:
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        assert resolve_device("auto") == torch.device("cuda", index)
        assert resolve_device("cuda") == torch.device("cuda", index)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_auto_backend_uses_nccl_only_when_each_local_rank_has_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_backend() == "gloo"  # CPU only
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert auto_backend() == "cpu:gloo,cuda:nccl"  # one GPU per rank
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert auto_backend() == "gloo"  # 4 ranks on 2 GPUs: NCCL would refuse the shared devices


def test_fsdp2_on_cuda_without_nccl_is_refused_by_name():
    from rlft.dist.sharding import check_fsdp2_backend

    check_fsdp2_backend("cuda", "cpu:gloo,cuda:nccl")  # one GPU per rank: fine
    check_fsdp2_backend("cpu", "gloo")  # CPU sharding runs on gloo
    with pytest.raises(ConfigError, match=r"fsdp2 on CUDA needs the NCCL backend.*'gloo'.*dist.strategy=ddp"):
        check_fsdp2_backend("cuda", "gloo")


def test_finish_leaves_a_process_group_rlft_did_not_create(tmp_path):
    # an in-process vLLM engine makes its own one-process group; rlft's exit hook must not end it
    import torch.distributed as dist

    from rlft.dist import ranks as distributed

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        distributed.finish(ok=True)
        assert dist.is_initialized()  # still there for its owner
    finally:
        dist.destroy_process_group()
