"""Crash safety: kill -9 the real server while a client submits; every acknowledged ranking is in
the db afterwards and the db is intact. Also: the server binds loopback and prints a random token."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from label_support import write_jsonl

ANNOTATORS = ("ann-a", "ann-b", "ann-c")


def rankings_for(i: int) -> list:
    """A distinct valid ranking of 3 responses per submission index (ties included)."""
    choices = [[0, 1, 2], [2, 1, 0], [[0, 1], 2], [1, [0, 2]], [2, 0, 1], [[0, 1, 2]]]
    return choices[i % len(choices)]


def listen_addresses(port: int) -> list[str]:
    """IPv4 addresses listening on `port`, from /proc/net/tcp (hex little-endian address:port)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
            found.append(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return found


def submit_until_killed(client: httpx.Client, csrf: str, acked: list, stop: threading.Event) -> None:
    """Submit (prompt, annotator) rankings in a loop; record each one answered 200."""
    i = 0
    while not stop.is_set():
        prompt_id, annotator = f"p{i // len(ANNOTATORS)}", ANNOTATORS[i % len(ANNOTATORS)]
        body = {"prompt_id": prompt_id, "annotator": annotator, "ranking": rankings_for(i)}
        try:
            r = client.post("/api/rank", json=body, headers={"X-CSRF-Token": csrf})
        except httpx.TransportError:
            return
        assert r.status_code == 200, r.text
        acked.append((prompt_id, annotator, r.json()["ranking"]))
        i += 1


def test_kill_9_keeps_every_acknowledged_ranking(tmp_path: Path, start_server):
    rows = [{"id": f"p{i}", "prompt": f"prompt {i}", "responses": ["a", "b", "c"]} for i in range(400)]
    responses = write_jsonl(tmp_path / "many.jsonl", rows)
    server = start_server(tmp_path / "crash.sqlite", "--responses", str(responses))
    # default bind is loopback; the printed URL carries a random token
    assert server.url.startswith("http://127.0.0.1:")
    assert len(server.token) >= 40 and re.search(
        rf"token: {re.escape(server.token)}\n", server.log.read_text()
    )

    port = int(server.base.rsplit(":", 1)[1])
    if Path("/proc/net/tcp").exists():  # Linux: the listening socket is on loopback only
        assert listen_addresses(port) == ["127.0.0.1"]

    client = httpx.Client(base_url=server.base, timeout=10)
    page = client.get("/", params={"token": server.token})
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    acked: list = []
    stop = threading.Event()
    worker = threading.Thread(target=submit_until_killed, args=(client, csrf, acked, stop))
    worker.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.005)
    server.proc.send_signal(signal.SIGKILL)  # midway through the loop, a request likely in flight
    server.proc.wait(timeout=10)
    stop.set()
    worker.join(timeout=30)
    assert len(acked) >= 40, f"only {len(acked)} acknowledged before the deadline"
    assert len(acked) < len(rows) * len(ANNOTATORS), "the loop finished before the kill"

    con = sqlite3.connect(server.db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {(p, a): r for p, a, r in con.execute("SELECT prompt_id, annotator, ranking FROM rankings")}
    for prompt_id, annotator, ranking in acked:
        assert json.loads(stored[(prompt_id, annotator)]) == ranking, (prompt_id, annotator)
    # at most the one request in flight at the kill may have committed without its 200 arriving
    assert len(acked) <= len(stored) <= len(acked) + 1
