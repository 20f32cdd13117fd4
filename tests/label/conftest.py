"""Fixtures for the ranking-app tests: a responses file (with XSS payloads) and a real server
started as a subprocess (`python -m rlft.label.cli serve`) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from label_support import REPO_ROOT, SQLI, XSS_IMG, XSS_SCRIPT, write_jsonl


@pytest.fixture
def responses_file(tmp_path: Path) -> Path:
    """Two prompts: q1 with K=4 (two XSS payloads, an `answer` field), q2 with K=3."""
    return write_jsonl(
        tmp_path / "responses.jsonl",
        [
            {
                "id": "q1",
                "prompt": "What is 2+2?",
                "responses": ["four", XSS_SCRIPT, "4, obviously", XSS_IMG],
                "answer": "4",
            },
            {"id": "q2", "prompt": "Name a colour.", "responses": ["red", "blue", SQLI]},
        ],
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT/?token=...
    base: str  # http://127.0.0.1:PORT
    token: str
    db: Path
    log: Path


def _wait_for_token(proc: subprocess.Popen, log: Path, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        url = re.search(r"open (http://\S+\?token=(\S+))", text)
        if url:
            return url.group(1), url.group(2)
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    raise AssertionError(f"server printed no URL within {timeout}s:\n{log.read_text()}")


def _wait_until_up(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(server.base + "/", headers={"Authorization": f"Bearer {server.token}"}, timeout=2)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited:\n{server.log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"server not answering within {timeout}s:\n{server.log.read_text()}")


@pytest.fixture
def start_server(tmp_path: Path):
    """Factory: start_server(db, *extra_args) -> Server (random token, default host); killed at
    teardown."""
    procs: list[subprocess.Popen] = []

    def start(db: Path, *args: str) -> Server:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), PYTHONUNBUFFERED="1")
        env.pop("RLFT_LABEL_TOKEN", None)
        cmd = [sys.executable, "-m", "rlft.label.cli", "serve", "--db", str(db), "--port", str(port), *args]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        url, token = _wait_for_token(proc, log, timeout=30)
        server = Server(proc, url, f"http://127.0.0.1:{port}", token, db, log)
        _wait_until_up(server, timeout=30)
        return server

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
