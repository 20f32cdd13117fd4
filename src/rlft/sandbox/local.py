"""Run one Python program in a local sandbox backend and classify what happened.

Layout of a run (host side): a root-owned run dir (0711) holding stdin/stdout/stderr files that
only the launcher opens, and `work/` with the program (read-only for the slot uid). Under bwrap the
program sees `work/` read-only at /sandbox and writes to a private size-capped tmpfs /tmp; the other
backends get a writable `work/` owned by the slot uid. stdout and stderr are files opened by the
launcher, so RLIMIT_FSIZE caps them; there is never an unbounded pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from rlft.sandbox import backends, procs
from rlft.sandbox.result import Limits, RunResult, sandbox_error

log = logging.getLogger(__name__)
MAIN = "main.py"
TOOL_PREFIXES = ("bwrap:", "setpriv:", "prlimit:", "unshare:")
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


class LocalSandbox:
    """A local backend ('bwrap', 'unshare' or 'rlimit'); thread-safe, each run takes a slot uid."""

    def __init__(
        self,
        backend: str,
        limits: Limits | None = None,
        root_dir: str | None = None,
        allow_unsafe: bool | None = None,
        allow_same_uid: bool | None = None,
    ):
        """`allow_unsafe` opts into the rlimit backend, `allow_same_uid` (when not root) into running
        programs as this user; both default to their RLFT_SANDBOX_ALLOW_* environment variables."""
        if backend not in backends.BACKENDS:
            raise ValueError(f"unknown sandbox backend '{backend}'")
        unsafe = backends.allow_unsafe_from_env() if allow_unsafe is None else allow_unsafe
        backends.candidate_backends(backend, unsafe)  # refuses 'rlimit' without the opt-in
        self.backend = backend
        self.limits = limits or Limits()
        self.root_dir = root_dir
        if root_dir is not None:
            check_traversable(Path(root_dir))
        self.switch_uid = backends.uses_slot_uids(allow_same_uid)  # refuses non-root without opt-in
        if not self.switch_uid:
            log.warning(
                "sandbox same-uid mode (%s): not root, so programs run as this user (uid %d), with no "
                "process limit (RLIMIT_NPROC) and no sweep of leftover processes by uid",
                backends.SAME_UID_ENV,
                os.geteuid(),
            )

    def run(
        self,
        code: str,
        stdin: str | bytes | None = None,
        limits: Limits | None = None,
        files: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run `code` as main.py (with extra `files` beside it) and return the classified result."""
        limits = limits or self.limits
        rundir = Path(tempfile.mkdtemp(prefix="rlft-sbx-", dir=self.root_dir))
        try:
            if not self.switch_uid:
                return self._run_in(rundir, None, code, stdin, limits, files)
            with procs.slot_uid() as uid:
                return self._run_in(rundir, uid, code, stdin, limits, files)
        except OSError as e:
            return sandbox_error(f"launcher: {type(e).__name__}: {e}", self.backend)
        finally:
            shutil.rmtree(rundir, ignore_errors=True)

    def _run_in(
        self,
        rundir: Path,
        uid: int | None,
        code: str,
        stdin: str | bytes | None,
        limits: Limits,
        files: Mapping[str, str] | None,
    ) -> RunResult:
        if uid is not None:  # leftovers of a launcher that died mid-run (weaker backends)
            procs.kill_uid(uid)
        work = self._prepare(rundir, uid, {**(files or {}), MAIN: code}, stdin)
        cmd = backends.full_command(self.backend, work, limits, MAIN, set_nproc=uid is not None)
        env = {**backends.ENV, "HOME": str(work)}
        start = time.monotonic()
        timed_out, code = spawn_and_wait(cmd, rundir, work, env, uid, limits.wall_s)
        wall = time.monotonic() - start
        if uid is not None:
            procs.kill_uid(uid)
            if self.backend != "bwrap":
                remove_files_of(uid, SCRATCH_DIRS)
        return classify(self.backend, code, timed_out, read_output(rundir, limits), wall, limits)

    def _prepare(
        self, rundir: Path, uid: int | None, files: Mapping[str, str], stdin: str | bytes | None
    ) -> Path:
        os.chmod(rundir, 0o711)
        work = rundir / "work"
        work.mkdir(mode=0o755)
        for name, text in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"sandbox file name '{name}' must be a plain name")
            (work / name).write_text(text)
            os.chmod(work / name, 0o644)
        if uid is not None and self.backend != "bwrap":
            os.chown(work, uid, uid)  # weaker backends write their files here
            os.chmod(work, 0o700)
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        (rundir / "stdin").write_bytes(data)
        return work


