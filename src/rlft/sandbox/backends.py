"""Sandbox backends as command builders, strongest first, and the start-up probe.

Every backend runs the program as a non-root slot uid (set by the launcher, which must be root)
under `prlimit` rlimits; they differ in the namespaces around it:

- `bwrap`: bubblewrap with user, pid, net, ipc, uts (and cgroup) namespaces, only /usr read-only,
  a private size-capped tmpfs /tmp (the working dir), the program read-only at /sandbox, a cleared
  environment,
  --die-with-parent and --new-session. Nothing of the host file tree but /usr is visible.
- `unshare`: util-linux unshare with user, pid, net, ipc and uts namespaces; the host file tree
  stays visible (read access as the slot uid), so world-readable files can be read.
- `rlimit`: rlimits and the slot uid only; no namespaces. Not a security boundary: it runs only
  when explicitly allowed (`allow_unsafe=True` or RLFT_SANDBOX_ALLOW_UNSAFE=1).

A launcher that is not root cannot switch to slot uids: it is refused (SandboxUnavailable) unless
the user opts into same-uid mode (`allow_same_uid=True` or RLFT_SANDBOX_ALLOW_SAME_UID=1), where
programs run as the invoking user with no process limit and no sweep of leftovers by uid.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from rlft.sandbox import procs
from rlft.sandbox.result import Limits

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("bwrap", "unshare", "rlimit")
PYTHON = "/usr/bin/python3"
UNSAFE_ENV = "RLFT_SANDBOX_ALLOW_UNSAFE"
SAME_UID_ENV = "RLFT_SANDBOX_ALLOW_SAME_UID"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class SandboxUnavailable(RuntimeError):
    """No backend can run programs here (or only the unsafe one, without opt-in)."""


def python_command(script: str) -> list[str]:
    """The interpreter command: system Python, isolated mode (-I), no site-packages (-S)."""
    return [PYTHON, "-I", "-S", script]


def rlimit_prefix(limits: Limits, set_nproc: bool) -> list[str]:
    """`prlimit` options applying the limits to the program (inherited by all its children)."""
    mb = 1 << 20
    cmd = [
        "prlimit",
        f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
        f"--as={limits.memory_mb * mb}",
        f"--fsize={limits.file_size_mb * mb}",
        f"--nofile={limits.open_files}",
        "--core=0",
    ]
    if set_nproc:
        cmd.append(f"--nproc={limits.processes}")
    return [*cmd, "--"]


def bwrap_command(workdir: Path, limits: Limits, script: str) -> list[str]:
    """bubblewrap around `python3 /sandbox/<script>`; `workdir` is bound at /sandbox."""
    env = [x for k, v in {**ENV, "HOME": "/tmp"}.items() for x in ("--setenv", k, v)]
    return [
        "bwrap",
        *("--ro-bind", "/usr", "/usr"),
        *("--symlink", "usr/lib", "/lib"),
        *("--symlink", "usr/lib64", "/lib64"),
        *("--symlink", "usr/bin", "/bin"),
        *("--symlink", "usr/sbin", "/sbin"),
        *("--proc", "/proc", "--dev", "/dev"),
        *("--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp"),
        *("--ro-bind", str(workdir), "/sandbox", "--chdir", "/tmp"),
        *("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"),
        *("--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session"),
        *("--cap-drop", "ALL", "--clearenv", *env),
        *python_command(f"/sandbox/{script}"),
    ]


def unshare_command(workdir: Path, limits: Limits, script: str) -> list[str]:
    """util-linux unshare: new user/pid/net/ipc/uts namespaces; the child dies with unshare."""
    return [
        "unshare",
        *("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"),
        *("--ipc", "--uts", "--"),
        *python_command(str(workdir / script)),
    ]


def rlimit_command(workdir: Path, limits: Limits, script: str) -> list[str]:
    """No namespaces: the program runs in the host's view (rlimits and the slot uid only)."""
    return python_command(str(workdir / script))


BUILDERS = {"bwrap": bwrap_command, "unshare": unshare_command, "rlimit": rlimit_command}


def full_command(backend: str, workdir: Path, limits: Limits, script: str, set_nproc: bool) -> list[str]:
    """setpriv (SIGKILL when the launcher thread dies) + prlimit + the backend's command."""
    return [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        *rlimit_prefix(limits, set_nproc),
        *BUILDERS[backend](workdir, limits, script),
    ]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def allow_unsafe_from_env() -> bool:
    """The user's opt-in to the rlimit-only backend through the environment."""
    return _env_flag(UNSAFE_ENV)


def allow_same_uid_from_env() -> bool:
    """The user's opt-in (when not root) to running programs as the invoking user."""
    return _env_flag(SAME_UID_ENV)


def uses_slot_uids(allow_same_uid: bool | None) -> bool:
    """True when programs run as slot uids (the launcher is root); False in the same-uid mode a
    non-root user opted into (`allow_same_uid`, default from RLFT_SANDBOX_ALLOW_SAME_UID). Raises
    SandboxUnavailable for a non-root launcher without that opt-in."""
    if procs.can_switch_uid():
        return True
    allowed = allow_same_uid_from_env() if allow_same_uid is None else allow_same_uid
    if not allowed:
        raise SandboxUnavailable(
            f"the sandbox runs each program as a private non-root slot uid, which needs root (this "
            f"process has uid {os.geteuid()}); run as root, or opt into the weaker same-uid mode "
            f"(programs run as this user, with no process limit and no sweep of leftover processes) "
            f"with {SAME_UID_ENV}=1 or allow_same_uid=True"
        )
    return False


def missing_tools(backend: str) -> list[str]:
    """Executables a backend needs that are not installed."""
    need = ["setpriv", "prlimit", PYTHON] + {"bwrap": ["bwrap"], "unshare": ["unshare"]}.get(backend, [])
    return [t for t in need if shutil.which(t) is None]


def candidate_backends(preferred: str | None, allow_unsafe: bool) -> Sequence[str]:
    """Backends to try in order: the preferred one only, or all (rlimit only with opt-in)."""
    if preferred:
        if preferred not in BACKENDS:
            raise ValueError(f"unknown sandbox backend '{preferred}' (choose from {', '.join(BACKENDS)})")
        order: Sequence[str] = (preferred,)
    else:
        order = BACKENDS
    if "rlimit" in order and not allow_unsafe:
        order = [b for b in order if b != "rlimit"]
        if not order:
            raise SandboxUnavailable(
                f"the rlimit backend is not a security boundary; set {UNSAFE_ENV}=1 or "
                "allow_unsafe=True to run model-written code with it anyway"
            )
    return order


def warn_unsafe() -> None:
    """The warning printed whenever the rlimit-only backend is selected."""
    log.warning(
        "sandbox backend 'rlimit' is NOT a security boundary: programs can use the network, read "
        "world-readable files and leave processes behind that are only swept by uid; install "
        "bubblewrap (apt-get install bubblewrap) for isolation"
    )
