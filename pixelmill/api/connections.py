"""Connection limits for `pixelmill serve`: uvicorn's h11 protocol with a deadline for each request's head and
body, and a connection cap that sheds idle connections rather than refusing requests.

uvicorn has no header-read timeout (its issue #157, `--timeout-request-start`, is still open):
`timeout_keep_alive` is cancelled by the first byte a client sends, so a connection that trickles a request
head is held for ever, and `limit_concurrency` counts such connections, then answers every request, /healthz
too, 503. Here a request head must be complete within PIXELMILL_HTTP_HEADER_TIMEOUT seconds of the connection
opening (or of the previous response), and its body within PIXELMILL_HTTP_BODY_TIMEOUT seconds of the head;
a late connection is closed. A request being answered has no deadline (a long route is not cut off). Past
PIXELMILL_HTTP_MAX_CONNECTIONS open connections a new one closes the connection that has waited longest for a
request head (idle keep-alive or half-sent); only when every connection is mid-request is the new one answered
503 and closed. Each connection carries at most one request at a time, so the cap bounds concurrency too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from contract.settings import Settings

log = logging.getLogger("uvicorn.error")  # where `pixelmill serve` logs: uvicorn configures it
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
# A request head still incomplete past this many bytes: 400 (h11 buffers no more of an unfinished event; a head
# that arrives whole in one read, at most 256 KiB, is parsed).
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.http_header_timeout, settings.http_body_timeout, settings.http_max_connections)


class BoundedH11Protocol(H11Protocol):
    """H11Protocol with request deadlines and the shedding connection cap (module docstring)."""

    limits: ClassVar[ConnectionLimits]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.deadline: asyncio.TimerHandle | None = None
        self.phase: str | None = None  # "head" or "body" while a deadline runs
        self.waiting_since = self.loop.time()
        super().connection_made(transport)
        open_now = sum(not c.transport.is_closing() for c in self.connections if c.transport is not None)
        if open_now > self.limits.max_connections and not self.shed_one():
            log.warning("connection refused: %d open, every one mid-request", open_now - 1)
            transport.write(BUSY)
            transport.close()
            return
        self.watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self.watch()

    def waiting_for_head(self) -> bool:
        return self.phase == "head" and not self.transport.is_closing()

    def shed_one(self) -> bool:
        """Close the open connection that has waited longest for a request head; False if none is waiting."""
        waiting = [c for c in self.connections if c is not self and isinstance(c, BoundedH11Protocol)]
        waiting = [c for c in waiting if c.waiting_for_head()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since)
        log.info("connection closed: over PIXELMILL_HTTP_MAX_CONNECTIONS, it waited longest for a request head")
        oldest.stop_deadline()
        oldest.transport.close()
        return True

    def watch(self) -> None:
        """Start the deadline of what the client is sending now (a head, a body), or stop it once it is sent."""
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self.phase or self.transport.is_closing():
            return
        self.stop_deadline()
        self.phase = phase
        if phase is not None:
            self.waiting_since = self.loop.time()
            timeout = self.limits.header_timeout if phase == "head" else self.limits.body_timeout
            self.deadline = self.loop.call_later(timeout, self.expire, timeout)

    def stop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.phase = None

    def expire(self, timeout: float) -> None:
        if self.transport.is_closing():
            return
        what = "PIXELMILL_HTTP_HEADER_TIMEOUT" if self.phase == "head" else "PIXELMILL_HTTP_BODY_TIMEOUT"
        log.info("connection closed: request %s not complete within %gs (%s)", self.phase, timeout, what)
        self.deadline = None
        self.transport.close()


def protocol_for(settings: Settings) -> type[BoundedH11Protocol]:
    """The protocol class uvicorn makes each connection with, carrying these settings' limits."""
    return type("PixelmillH11Protocol", (BoundedH11Protocol,), {"limits": ConnectionLimits.of(settings)})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's keyword arguments for the limits: the bounded protocol, no websockets, no uvicorn
    concurrency limit (the connection cap replaces it: it would answer /healthz 503)."""
    return {
        "http": protocol_for(settings),
        "ws": "none",
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": settings.http_keep_alive_timeout,
        "limit_concurrency": None,
        "backlog": 2048,
    }
