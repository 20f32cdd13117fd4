"""rlft.sandbox.remote: SandboxFusion-compatible client against a local stub server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlft.sandbox.remote import RemoteSandbox
from rlft.sandbox.result import Limits


class Stub:
    """Replies from a script: a list of (HTTP code, JSON body) consumed one per request."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, **body})
                code, reply = stub.replies.pop(0) if stub.replies else (500, {})
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def finished(stdout="", code=0, status="Finished", stderr=""):
    run = {"status": status, "return_code": code, "stdout": stdout, "stderr": stderr, "execution_time": 0.1}
    return 200, {"status": "Success", "message": "", "run_result": run}


@pytest.fixture
def stub_factory():
    stubs = []

    def make(replies):
        stubs.append(Stub(replies))
        return stubs[-1]

    yield make
    for s in stubs:
        s.server.shutdown()


def test_request_shape_and_ok(stub_factory):
    stub = stub_factory([finished("3\n")])
    res = RemoteSandbox(stub.url, Limits(wall_s=4, memory_mb=128)).run("print(1+2)", stdin="x")
    assert (res.status, res.stdout, res.backend) == ("ok", "3\n", "remote")
    req = stub.requests[0]
    assert req["path"] == "/run_code"
    assert (req["language"], req["code"], req["stdin"]) == ("python", "print(1+2)", "x")
    assert (req["run_timeout"], req["memory_limit_MB"]) == (4, 128)


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (finished(status="TimeLimitExceeded", code=None), "timeout"),
        (finished(code=1, stderr="Traceback\nMemoryError"), "memory_limit"),
        (finished(code=1, status="Error", stderr="ZeroDivisionError: division by zero"), "runtime_error"),
        ((200, {"status": "SandboxError", "message": "no worker"}), "sandbox_error"),
    ],
)
def test_status_mapping(stub_factory, reply, status):
    stub = stub_factory([reply])
    assert RemoteSandbox(stub.url, retries=0).run("x").status == status


def test_retries_5xx_then_succeeds(stub_factory):
    stub = stub_factory([(503, {}), (504, {}), finished("ok\n")])
    res = RemoteSandbox(stub.url, retries=3, backoff_s=0.01).run("print('ok')")
    assert res.status == "ok" and len(stub.requests) == 3  # two failures, then success


def test_retries_are_bounded(stub_factory):
    stub = stub_factory([(502, {})] * 10)
    res = RemoteSandbox(stub.url, retries=2, backoff_s=0.01).run("x")
    assert res.status == "sandbox_error" and "after 3 attempts" in res.reason
    assert len(stub.requests) == 3  # 1 try + 2 retries


def test_client_errors_are_not_retried(stub_factory):
    stub = stub_factory([(400, {}), finished()])
    res = RemoteSandbox(stub.url, retries=3, backoff_s=0.01).run("x")
    assert res.status == "sandbox_error" and "HTTP 400" in res.reason and len(stub.requests) == 1


def test_unreachable_server_is_a_sandbox_error():
    res = RemoteSandbox("http://127.0.0.1:9", retries=1, backoff_s=0.01).run("x")  # port 9: discard
    assert res.status == "sandbox_error" and "after 2 attempts" in res.reason
