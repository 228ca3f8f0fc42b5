"""The HTTP API's bounds, checked in front of FastAPI before a route (or FastAPI's body parsing) runs.

In order: without tokens (loopback only), the Host must name a loopback address and this server's port (421)
and a browser's `Origin` must be this server (403), so a web page on the same host cannot reach the API through
DNS rebinding or a cross-site form; on `/v1` the bearer token is checked before any body byte is read (401);
a body must be `application/json` (415), at most PIXELMILL_HTTP_MAX_BODY_BYTES whether its length is declared
or it is chunked (413, counted as it arrives, never read past the cap), and nested at most MAX_JSON_DEPTH deep
(422). A refusal that leaves body bytes unread closes the connection, so the rest is never read either.

With tokens, Host and Origin are not checked: behind a proxy the Host is the proxy's to choose, and a browser
cannot attach the bearer token to a cross-site request (no CORS is served), so the token already refuses it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from contract.jsondepth import too_deep
from pixelmill.api.access import CALLER, UNAUTHORISED, Door, bearer_token, caller

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json",)


class Bounds:
    """Pure ASGI middleware (no BaseHTTPMiddleware: that one reads nothing early, but cannot refuse a body it
    has not read without reading it)."""

    def __init__(self, app: ASGIApp, door: Door) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")
        refusal = await run_in_threadpool(self.refusal, scope, headers, has_body)  # the token: a ledger lookup
        if refusal is not None:
            await answer(scope, receive, send, *refusal, unread=has_body)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        try:
            body = await read_capped(receive, self.door.settings.http_max_body_bytes)
        except ClientGone:  # nobody to answer; the route never sees half a body
            return
        if body is None:
            await answer(scope, receive, send, 413, self.too_large(), unread=True)
            return
        problem = await run_in_threadpool(too_deep, body) if body else None
        if problem is not None:
            await answer(scope, receive, send, 422, {"problems": [problem]})
            return
        await self.app(scope, replay(body, receive), send)

    def refusal(self, scope: Scope, headers: dict[str, str], has_body: bool) -> tuple[int, dict[str, Any]] | None:
        """What to answer before reading the body, if anything: status and JSON."""
        if self.door.anonymous:
            wrong = wrong_host(scope, headers)
            if wrong is not None:
                return wrong[0], {"detail": wrong[1]}
        if scope["path"].startswith("/v1"):
            who = caller(self.door, bearer_token(headers.get("authorization")))
            if who is None:
                return 401, {"detail": UNAUTHORISED}
            scope.setdefault("state", {})[CALLER] = who  # the route's `Auth` reads it: one lookup a request
        if not has_body:
            return None
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.door.settings.http_max_body_bytes):
            return 413, self.too_large()
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in JSON_TYPES:
            return 415, {"detail": f"request body must be application/json (Content-Type: {media or 'none'!r})"}
        return None

    def too_large(self) -> dict[str, Any]:
        limit = self.door.settings.http_max_body_bytes
        return {
            "detail": f"request body over {limit} bytes (PIXELMILL_HTTP_MAX_BODY_BYTES); "
            f"send large catalogues as 'source'"
        }


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def read_capped(receive: Receive, limit: int) -> bytes | None:
    """The whole body, counted as it arrives; None as soon as it passes `limit` bytes (the rest is not read).
    ClientGone when the connection closes first (or its body deadline closed it)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the app the body already read, then whatever the connection says next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def answer(
    scope: Scope, receive: Receive, send: Send, status: int, content: dict[str, Any], *, unread: bool = False
) -> None:
    """A JSON refusal; with `unread` body bytes, `Connection: close`, so the server stops reading them."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if unread:
        headers["Connection"] = "close"
    await JSONResponse(content, status_code=status, headers=headers)(scope, receive, send)


def loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def same_server(authority: str, scheme: str, scope: Scope) -> bool:
    """`authority` (host[:port]) names a loopback address and the port this server listens on."""
    try:
        parts = urlsplit(f"{scheme}://{authority}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return False
    if host is None or parts.username is not None or not loopback_name(host):
        return False
    server = scope.get("server")
    if server is None or server[1] is None:  # a unix socket: no port to compare
        return True
    return bool((port or (443 if scheme == "https" else 80)) == server[1])


def wrong_host(scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
    """421 when the Host, 403 when a browser's Origin is not this loopback server, and why; else None."""
    scheme = str(scope.get("scheme", "http"))
    host = headers.get("host", "")
    if not same_server(host, scheme, scope):
        return 421, (
            f"Host {host[:100]!r} is not this server's loopback address and port; without "
            f"PIXELMILL_API_TOKENS the API answers only requests to 127.0.0.1, [::1] or localhost"
        )
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin) if origin != "null" else None
        if parts is None or parts.scheme != scheme or not same_server(parts.netloc, scheme, scope):
            return 403, (
                f"Origin {origin[:100]!r} is another site; without PIXELMILL_API_TOKENS the API refuses "
                f"requests from web pages other than its own"
            )
    return None
