"""Rank information and collectives for multi-process runs under `torchrun`.

Every function is a no-op (or the identity) at world size 1, so the loops call them
unconditionally and a single process behaves exactly as without this module. The process
group is created from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) with a
timeout on every collective: a dead or hung peer fails the job within `timeout_s`, never a
silent hang. Gloo serves CPU tensors, NCCL CUDA ones.

Over 300 lines on purpose: this is the one module that owns the process group, and each
collective sits beside its world-size-1 identity, so the two cannot drift apart.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


def env_world_size() -> int:
    """Processes torchrun started (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(backend: str = "auto", timeout_s: float = 1800.0) -> None:
    """Join the process group torchrun describes (idempotent; nothing at world size 1).
    backend auto = gloo for CPU tensors, plus NCCL for CUDA tensors when every local rank has a
    GPU of its own (NCCL refuses two ranks on one device: ranks sharing GPUs use gloo for both)."""
    if dist.is_initialized() or env_world_size() == 1:
        return
    if backend == "auto":
        backend = auto_backend()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_gpu_index())
    timeout = timedelta(seconds=timeout_s)
    store = _attempt_store(timeout)
    if store is None:
        dist.init_process_group(backend, timeout=timeout)
    else:
        size, me = env_world_size(), int(os.environ["RANK"])
        dist.init_process_group(backend, store=store, rank=me, world_size=size, timeout=timeout)
    global _joined
    _joined = True
    atexit.register(_shutdown)
    log.info(
        "rank %d of %d joined the process group (%s, timeout %.0fs)", rank(), world_size(), backend, timeout_s
    )


def local_gpu_index() -> int:
    """This process's GPU on its node: LOCAL_RANK mod the node's GPUs (ranks beyond them share)."""
    return int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()


def auto_backend() -> str:
    """The process-group backend `dist.backend=auto` picks on this node (see init_distributed)."""
    if not torch.cuda.is_available():
        return "gloo"
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", env_world_size()))
    return "cpu:gloo,cuda:nccl" if local_ranks <= torch.cuda.device_count() else "gloo"


