"""rlft.sandbox start-up policy: no fallback past an installed backend that fails its probe, and
the refusal (or explicit same-uid opt-in) for a launcher that is not root."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlft.sandbox import Limits, LocalSandbox, SandboxPool, SandboxUnavailable, backends, pool, probe_backend
from rlft.sandbox.procs import UID_SPAN, uid_base

REPO_ROOT = Path(__file__).resolve().parents[3]
LIM = Limits(wall_s=5, cpu_s=5, processes=7)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="slot uids need root")
# the program's uid (bwrap maps the launching uid to itself; rlimit has no user namespace) and
# its RLIMIT_NPROC
WHO = "import os, resource\nprint(os.getuid(), resource.getrlimit(resource.RLIMIT_NPROC)[0])"


def installed(name: str):
    """Skip only when the backend's tools are genuinely absent from PATH."""
    missing = backends.missing_tools(name)
    return pytest.mark.skipif(bool(missing), reason=f"{name} not installed: {', '.join(missing)} not on PATH")


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    """Every test probes anew (the cache is per process) with no opt-ins from the environment."""
    monkeypatch.setattr(pool, "_probe_cache", {})
    monkeypatch.delenv(backends.UNSAFE_ENV, raising=False)
    monkeypatch.delenv(backends.SAME_UID_ENV, raising=False)


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


@pytest.fixture
def fake_host(monkeypatch):
    """Fake which backends are installed and which pass the probe; records the probes run."""
    state = {"absent": set(), "broken": {}, "probed": []}

    def missing(name):
        return [name] if name in state["absent"] else []

    def try_backend(name, same_uid):
        state["probed"].append(name)
        return state["broken"].get(name)

    monkeypatch.setattr(backends, "missing_tools", missing)
    monkeypatch.setattr(pool, "_try_backend", try_backend)
    return state


# --- no fallback past an installed backend ------------------------------------------------------


def test_installed_but_broken_strongest_backend_raises_instead_of_falling_back(fake_host):
    fake_host["broken"]["bwrap"] = "sandbox_error: bwrap: setting up uid map: Permission denied"
    with pytest.raises(SandboxUnavailable) as e:
        probe_backend()
    msg = str(e.value)
    assert "'bwrap' is installed but failed" in msg and "setting up uid map: Permission denied" in msg
    assert "backend='unshare'" in msg  # how to get the weaker one on purpose
    assert fake_host["probed"] == ["bwrap"]  # unshare was never tried
    with pytest.raises(SandboxUnavailable, match="'bwrap' is installed but failed"):
        SandboxPool(slots=1)


def test_absent_backend_is_passed_over(fake_host):
    fake_host["absent"] = {"bwrap"}
    assert probe_backend() == "unshare"
    assert fake_host["probed"] == ["unshare"]


def test_broken_second_backend_is_not_skipped_either(fake_host):
    fake_host["absent"] = {"bwrap"}
    fake_host["broken"]["unshare"] = "sandbox_error: unshare: unshare failed: Operation not permitted"
    with pytest.raises(
        SandboxUnavailable, match="'unshare' is installed but failed.*Operation not permitted"
    ):
        probe_backend(allow_unsafe=True)  # rlimit is allowed, but not as a silent fallback
    assert fake_host["probed"] == ["unshare"]


def test_explicit_preferred_backend_is_used_when_the_strongest_is_broken(fake_host):
    fake_host["broken"]["bwrap"] = "sandbox_error: bwrap: boom"
    assert probe_backend("unshare") == "unshare"
    assert probe_backend("rlimit", allow_unsafe=True) == "rlimit"
    fake_host["broken"]["unshare"] = "timeout: wall-clock limit"
    pool._probe_cache.clear()
    with pytest.raises(SandboxUnavailable, match="'unshare' is installed but failed") as e:
        probe_backend("unshare")
    assert "weaker" not in str(e.value)  # nothing was asked beyond the preferred one


