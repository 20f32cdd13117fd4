"""Sandboxed execution of model-written programs: local backends (bwrap, unshare, rlimit-only),
a parallel pool, and a client for a remote SandboxFusion-compatible service."""

from rlft.sandbox.backends import BACKENDS, SandboxUnavailable
from rlft.sandbox.local import LocalSandbox
from rlft.sandbox.pool import Program, SandboxPool, probe_backend
from rlft.sandbox.result import STATUSES, Limits, RunResult

__all__ = [
    "BACKENDS",
    "STATUSES",
    "Limits",
    "LocalSandbox",
    "Program",
    "RunResult",
    "SandboxPool",
    "SandboxUnavailable",
    "probe_backend",
]