def _attempt_store(timeout: timedelta) -> dist.Store | None:
    """Under torchrun's shared agent store, a store whose keys are this restart attempt's own.
    The shared store keeps the keys of a failed attempt, and a restarted group can read a dead
    rank's address from them and fail to connect (pytorch/pytorch#135712); None elsewhere."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env_world_size(), False, timeout
    )
    return dist.PrefixStore(f"rlft/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", agent)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


_joined = False  # whether init_distributed created the process group (vLLM may make its own)


def finish(ok: bool) -> None:
    """End the process group while the interpreter is fully alive (no-op without one). After a
    command that succeeded on every rank, a barrier first, so no rank tears down its connections
    while a peer still uses them; after a failure none (the peers may be gone). Then a garbage
    collection, so the group's objects are freed now: a gloo group freed during interpreter
    finalisation can SIGABRT ("terminate called without an active exception"; seen on 3 of
    ~60 two-rank runs under load; pytorch/pytorch#179291 describes the mechanism). A group rlft did
    not create (an in-process vLLM engine's own) is left to its owner."""
    if not (_joined and dist.is_initialized()):
        return
    if ok:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on the rank that writes logs, checkpoints and the final model."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cached model), then the others do."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """A reduced copy of x over ranks: op sum, max or min."""
    if world_size() == 1:
        return x
    out = x.clone()
    dist.all_reduce(
        out, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    )
    return out


def global_sum(x: float) -> float:
    return float(all_reduce(torch.tensor([x], dtype=torch.float64))[0])


def global_mean(x: float) -> float:
    return global_sum(x) / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any (e.g. a stop request seen by one process)."""
    return bool(all_reduce(torch.tensor([int(flag)]), "max")[0])


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's obj on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Each key's sum over ranks (a key a rank lacks counts as 0)."""
    if world_size() == 1:
        return dict(values)
    out: dict[str, float] = {}
    for d in all_gather_objects(dict(values)):
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


def rank_slice(n: int, what: str) -> slice:
    """This rank's contiguous share of n items; n must split evenly (`what` names the key)."""
    w = world_size()
    if n % w:
        raise ValueError(f"'{what}'={n} must be a multiple of the number of processes ({w})")
    share = n // w
    return slice(rank() * share, (rank() + 1) * share)


def sum_gradients(params: Sequence[torch.nn.Parameter], bucket_numel: int = 2**25) -> None:
    """Replace each grad by its sum over ranks: the DDP algorithm, one all-reduce per bucket of
    about `bucket_numel` gradient elements. A missing grad counts as zeros. Sharded (DTensor)
    parameters are skipped: FSDP2 reduces their gradients itself."""
    if world_size() == 1:
        return
    plain = [p for p in params if not _is_dtensor(p)]
    for p in plain:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.nn.Parameter] = []
    for i, p in enumerate(plain):
        bucket.append(p)
        if sum(q.numel() for q in bucket) >= bucket_numel or i == len(plain) - 1:
            flat = torch.cat([q.grad.reshape(-1) for q in bucket])
            dist.all_reduce(flat)
            offset = 0
            for q in bucket:
                q.grad.copy_(flat[offset : offset + q.numel()].view_as(q.grad))
                offset += q.numel()
            bucket = []


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (replicas start identical)."""
    if world_size() == 1:
        return
    for t in [*module.parameters(), *module.buffers()]:
        if not _is_dtensor(t):
            dist.broadcast(t.data, src=0)


def _is_dtensor(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def reduce_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Every rank's metrics combined: keys ending in `max` take the maximum over ranks, in
    `min` the minimum, any other the mean (ranks hold equal shares of the batch, so the mean
    of per-rank means is the global mean). Values equal on every rank come back unchanged."""
    if world_size() == 1:
        return dict(metrics)
    gathered = all_gather_objects(dict(metrics))
    out: dict[str, float] = {}
    for key in sorted({k for m in gathered for k in m}):
        values = [float(m[key]) for m in gathered if key in m]
        if key.endswith("max"):
            out[key] = max(values)
        elif key.endswith("min"):
            out[key] = min(values)
        else:
            out[key] = values[0] if len(set(values)) == 1 else sum(values) / len(values)
    return out


def rank_log_dir(out_dir: Path, log_config: Any) -> tuple[Path, Any]:
    """Where this rank logs, and how: rank 0 in out_dir as configured; the others in
    out_dir/ranks/rank-N with metrics.jsonl and samples.jsonl only (no progress bar, no
    TensorBoard / wandb run of their own)."""
    if is_main():
        return out_dir, log_config
    quiet = dataclasses.replace(log_config, tensorboard=False, backends=[], progress=False)
    return out_dir / "ranks" / f"rank-{rank()}", quiet


def on_global_rows(fn: Callable[..., Any], *tensors: Tensor | None) -> Any:
    """fn applied to the whole batch of every rank, this rank's rows of its result.

    tensors are [B_rank, ...] (None passes through); rank r's rows sit after those of ranks
    < r, and dimension 1 of 2-d tensors is right-padded with zeros to the longest over ranks,
    then cut back. fn returns a tensor or a tuple of tensors / None with rows first. For
    batch-wide statistics (whitening, token-mean weights) that must see the global batch."""
    if world_size() == 1:
        return fn(*tensors)
    mine = [None if t is None else t.cpu() for t in tensors]
    every = all_gather_objects(mine)
    rows = [next(t for t in ts if t is not None).shape[0] for ts in every]
    start = sum(rows[: rank()])
    widths = [
        max((ts[i].shape[1] for ts in every), default=0) if _is_2d(mine[i]) else 0 for i in range(len(mine))
    ]
    joined = [
        None if mine[i] is None else torch.cat([_pad_to(ts[i], widths[i]) for ts in every])
        for i in range(len(mine))
    ]
    out = fn(*joined)
    local_width = next((t.shape[1] for t in mine if _is_2d(t)), None)
    device = next(t.device for t in tensors if t is not None)  # gathered on the CPU: back to it
    return _take_rows(out, start, rows[rank()], local_width, device)


def _is_2d(t: Tensor | None) -> bool:
    return t is not None and t.dim() == 2


def _pad_to(t: Tensor, width: int) -> Tensor:
    if t.dim() != 2 or t.shape[1] == width:
        return t
    out = torch.zeros(t.shape[0], width, dtype=t.dtype)
    out[:, : t.shape[1]] = t
    return out


def _take_rows(out: Any, start: int, n: int, width: int | None, device: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(_take_rows(o, start, n, width, device) for o in out)
    if out is None:
        return None
    rows = out[start : start + n]
    return (rows[:, :width] if rows.dim() == 2 and width is not None else rows).to(device)