def spawn_and_wait(
    cmd: list[str], rundir: Path, work: Path, env: dict, uid: int | None, wall_s: float
) -> tuple[bool, int]:
    """Start the program in its own session as the slot uid; on the wall limit kill its whole
    group. Returns (timed out, exit code)."""
    ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    with (
        open(rundir / "stdin", "rb") as fin,
        open(rundir / "stdout", "wb") as fout,
        open(rundir / "stderr", "wb") as ferr,
    ):
        proc = subprocess.Popen(
            cmd, stdin=fin, stdout=fout, stderr=ferr, cwd=work, env=env, start_new_session=True, **ids
        )
    timed_out = False
    try:
        proc.wait(timeout=wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return timed_out, proc.returncode


def check_traversable(path: Path) -> None:
    """The slot uids must reach the run dirs: every ancestor of `path` needs o+x."""
    for p in [path.resolve(), *path.resolve().parents]:
        if not os.stat(p).st_mode & 0o001:
            raise ValueError(f"sandbox root dir {path}: {p} is not searchable by other users (chmod o+x)")


def remove_files_of(uid: int, dirs: tuple[str, ...]) -> None:
    """Delete entries owned by the slot uid in world-writable scratch dirs (weaker backends)."""
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


def read_output(rundir: Path, limits: Limits) -> dict[str, object]:
    """The first `output_chars` characters of stdout/stderr, and the files' full sizes."""
    out: dict[str, object] = {}
    for name in ("stdout", "stderr"):
        path = rundir / name
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(limits.output_chars * 4)
        out[name] = raw.decode("utf-8", errors="replace")[: limits.output_chars]
        out[name + "_bytes"] = size
        if size > len(raw) and name == "stderr":  # keep the end of stderr: the traceback
            with open(path, "rb") as f:
                f.seek(max(0, size - 4096))
                out["stderr_tail"] = f.read().decode("utf-8", errors="replace")
    out.setdefault("stderr_tail", str(out["stderr"])[-4096:])
    return out


def exit_signal(backend: str, code: int | None) -> int | None:
    """The signal that ended the program: negative return codes, or bwrap's 128+N."""
    if code is None:
        return None
    if code < 0:
        return -code
    if backend == "bwrap" and 128 < code < 128 + 65:
        return code - 128
    return None


def classify(
    backend: str, code: int | None, timed_out: bool, out: Mapping, wall: float, limits: Limits
) -> RunResult:
    """Map the exit code, the output sizes and the stderr tail to a status and a reason."""
    status, reason = _status(backend, code, timed_out, out, limits)
    return RunResult(status, code, str(out["stdout"]), str(out["stderr"]), reason, round(wall, 4), backend)


def _status(backend: str, code: int | None, timed_out: bool, out: Mapping, limits: Limits) -> tuple[str, str]:
    sig = exit_signal(backend, code)
    tail = str(out["stderr_tail"])
    cap = limits.file_size_mb << 20
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.wall_s:g} s reached; process tree killed"
    if sig == signal.SIGXCPU:
        return "timeout", f"CPU time limit of {limits.cpu_s} s reached (SIGXCPU)"
    if code == 1 and tail.lstrip().startswith(TOOL_PREFIXES):
        return "sandbox_error", tail.strip().splitlines()[0][:500]
    too_big = max(int(out["stdout_bytes"]), int(out["stderr_bytes"])) >= cap
    if sig == signal.SIGXFSZ or too_big or "[Errno 27] File too large" in tail:
        return "output_limit", f"file size / output limit of {limits.file_size_mb} MiB reached"
    if code == 0:
        return "ok", ""
    if "MemoryError" in tail or "[Errno 12] Cannot allocate memory" in tail:
        return "memory_limit", f"address-space limit of {limits.memory_mb} MiB reached"
    if sig is not None:
        return "runtime_error", f"killed by signal {signal.Signals(sig).name}"
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return "runtime_error", f"exit code {code}" + (f": {last[:500]}" if last else "")
