"""Client for a remote sandbox service speaking SandboxFusion's `POST /run_code` JSON.

Request: {"code", "language": "python", "stdin", "run_timeout", "compile_timeout", "memory_limit_MB"}.
Response: {"status": "Success" | "Failed" | "SandboxError", "message", "run_result": {"status":
"Finished" | "TimeLimitExceeded" | "Error", "return_code", "stdout", "stderr", "execution_time"}}.
Retries (bounded, with backoff) only on connection errors, request timeouts and HTTP 5xx; any
other failure becomes a `sandbox_error` result, never a wrong answer.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from rlft.sandbox.result import Limits, RunResult, sandbox_error

BACKEND = "remote"


class RemoteSandbox:
    """Same `run` interface as the local pool; at most `max_concurrent` requests in flight."""

    def __init__(
        self,
        url: str,
        limits: Limits | None = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        request_slack_s: float = 10.0,
        max_concurrent: int = 16,
    ):
        self.url = url.rstrip("/") + "/run_code"
        self.limits = limits or Limits()
        self.retries = retries
        self.backoff_s = backoff_s
        self.request_slack_s = request_slack_s
        self._gate = threading.BoundedSemaphore(max_concurrent)

    def run(self, code: str, stdin: str | None = None, limits: Limits | None = None, files=None) -> RunResult:
        """Run one Python program remotely (a single file: extra `files` are refused)."""
        if files:
            return sandbox_error("the remote backend runs a single file; extra files are not supported")
        limits = limits or self.limits
        body = {
            "code": code,
            "language": "python",
            "stdin": stdin or "",
            "run_timeout": limits.wall_s,
            "compile_timeout": limits.wall_s,
            "memory_limit_MB": limits.memory_mb,
        }
        start = time.monotonic()
        with self._gate:
            reply, error = self._post_with_retries(body, limits.wall_s + self.request_slack_s)
        wall = round(time.monotonic() - start, 4)
        if reply is None:
            return sandbox_error(error, BACKEND, wall)
        return from_reply(reply, limits, wall)

    def _post_with_retries(self, body: Mapping, timeout_s: float) -> tuple[dict | None, str]:
        data = json.dumps(body).encode()
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                    return json.loads(resp.read(64 << 20)), ""
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code} from {self.url}"
                if e.code < 500:
                    return None, error
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except ValueError as e:  # bad JSON
                return None, f"invalid JSON from {self.url}: {e}"
        return None, f"{error} (after {self.retries + 1} attempts)"


def from_reply(reply: Mapping[str, Any], limits: Limits, wall: float) -> RunResult:
    """Map a SandboxFusion reply to a RunResult."""
    run = reply.get("run_result") or {}
    if reply.get("status") == "SandboxError" or not isinstance(run, Mapping) or not run:
        return sandbox_error(f"remote: {reply.get('message') or reply.get('status') or 'no run_result'}")
    out, err = str(run.get("stdout") or ""), str(run.get("stderr") or "")
    code = run.get("return_code")
    run_status = run.get("status")
    if run_status == "TimeLimitExceeded":
        status, reason = "timeout", f"remote time limit of {limits.wall_s:g} s reached"
    elif "MemoryError" in err[-4096:]:
        status, reason = "memory_limit", "remote memory limit reached"
    elif run_status == "Finished" and code == 0:
        status, reason = "ok", ""
    else:
        last = err.strip().splitlines()[-1][:500] if err.strip() else ""
        status, reason = "runtime_error", f"exit code {code}" + (f": {last}" if last else "")
    cap = limits.output_chars
    return RunResult(status, code, out[:cap], err[:cap], reason, wall, BACKEND)  # type: ignore[arg-type]
