"""Slot uids and process sweeping.

Each concurrent run gets its own non-root uid ("slot"): RLIMIT_NPROC counts every process of a uid
and is ignored for root, so a private uid makes the process limit real, and it lets the launcher
kill whatever a run left behind (setsid daemons included) by uid alone. A slot is held across
processes too (an exclusive flock on a file per uid in a root-only directory), so two trainers on
one host never share a uid, nor kill each other's programs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

UID_BASE_ENV = "RLFT_SANDBOX_UID_BASE"
DEFAULT_UID_BASE = 61000
UID_SPAN = 64  # slot uids rotate over base .. base+63, so a uid cools down before its reuse
LOCK_DIR_ENV = "RLFT_SANDBOX_LOCK_DIR"

_lock = threading.Lock()
_in_use: set[int] = set()
_free = threading.Condition(_lock)
_cursor = 0


def can_switch_uid() -> bool:
    """Only root can run programs as the slot uids."""
    return os.geteuid() == 0


def uid_base() -> int:
    """First slot uid (RLFT_SANDBOX_UID_BASE, default 61000)."""
    return int(os.environ.get(UID_BASE_ENV, DEFAULT_UID_BASE))


def lock_dir() -> Path:
    """Where slot locks live (RLFT_SANDBOX_LOCK_DIR, default <tmp>/rlft-sandbox-slots, mode 0700)."""
    path = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "rlft-sandbox-slots")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _lock_across_processes(locks: Path, uid: int) -> int | None:
    """An fd holding the exclusive lock of `uid`'s slot, or None when another process holds it."""
    fd = os.open(locks / f"uid-{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def slot_uid() -> Iterator[int]:
    """Hold a free slot uid for one run, free in this process and in every other (a lock file
    per uid); uids are handed out in rotation, so the dying processes of one run do not count
    against the process limit of the next."""
    base = uid_base()
    with _free:
        while True:
            uid, fd = _claim(base)
            if fd is not None:
                break
            _free.wait(0.05)  # every slot taken (here or elsewhere): wait for one to come free
    try:
        yield uid
    finally:
        with _free:
            os.close(fd)  # releases the lock
            _in_use.discard(uid)
            _free.notify()


def _claim(base: int) -> tuple[int, int | None]:
    """The next slot free here and locked for us elsewhere, as (uid, lock fd); (0, None) if none.
    Called holding `_free`."""
    global _cursor
    locks = lock_dir()
    for k in ((_cursor + i) % UID_SPAN for i in range(UID_SPAN)):
        uid = base + k
        if uid in _in_use:
            continue
        fd = _lock_across_processes(locks, uid)
        if fd is not None:
            _in_use.add(uid)
            _cursor = k + 1
            return uid, fd
    return 0, None


def pids_of_uid(uid: int, zombies: bool = False) -> list[int]:
    """Processes whose real uid is `uid`, from /proc (zombies only when asked)."""
    return pids_of_uids({uid}, zombies)


def pids_of_uids(uids: set[int], zombies: bool = False) -> list[int]:
    """Processes whose real uid is in `uids`, from one scan of /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        real_uid = fields.get("Uid", "").split()[:1]
        zombie = fields.get("State", "").strip().startswith("Z")
        if real_uid and int(real_uid[0]) in uids and (zombies or not zombie):
            found.append(int(entry.name))
    return found


def kill_uid(uid: int, wait_s: float = 2.0) -> int:
    """SIGKILL every process of the slot uid and wait (up to `wait_s`) until none is left, since
    a killed process (or a pid namespace being torn down) takes a moment to go; returns how many
    signals were sent. Repeats the scan, because a process may fork between scan and kill."""
    if uid == 0 or uid == os.getuid():
        raise ValueError(f"refusing to sweep processes of uid {uid} (not a sandbox slot)")
    killed = 0
    deadline = time.monotonic() + wait_s
    while True:
        pids = pids_of_uid(uid)
        if not pids or time.monotonic() > deadline:
            return killed
        for pid in pids:
            killed += _kill_if_owned(pid, uid)
        time.sleep(0.005)


def _kill_if_owned(pid: int, uid: int) -> int:
    """SIGKILL `pid` through a pidfd if it still belongs to `uid` (a recycled pid is spared)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return 0
    try:
        if pid not in _owned_by(pid, uid):
            return 0
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


def _owned_by(pid: int, uid: int) -> list[int]:
    """[pid] if that process's real uid is `uid` (read after the pidfd pins the process)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return [pid] if int(line.split()[1]) == uid else []
    except OSError:
        pass
    return []
