"""Sibling linears (q/k/v, gate/up) as one packed product at decode.

A transformer block reads one input through several linears side by side: attention's q, k and
v projections, a gated MLP's gate and up projections. At decode ([N <= 64, d] inputs) one product
with the weights stacked, [N, d] x [d, q+k+v], keeps oneDNN's kernel busier than three narrow
ones (`bench/onednn_linear.py`, column "packed+stacked").

Which linears are siblings is learnt, not hard-coded per architecture: during the first forward
every packed linear runs alone and notes which earlier linears read the very tensor it reads
(same object, same version); linears that read one tensor become a group when any linear is
called a second time (the next forward). Later contexts on the same model start from the groups
learnt (rlft.accel.packed.packed_linears keeps them per model), so only the first one packs a grouped
weight twice. From then on the first member of a group to be called computes
the stacked product and keeps the others' column blocks, each handed out only for that same input
tensor (held, so its identity cannot be reused; in-place changes bump its version); any other
input gets the linear's own product. Results equal the separate products up to float rounding.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from rlft.accel.onednn import linear_bias, onednn_matmul, pack_linear


class _Group:
    """Linears that read one input: a stacked packed weight and the column blocks not yet taken."""

    def __init__(self, members: list[nn.Module], batch_hint: int):
        weights = [m.weight.detach() for m in members]
        self.sizes = [w.shape[0] for w in weights]
        self.weight = pack_linear(torch.cat(weights), batch_hint)
        self.bias = None
        if any(m.bias is not None for m in members):  # a missing bias is a block of zeros
            self.bias = torch.cat(
                [linear_bias(m) if m.bias is not None else m.weight.new_zeros(len(m.weight)) for m in members]
            )
        self.members = members
        self.input: Tensor | None = None
        self.version = -1
        self.pending: dict[int, Tensor] = {}

    def output(self, member: nn.Module, x: Tensor) -> Tensor:
        key = id(member)
        if x is self.input and x._version == self.version and key in self.pending:
            out = self.pending.pop(key)
            if not self.pending:
                self.input = None
            return out
        blocks = onednn_matmul(x, self.weight, self.bias).split(self.sizes, dim=-1)
        self.input, self.version = x, x._version
        self.pending = {id(m): b for m, b in zip(self.members, blocks, strict=True) if m is not member}
        return blocks[self.members.index(member)]


class SiblingLinears:
    """The forwards of a model's packed linears: each on its own packed weight until the sibling
    groups are known (learnt in the first forward, or `known` from an earlier context on the same
    model; `known=[]`: no groups), then each group on its stacked weight."""

    def __init__(self, modules: list[nn.Module], batch_hint: int, known: list[list[nn.Module]] | None = None):
        self.batch_hint = batch_hint
        self.modules = modules
        self.versions = [m.weight._version for m in modules]
        self.seen: set[int] = set()
        self.runs: list[list[nn.Module]] = []  # the recorded linears, by the input they read
        self.readers: dict[int, tuple[weakref.ref, int, list[nn.Module]]] = {}  # id(input) -> its run
        self.groups: dict[int, _Group] | None = None
        self.own: dict[int, tuple[Tensor, Tensor | None]] = {}
        if known is not None:
            self.runs = known
            self._fuse()
        else:
            self._pack_own(modules)

    def forward_of(self, module: nn.Module) -> Any:
        return functools.partial(self.call, module)

    def call(self, module: nn.Module, x: Tensor) -> Tensor:
        key = id(module)
        if self.groups is None:
            if key in self.seen:
                self._fuse()
            else:
                self._record(module, x)
        if self.groups is not None and key in self.groups:
            return self.groups[key].output(module, x)
        weight, bias = self.own[key]
        return onednn_matmul(x, weight, bias)

    def _record(self, module: nn.Module, x: Tensor) -> None:
        """Join the run of linears that read this very tensor (a weak reference: a freed input
        cannot be mistaken for a new one at the same address), or start one."""
        self.seen.add(id(module))
        known = self.readers.get(id(x))
        if known is not None and known[0]() is x and known[1] == x._version:
            known[2].append(module)
        else:
            self.runs.append([module])
            self.readers[id(x)] = (weakref.ref(x), x._version, self.runs[-1])

    def _pack_own(self, modules: list[nn.Module]) -> None:
        self.own.update({id(m): (pack_linear(m.weight, self.batch_hint), linear_bias(m)) for m in modules})

    def _fuse(self) -> None:
        """Pack each group's stacked weight (a grouped linear handed another input computes its
        group's product and keeps its block) and each other linear's own, if not packed yet."""
        if [m.weight._version for m in self.modules] != self.versions:
            raise RuntimeError(
                "a linear's weight changed inside packed_linears: leave and re-enter it after an update"
            )
        self.groups = {}
        for run in self.runs:
            if len(run) > 1:
                group = _Group(run, self.batch_hint)
                self.groups.update({id(m): group for m in run})
        for key in self.groups:  # drop the own packed copies of grouped linears
            self.own.pop(key, None)
        self._pack_own([m for m in self.modules if id(m) not in self.groups and id(m) not in self.own])
        self.runs, self.readers = [], {}

    @property
    def learnt(self) -> list[list[nn.Module]]:
        """The groups, for a later context on the same model (`known`)."""
        unique = {id(g): g for g in (self.groups or {}).values()}
        return [g.members for g in unique.values()]

    @property
    def fused_groups(self) -> int:
        return len(self.learnt)
