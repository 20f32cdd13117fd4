"""rlft.sandbox: status classification, backend choice, the pool, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from rlft.sandbox import Limits, LocalSandbox, Program, SandboxPool, SandboxUnavailable
from rlft.sandbox.backends import candidate_backends, full_command, missing_tools, rlimit_prefix
from rlft.sandbox.local import classify, exit_signal
from rlft.sandbox.result import RunResult

LIM = Limits(wall_s=2, cpu_s=2, memory_mb=256, file_size_mb=1)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="slot uids need root")


def out(stdout="", stderr="", stdout_bytes=None, stderr_bytes=None):
    return {
        "stdout": stdout,
        "stderr": stderr,
        "stderr_tail": stderr,
        "stdout_bytes": len(stdout) if stdout_bytes is None else stdout_bytes,
        "stderr_bytes": len(stderr) if stderr_bytes is None else stderr_bytes,
    }


@pytest.mark.parametrize(
    ("backend", "code", "timed_out", "o", "status"),
    [
        ("bwrap", 0, False, out("7\n"), "ok"),
        ("bwrap", -9, True, out(), "timeout"),  # wall limit wins over the kill signal
        ("bwrap", 128 + 24, False, out(), "timeout"),  # bwrap reports SIGXCPU as 128+24
        ("unshare", -24, False, out(), "timeout"),  # SIGXCPU as a negative return code
        ("rlimit", 120, False, out(stdout_bytes=1 << 20), "output_limit"),  # stdout at the 1 MiB cap
        ("rlimit", 1, False, out(stderr="OSError: [Errno 27] File too large"), "output_limit"),
        ("rlimit", -25, False, out(), "output_limit"),  # SIGXFSZ (a C program)
        ("bwrap", 1, False, out(stderr="Traceback\nMemoryError\n"), "memory_limit"),
        ("bwrap", 1, False, out(stderr="bwrap: Creating new namespace failed"), "sandbox_error"),
        ("rlimit", 1, False, out(stderr="ValueError: x\n"), "runtime_error"),
        ("rlimit", -11, False, out(), "runtime_error"),
    ],
)
def test_classify(backend, code, timed_out, o, status):
    res = classify(backend, code, timed_out, o, 0.5, LIM)
    assert res.status == status
    assert (res.reason == "") == (status == "ok")


def test_exit_signal_only_maps_128_plus_n_for_bwrap():
    assert exit_signal("bwrap", 137) == signal.SIGKILL  # 128 + 9
    assert exit_signal("unshare", 137) is None  # a plain exit code there
    assert exit_signal("rlimit", -9) == signal.SIGKILL
    assert exit_signal("bwrap", 0) is None


def test_runtime_error_reason_names_the_last_stderr_line():
    res = classify("rlimit", 1, False, out(stderr="Traceback ...\nKeyError: 'k'\n"), 0.1, LIM)
    assert res.reason == "exit code 1: KeyError: 'k'"


def test_rlimit_backend_needs_explicit_opt_in(monkeypatch):
    monkeypatch.delenv("RLFT_SANDBOX_ALLOW_UNSAFE", raising=False)
    assert list(candidate_backends(None, allow_unsafe=False)) == ["bwrap", "unshare"]
    assert list(candidate_backends(None, allow_unsafe=True)) == ["bwrap", "unshare", "rlimit"]
    with pytest.raises(SandboxUnavailable, match="not a security boundary"):
        LocalSandbox("rlimit")
    monkeypatch.setenv("RLFT_SANDBOX_ALLOW_UNSAFE", "1")
    assert LocalSandbox("rlimit").backend == "rlimit"
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        candidate_backends("docker", True)


def test_command_sets_every_rlimit_and_dies_with_the_launcher():
    lim = Limits(cpu_s=3, memory_mb=2, file_size_mb=1, open_files=9, processes=5)
    assert rlimit_prefix(lim, set_nproc=True) == [
        "prlimit",
        "--cpu=3:4",
        "--as=2097152",  # 2 MiB
        "--fsize=1048576",  # 1 MiB
        "--nofile=9",
        "--core=0",
        "--nproc=5",
        "--",
    ]
    cmd = full_command("bwrap", __import__("pathlib").Path("/w"), lim, "main.py", True)
    assert cmd[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv", "--new-session"):
        assert flag in cmd
    assert cmd[cmd.index("--tmpfs") - 1] == str(64 << 20)  # size-capped /tmp


def test_root_dir_must_be_searchable(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="not searchable"):
        LocalSandbox("bwrap", root_dir=str(private))


@needs_root
def test_pool_runs_in_parallel_and_keeps_order():
    pool = SandboxPool(slots=4)
    programs = [Program(f"import time\ntime.sleep(0.6)\nprint({i})") for i in range(4)]
    t0 = time.monotonic()
    results = pool.map(programs, LIM)
    elapsed = time.monotonic() - t0
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert all(r.backend == pool.backend for r in results)
    assert elapsed < 4 * 0.6  # serial would take at least 2.4 s


@needs_root
def test_pool_stdin_and_extra_files():
    pool = SandboxPool(slots=2)
    code = "import os, sys\nd = os.path.dirname(__file__)\n"
    code += "print(open(d + '/data.txt').read() * 2, sys.stdin.read())"
    res = pool.run(code, "ab", LIM, {"data.txt": "xy"})
    # data.txt sits beside main.py (python -I puts no script dir on sys.path; files are read by path)
    assert (res.status, res.stdout) == ("ok", "xyxy ab\n")


def test_result_json_has_the_cli_keys():
    res = RunResult("ok", 0, "x", "", "", 0.1, "bwrap")
    assert list(res.to_json()) == ["status", "exit_code", "stdout", "stderr", "reason", "wall_s"]
    assert res.with_status("wrong", "differs").status == "wrong"


@needs_root
def test_cli_probe_and_run(cli, tmp_path):
    probe = cli("sandbox", "probe")
    strongest = next(b for b in ("bwrap", "unshare") if not missing_tools(b))  # no fallback past it
    assert (probe.returncode, probe.stdout.strip()) == (0, strongest), probe.stderr
    prog = tmp_path / "p.py"
    prog.write_text("import sys\nprint(sys.stdin.read().upper())\nraise SystemExit(2)")
    stdin = tmp_path / "in.txt"
    stdin.write_text("hi")
    os.chmod(tmp_path, 0o755)
    res = cli("sandbox", "run", str(prog), "--stdin", str(stdin), "--timeout", "5", "--json")
    data = json.loads(res.stdout)
    assert res.returncode == 1  # not ok
    assert (data["status"], data["exit_code"], data["stdout"]) == ("runtime_error", 2, "HI\n")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)")
    data = json.loads(cli("sandbox", "run", str(slow), "--timeout", "1", "--json").stdout)
    assert data["status"] == "timeout" and 1 <= data["wall_s"] < 10


def test_a_slot_another_process_holds_is_skipped(tmp_path, monkeypatch):
    # two trainers on one host must not share a slot uid (each kills whatever its uid leaves)
    import subprocess
    import sys

    from rlft.sandbox import procs

    env = {**os.environ, procs.LOCK_DIR_ENV: str(tmp_path), procs.UID_BASE_ENV: "62000"}
    monkeypatch.setenv(procs.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(procs.UID_BASE_ENV, "62000")
    monkeypatch.setattr(procs, "_cursor", 0)
    code = (
        "from rlft.sandbox import procs\n"
        "with procs.slot_uid() as uid:\n    print(uid, flush=True)\n    input()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "62000"  # the child's first slot
        with procs.slot_uid() as mine:
            assert mine == 62001  # 62000 is locked by the child: the next one
    finally:
        child.communicate("\n", timeout=10)
    with procs.slot_uid() as again:  # the child's lock went with it
        assert again == 62002  # rotation goes on from the cursor
    monkeypatch.setattr(procs, "_cursor", 0)
    with procs.slot_uid() as first:
        assert first == 62000
