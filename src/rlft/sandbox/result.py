"""Result and limit records shared by every sandbox backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "wrong", "runtime_error", "timeout", "memory_limit", "output_limit", "sandbox_error"]
STATUSES: tuple[str, ...] = (
    "ok",
    "wrong",
    "runtime_error",
    "timeout",
    "memory_limit",
    "output_limit",
    "sandbox_error",
)


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. Memory is address space per process (RLIMIT_AS), so the worst case
    for a run is `processes * memory_mb`; keep that product under the machine's budget."""

    wall_s: float = field(default=10.0, metadata={"doc": "wall-clock limit; the whole tree is killed"})
    cpu_s: int = field(default=10, metadata={"doc": "CPU seconds per process (RLIMIT_CPU)"})
    memory_mb: int = field(default=512, metadata={"doc": "address space per process (RLIMIT_AS)"})
    file_size_mb: int = field(default=16, metadata={"doc": "largest file, stdout and stderr included"})
    open_files: int = field(default=64, metadata={"doc": "file descriptors per process (RLIMIT_NOFILE)"})
    processes: int = field(default=32, metadata={"doc": "processes of the slot uid (RLIMIT_NPROC)"})
    tmpfs_mb: int = field(default=64, metadata={"doc": "size of the private /tmp (bwrap backend)"})
    output_chars: int = field(default=65536, metadata={"doc": "stdout / stderr kept in the result"})

    def with_wall(self, wall_s: float) -> Limits:
        """The same limits with another wall timeout (CPU limit raised to match when it is lower)."""
        cpu = max(self.cpu_s, int(wall_s) + 1)
        return Limits(**{**asdict(self), "wall_s": float(wall_s), "cpu_s": cpu})


@dataclass(frozen=True)
class RunResult:
    """What one sandboxed run did. `reason` says why the status is not `ok` (empty when ok)."""

    status: Status
    exit_code: int | None
    stdout: str
    stderr: str
    reason: str
    wall_s: float
    backend: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of `rlft sandbox run --json` (docs/development.md, "The CLI contract")."""
        keys = ("status", "exit_code", "stdout", "stderr", "reason", "wall_s")
        return {k: getattr(self, k) for k in keys}

    def with_status(self, status: Status, reason: str) -> RunResult:
        """A copy with another status and reason (e.g. ok -> wrong after comparing output)."""
        return RunResult(status, self.exit_code, self.stdout, self.stderr, reason, self.wall_s, self.backend)


def sandbox_error(reason: str, backend: str = "", wall_s: float = 0.0) -> RunResult:
    """A run the sandbox itself could not carry out (not the program's fault)."""
    return RunResult("sandbox_error", None, "", "", reason, wall_s, backend)
