"""Decode on packed weights: inside `packed_linears` the qualifying linears of a model run on
weights packed once at entry, siblings (q/k/v, gate/up) stacked into one product."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from torch import nn

from rlft.accel.onednn import forwards_replaced, qualifying_linears
from rlft.accel.onednn_siblings import SiblingLinears

_LEARNT_GROUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its sibling groups


@contextlib.contextmanager
def packed_linears(*models: Any, batch_hint: int = 32, fuse_siblings: bool = True) -> Iterator[int]:
    """Inference only, weights fixed inside: qualifying linears run on weights packed at entry;
    yields how many. `fuse_siblings`: linears that read one input (q/k/v, gate/up) run as one
    product over their stacked weights once known (SiblingLinears: learnt in the first
    forward, kept per model when one model is given)."""
    modules = qualifying_linears(models)
    model = models[0] if fuse_siblings and len(models) == 1 and isinstance(models[0], nn.Module) else None
    known = _LEARNT_GROUPS.get(model) if model is not None else None
    if known is not None:  # groups all of whose linears still qualify
        ids = {id(m) for m in modules}
        known = [g for g in known if all(id(m) in ids for m in g)]
    siblings = SiblingLinears(modules, batch_hint, known if fuse_siblings else [])
    with forwards_replaced(modules, siblings.forward_of) as n:
        yield n
    if model is not None and siblings.groups is not None:
        _LEARNT_GROUPS[model] = siblings.learnt
