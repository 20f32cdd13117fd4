"""A transformers DynamicCache whose full-attention layers write into storage reserved up front.

transformers' DynamicLayer grows its keys and values with torch.cat on every decode step, which
copies the whole cache each step (~18% of a decode step for SmolLM2-135M at batch 32 on a CPU).
ReservedLayer keeps DynamicLayer's semantics (the model sees a cache exactly as long as what was
written, so masks and attention are unchanged) but writes each step's keys into a slice of a
tensor sized for the whole completion.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

try:
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # transformers < 4.54: no per-layer cache classes
    from transformers import DynamicCache

    DynamicLayer = None


class _ReservedLayerImpl:
    """Mixed into DynamicLayer below: keys/values are views [:, :, :length] of reserved storage."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        n, heads = key_states.shape[:2]
        self.device = key_states.device
        self.key_store = key_states.new_empty(n, heads, self.capacity, key_states.shape[-1])
        self.value_store = value_states.new_empty(n, heads, self.capacity, value_states.shape[-1])
        self.length = 0
        self._expose()
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self.key_store[:, :, : self.length]
        self.values = self.value_store[:, :, : self.length]

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache reserved for {self.capacity} positions, asked to hold {end}")
        self.key_store[:, :, self.length : end] = key_states
        self.value_store[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of positions to remove")
        if self.is_initialized:
            self.length = max(0, self.length + tokens_to_remove)
            self._expose()

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized:
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_store = self.key_store.repeat_interleave(repeats, dim=0)
            self.value_store = self.value_store.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: Tensor) -> None:
        if self.is_initialized:
            self.key_store = self.key_store[indices]
            self.value_store = self.value_store[indices]
            self._expose()


ReservedLayer = type("ReservedLayer", (_ReservedLayerImpl, DynamicLayer), {}) if DynamicLayer else None


def reserved_cache(config: Any, capacity: int) -> Any:
    """A DynamicCache for `config` whose plain full-attention layers hold up to `capacity`
    positions without reallocating (sliding-window and other layer kinds stay as transformers
    made them; on transformers without per-layer caches, a plain DynamicCache)."""
    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if ReservedLayer is None or not layers:
        return cache
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer:
            layers[i] = ReservedLayer(capacity)
    return cache
