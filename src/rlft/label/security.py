"""Access token, CSRF tokens, request-size limit and security headers for the ranking app.

Pure ASGI middleware (no buffering of responses). Order, outermost first:
SecurityHeaders -> TokenAuth -> BodySizeLimit -> app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024
CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def cookie_names(token: str) -> tuple[str, str]:
    """(auth cookie, CSRF cookie) names, distinct per server token so two servers on one host
    (cookies ignore the port) do not overwrite each other's cookies."""
    tag = hashlib.sha256(token.encode()).hexdigest()[:10]
    return f"rlft_label_{tag}", f"rlft_csrf_{tag}"


def request_cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is treated as no cookie
                continue
    return {k: m.value for k, m in jar.items()}


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


def set_cookie_header(name: str, value: str) -> tuple[bytes, bytes]:
    return b"set-cookie", f"{name}={value}; Path=/; HttpOnly; SameSite=Strict".encode()


async def send_text(send: Send, status: int, text: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": text}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds CSP, nosniff, frame and referrer policy, no-store to every HTTP response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TokenAuth:
    """Refuses every request without the server token: 401 when none is given, 403 when it is
    wrong. Accepted from `Authorization: Bearer`, the auth cookie, or `?token=`; a valid query
    token also sets the auth cookie (HttpOnly, SameSite=Strict) so later requests need no token."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token
        self.cookie_name = cookie_names(token)[0]

    def _candidates(self, scope: Scope) -> tuple[list[str], bool]:
        found, from_query = [], False
        auth = header(scope, b"authorization")
        if auth and auth.lower().startswith("bearer "):
            found.append(auth[7:].strip())
        cookie = request_cookies(scope).get(self.cookie_name)
        if cookie:
            found.append(cookie)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        if query:
            found.append(query[0])
            from_query = True
        return found, from_query

    def _valid(self, candidate: str) -> bool:
        return secrets.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode("utf-8"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        found, from_query = self._candidates(scope)
        if not found:
            return await send_text(send, 401, "missing token: open the URL printed by `rlft label serve`")
        if not all(self._valid(c) for c in found):
            return await send_text(send, 403, "invalid token")
        if not from_query:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    set_cookie_header(self.cookie_name, self.token)
                ]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class BodySizeLimit:
    """413 for a request body over `max_bytes`: checks Content-Length up front, then reads the
    streamed body (up to the limit) before the app sees it and replays it."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await send_text(send, 413, f"request body over {self.max_bytes} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await send_text(send, 413, f"request body over {self.max_bytes} bytes")
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CsrfSigner:
    """Per-session CSRF tokens: the session's random nonce lives in an HttpOnly cookie; the page
    embeds `nonce.HMAC(secret, nonce)`, which the client echoes in the X-CSRF-Token header.
    A submission is accepted only when the signature verifies and the nonce matches the cookie."""

    def __init__(self, token: str):
        self.secret = secrets.token_bytes(32)
        self.cookie_name = cookie_names(token)[1]

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self, cookie_nonce: str | None) -> tuple[str, str]:
        """(nonce for the cookie, token for the page); keeps a well-formed existing nonce."""
        nonce = cookie_nonce if cookie_nonce and len(cookie_nonce) == 43 else secrets.token_urlsafe(32)
        return nonce, f"{nonce}.{self._sign(nonce)}"

    def check(self, header_token: str | None, cookie_nonce: str | None) -> bool:
        if not header_token or not cookie_nonce or "." not in header_token:
            return False
        nonce, sig = header_token.rsplit(".", 1)
        good_sig = secrets.compare_digest(sig.encode(), self._sign(nonce).encode())
        return good_sig and secrets.compare_digest(nonce.encode(), cookie_nonce.encode())
