"""Training strategies over the process group: `ddp` (every rank holds the whole model; gradients
are summed over ranks once per optimizer step, rlft.dist.ranks.sum_gradients) and `fsdp2`
(torch's `fully_shard`: each rank holds 1/N of every parameter, gradient and optimizer state;
parameters are gathered layer by layer for each forward pass).

Also what the loops need around a sharded model: the whole parameters for generation,
gathered state dicts in the single-process format (so checkpoints move between world sizes and
strategies), and gradient-norm clipping that works on either kind of parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from rlft.dist.ranks import all_reduce, broadcast_parameters, world_size

STRATEGIES = ("ddp", "fsdp2")
Out = TypeVar("Out")


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def prepare_model(model: nn.Module, strategy: str, trainable: bool = True) -> nn.Module:
    """The model ready for `strategy` (in place; a sharded model is returned as is). Trained
    parameters are first copied from rank 0 (a freshly initialised head or adapter starts equal
    everywhere). ddp: nothing more; fsdp2: each decoder layer, then the whole model, sharded over
    all ranks, gradients summed (not averaged) because the loops already divide the loss by global
    counts."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy 'dist.strategy={strategy}' ({', '.join(STRATEGIES)})")
    if world_size() == 1 or is_sharded(model):  # already prepared: a loop may shard before the shell
        return model
    if trainable:  # a frozen model (the reference, a teacher) is loaded from the same files everywhere
        broadcast_parameters(model)
    if strategy == "ddp":
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    check_fsdp2_backend(device, torch.distributed.get_backend())
    mesh = init_device_mesh(device, (world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if trainable:
        for m in model.modules():
            if isinstance(m, FSDPModule):
                m.set_gradient_divide_factor(1.0)
                m.set_force_sum_reduction_for_comms(True)  # gloo has no pre-scaled sum
    return model


def as_forward(model: nn.Module, fn: Callable[..., Out], name: str) -> Callable[..., Out]:
    """`fn(model, ...)` run as a forward pass of `model`. For a function that calls a submodule and
    a head (a reward model's trunk, then its scalar head) instead of `model(...)`: under fsdp2 it
    gets the hooks FSDP2 runs around `model(...)` (the root unit's own parameters gathered before,
    their gradients reduced in backward), registered once as the method `model.<name>`; elsewhere
    it is `fn(model, ...)` as is."""
    if not is_sharded(model):
        return functools.partial(fn, model)
    if name not in vars(model):
        from torch.distributed.fsdp import register_fsdp_forward_method

        setattr(model, name, functools.partial(fn, model))
        register_fsdp_forward_method(model, name)
    return getattr(model, name)


def check_fsdp2_backend(device: str, backend: str) -> None:
    """ConfigError unless FSDP2's collectives can run: on CUDA they need NCCL, which wants a GPU
    per rank (gloo's CUDA path crashes in FSDP2's reduce-scatter: seen as SIGSEGV on an H200)."""
    if device == "cuda" and "nccl" not in backend:
        from rlft.config.loader import ConfigError

        raise ConfigError(
            f"dist.strategy=fsdp2 on CUDA needs the NCCL backend, one GPU per process; this group uses "
            f"'{backend}' ({world_size()} processes, {torch.cuda.device_count()} GPUs): start at most one "
            "process per GPU, or use dist.strategy=ddp (ranks may share a GPU) or model.device=cpu"
        )


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks (each becomes one FSDP2 unit)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"dist.strategy=fsdp2: cannot find the decoder layers of {type(model).__name__}")
    return list(layers)


def _fsdp_units(model: nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def full_parameters(model: Any) -> Iterator[None]:
    """Inside the block every rank holds the whole parameters and forward passes need no
    collective, so ranks may run different numbers of them (generation, evaluation). Entering
    and leaving are collective under fsdp2; a no-op otherwise."""
    if not is_sharded(model):
        yield
        return
    units = _fsdp_units(model)
    model.set_reshard_after_forward(False)
    for u in units:
        u.unshard()  # collective: every rank, same order
    try:
        yield
    finally:
        model.set_reshard_after_forward(True)  # layers: free after each forward (FSDP2's default)
        model.set_reshard_after_forward(False, recurse=False)  # the root keeps its default
        for u in units:
            u.reshard()


def reshard(model: Any) -> None:
    """Free the gathered parameters of every fsdp2 unit (a no-op unsharded). Needed after no-grad
    forwards that an optimizer step follows: they leave the root unit gathered (its default keeps
    them for the backward), the step updates only the shards, and the next forward would read the
    stale gathered copy."""
    if is_sharded(model):
        for u in _fsdp_units(model):
            u.reshard()


def clip_grad_norm(params: Sequence[torch.Tensor], max_norm: float) -> float:
    """Global grad norm before clipping (over all ranks' shards under fsdp2); clips to max_norm
    when > 0."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _full(t: Any) -> Any:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on every rank (plain tensors; collective under fsdp2); a tensor
    shared by several names (tied embeddings) appears once, under its first name."""
    seen: set[int] = set()
    out = {}
    for k, v in module.state_dict(keep_vars=True).items():
        if id(v) not in seen:
            seen.add(id(v))
            out[k] = _full(v).detach()
    return out


def load_full_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load whole tensors into a (possibly sharded) module; every rank passes the same state."""
    if not is_sharded(module):
        module.load_state_dict(state, strict=False)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, dict(state), options=StateDictOptions(full_state_dict=True, strict=False))


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict() with every sharded state tensor gathered whole: the single-process
    format, whatever the strategy (collective under fsdp2)."""
    s = optimizer.state_dict()
    state = {i: {k: _full(v) for k, v in st.items()} for i, st in s["state"].items()}
    return {"state": state, "param_groups": s["param_groups"]}


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any]) -> None:
    """Load a single-process-format optimizer state; sharded parameters get their shard of each
    state tensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {}
    for i, st in saved["state"].items():
        p = params[int(i)]
        state[i] = {
            k: distribute_tensor(v, p.device_mesh, p.placements, src_data_rank=None)
            if isinstance(p, DTensor) and v.dim() > 0
            else v
            for k, v in st.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def extra_passes(model: Any, passes: int, filler: Any) -> int:
    """Forward/backward passes this rank must add so that every rank runs as many as the
    busiest one (fsdp2 gathers parameters in each pass, all ranks together); 0 otherwise.
    Collective under fsdp2: every rank calls it before its first pass."""
    if not is_sharded(model) or filler is None:
        return 0
    return int(all_reduce(torch.tensor([passes]), "max")[0]) - passes