def test_nothing_installed_names_every_backend_and_the_unsafe_opt_in(fake_host):
    fake_host["absent"] = {"bwrap", "unshare"}
    with pytest.raises(SandboxUnavailable) as e:
        probe_backend()
    msg = str(e.value)
    assert "bwrap: not installed" in msg and "unshare: not installed" in msg
    assert backends.UNSAFE_ENV in msg and fake_host["probed"] == []
    assert probe_backend(allow_unsafe=True) == "rlimit"


@needs_root
@installed("bwrap")
def test_real_broken_bwrap_command_line_is_an_error(monkeypatch):
    build = backends.BUILDERS["bwrap"]
    monkeypatch.setitem(backends.BUILDERS, "bwrap", lambda *a: ["bwrap", "--no-such-option", *build(*a)[1:]])
    with pytest.raises(
        SandboxUnavailable, match="'bwrap' is installed but failed.*Unknown option --no-such-"
    ):
        probe_backend()
    if not backends.missing_tools("unshare"):
        assert probe_backend("unshare") == "unshare"  # the explicit weaker choice still works


@needs_root
def test_probe_picks_the_strongest_installed_backend():
    expected = next(b for b in ("bwrap", "unshare") if not backends.missing_tools(b))
    assert probe_backend() == expected


# --- not root: refusal, or the explicit same-uid mode -------------------------------------------


def test_not_root_is_refused_with_how_to_opt_in(not_root, fake_host):
    for make in (lambda: LocalSandbox("bwrap"), probe_backend, lambda: SandboxPool(slots=1)):
        with pytest.raises(SandboxUnavailable) as e:
            make()
        msg = str(e.value)
        assert "needs root" in msg and "uid 1000" in msg
        assert f"{backends.SAME_UID_ENV}=1" in msg and "allow_same_uid=True" in msg
    assert fake_host["probed"] == []  # refused before running anything


def test_the_parameter_overrides_the_environment(not_root, monkeypatch, fake_host):
    monkeypatch.setenv(backends.SAME_UID_ENV, "1")
    with pytest.raises(SandboxUnavailable, match="needs root"):
        LocalSandbox("bwrap", allow_same_uid=False)
    monkeypatch.delenv(backends.SAME_UID_ENV)
    assert LocalSandbox("bwrap", allow_same_uid=True).switch_uid is False
    assert probe_backend(allow_same_uid=True) == "bwrap"


@pytest.mark.parametrize("backend", [pytest.param("bwrap", marks=installed("bwrap")), "rlimit"])
def test_same_uid_mode_runs_as_this_user_without_a_process_limit(backend, not_root, monkeypatch, caplog):
    monkeypatch.setenv(backends.SAME_UID_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="rlft.sandbox"):
        box = LocalSandbox(backend, LIM, allow_unsafe=True)
    assert any(
        backends.SAME_UID_ENV in r.getMessage() and "uid 1000" in r.getMessage() for r in caplog.records
    )
    res = box.run(WHO)
    assert res.status == "ok", res
    uid, nproc = map(int, res.stdout.split())
    assert uid == os.getuid()  # the launcher's own (real) uid, not a slot uid
    assert nproc != LIM.processes  # RLIMIT_NPROC is not set in this mode
    if backend == "bwrap":
        assert probe_backend(allow_same_uid=True) == "bwrap"


@needs_root
@pytest.mark.parametrize("backend", [pytest.param("bwrap", marks=installed("bwrap")), "rlimit"])
def test_as_root_programs_run_as_a_slot_uid_with_the_process_limit(backend):
    res = LocalSandbox(backend, LIM, allow_unsafe=True).run(WHO)
    assert res.status == "ok", res
    uid, nproc = map(int, res.stdout.split())
    assert uid_base() <= uid < uid_base() + UID_SPAN and nproc == LIM.processes


@needs_root
def test_cli_probe_as_a_real_non_root_user_is_refused(tmp_path):
    """`rlft sandbox probe` run as nobody (setpriv): exit 1 with the refusal on stderr."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    tmp_path.chmod(0o777)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    res = subprocess.run(
        [*cmd, "-m", "rlft", "sandbox", "probe"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and res.stdout == "", res.stderr
    assert "needs root" in res.stderr and "uid 65534" in res.stderr and backends.SAME_UID_ENV in res.stderr
