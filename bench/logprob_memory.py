"""Peak memory and time of per-token logprobs of the chosen tokens, forward + backward, on
workload W's update shapes (32 sequences x 64 response tokens x 49152 vocab, fp32):
naive log_softmax + gather vs rlft.ops.gather_logprobs (row-chunked, custom backward).

Usage: python bench/logprob_memory.py [--rows 32] [--time 64] [--vocab 49152] [--repeats 3]
Each variant runs in a fresh process; memory = peak RSS during forward + backward minus RSS
with the logits allocated (so it includes the [B, T, V] gradient that backward must return).
Prints one line per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def measure(variant: str, rows: int, t: int, vocab: int, repeats: int) -> dict[str, float]:
    import torch

    from rlft.ops import gather_logprobs

    def naive(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(z.float(), dim=-1).gather(-1, y[..., None]).squeeze(-1)

    fn = naive if variant == "naive" else gather_logprobs
    logits = torch.randn(rows, t, vocab).requires_grad_(True)
    targets = torch.randint(vocab, (rows, t))
    weights = torch.randn(rows, t)
    (fn(logits, targets) * weights).sum().backward()  # warm-up; leaves logits.grad allocated
    times, extra = [], []
    for _ in range(repeats):
        logits.grad = None
        base = _status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark VmHWM to the current RSS
        start = time.perf_counter()
        (fn(logits, targets) * weights).sum().backward()
        times.append(time.perf_counter() - start)
        extra.append(_status_mib("VmHWM") - base)
    return {"variant": variant, "median_s": statistics.median(times), "peak_extra_mib": max(extra)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--time", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", choices=["naive", "chunked"], help="(internal) measure one variant")
    a = ap.parse_args()
    if a.variant:
        print(json.dumps(measure(a.variant, a.rows, a.time, a.vocab, a.repeats)))
        return
    mib = a.rows * a.time * a.vocab * 4 / 2**20
    print(f"logits [{a.rows}, {a.time}, {a.vocab}] fp32 = {mib:.0f} MiB (and as much for their grad)")
    for variant in ("naive", "chunked"):
        args = [sys.argv[0], "--variant", variant, "--rows", str(a.rows), "--time", str(a.time)]
        args += ["--vocab", str(a.vocab), "--repeats", str(a.repeats)]
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{variant:>8}: forward+backward {r['median_s']:.3f} s (median), "
            f"peak memory above the logits (incl. their gradient) {r['peak_extra_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
