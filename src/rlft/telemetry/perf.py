"""Performance accounting: phase laps, model FLOPs of an RL step, MFU, a measured matmul peak,
peak RSS. Imports nothing else from the package."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def sync_device() -> None:
    """Wait for queued CUDA work (when CUDA is in use), so a wall-clock lap includes it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Laps:
    """perf/<phase>_s timings within one step (CUDA work included: each lap synchronises)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        sync_device()
        self.clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        sync_device()
        now = time.perf_counter()
        self.times[f"perf/{name}_s"] = self.times.get(f"perf/{name}_s", 0.0) + now - self.clock
        self.clock = now

    def split(self, name: str, part: str, seconds: float) -> None:
        """Move `seconds` of lap `name` into lap `part` (a sub-phase timed inside it); the total
        is unchanged."""
        seconds = min(seconds, self.times[f"perf/{name}_s"])
        self.times[f"perf/{name}_s"] -= seconds
        self.times[f"perf/{part}_s"] = self.times.get(f"perf/{part}_s", 0.0) + seconds


class PhaseTimer:
    """Wall seconds per named phase, summed over repeats."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def step_flops(n_params: int, pass_tokens: float, no_grad_passes: int, train_tokens: float) -> float:
    """Model FLOPs of one RL step: 2 N per token of each no-grad forward (generation counts as
    one: prefill + decode) and 6 N per token trained (forward 2 N + backward 4 N); Kaplan et al.
    2020, "Scaling Laws for Neural Language Models", Sec. 2.1 (C_forward ~ 2N, C ~ 6N per token).
    N = all parameters; attention score FLOPs are left out (small at these lengths)."""
    return 2.0 * n_params * pass_tokens * no_grad_passes + 6.0 * n_params * train_tokens


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Model-FLOPs utilisation: achieved FLOP/s over the peak FLOP/s (0 when either is unknown)."""
    if seconds <= 0 or peak_flops <= 0:
        return 0.0
    return flops / seconds / peak_flops


def matmul_peak_flops(
    size: int = 2048, repeats: int = 5, dtype: Any = None, device: Any = "cpu", engine: str = "aten"
) -> float:
    """Best FLOP/s of `repeats` [size, size] @ [size, size] matmuls (2 size^3 FLOPs each, fp32
    unless `dtype`, on `device`) after one warm-up: the reference peak for MFU on this machine.
    engine `aten` = torch.mm; `onednn` = oneDNN's matmul on a packed operand (rlft.accel.onednn)."""
    import torch  # lazily: `rlft --help` stays light

    dtype = dtype or torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    if engine == "onednn":
        from rlft.accel.onednn import onednn_matmul, pack_linear

        packed = pack_linear(b, size)
        product = lambda: onednn_matmul(a, packed)  # noqa: E731
    else:
        product = lambda: torch.mm(a, b)  # noqa: E731
    product()
    sync_device()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        sync_device()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_device_memory_mib(device: Any) -> float:
    """Peak memory allocated by torch on a CUDA device, in MiB (0 for the CPU)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if torch.device(device).type == "cuda" else 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process and of its finished children, in MiB (Linux
    reports ru_maxrss in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0
