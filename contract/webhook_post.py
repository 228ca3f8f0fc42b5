"""One webhook POST with hard bounds (issue 22, findings 5 and 8).

httpcore, not httpx's high-level client, because its network backend can be replaced: `_PinnedBackend`
connects to the address `check_webhook_target` checked (no second DNS lookup) while the request keeps the
receiver's host name for the Host header, TLS SNI and certificate verification; `_DeadlineStream` clamps
every socket read and write to what is left of one total deadline, so a receiver that trickles one byte a
second cannot stretch an attempt past PIXELMILL_WEBHOOK_TIMEOUT. At most `_BODY_LIMIT` bytes of the answer are
kept, and only when it is not 2xx (for the error message). httpcore never follows redirects.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpcore

from contract.webhook_target import WebhookTarget

_BODY_LIMIT = 1024  # bytes of a non-2xx answer read, for last_error


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most _BODY_LIMIT bytes, empty for 2xx


@lru_cache(maxsize=1)
def default_ssl_context() -> ssl.SSLContext:
    """certifi's CAs, host names checked; shared by every attempt (an SSLContext is thread-safe)."""
    return httpcore.default_ssl_context()


def post(
    target: WebhookTarget,
    payload: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    ssl_context: ssl.SSLContext | None = None,
) -> Answer:
    """POST `payload` to the checked target, finished by `deadline` (time.monotonic()) or httpcore.TimeoutException."""
    backend = _PinnedBackend(target, deadline)
    left = _left(deadline, None)
    timeouts = {"connect": left, "read": left, "write": left, "pool": left}
    with httpcore.ConnectionPool(
        ssl_context=ssl_context or default_ssl_context(), network_backend=backend, max_connections=1, retries=0
    ) as pool:
        url = httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.host.encode("idna"),
            port=target.port,
            target=target.target.encode(),
        )
        sent = [(b"Host", target.host_header.encode("idna")), *((k.encode(), v.encode()) for k, v in headers.items())]
        sent.append((b"Content-Length", str(len(payload)).encode()))
        with pool.stream("POST", url, headers=sent, content=payload, extensions={"timeout": timeouts}) as response:
            if 200 <= response.status < 300:
                return Answer(response.status, b"")
            body = b""
            for chunk in response.iter_stream():
                body += chunk
                if len(body) >= _BODY_LIMIT:
                    break
            return Answer(response.status, body[:_BODY_LIMIT])


def _left(deadline: float, timeout: float | None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the attempt's total deadline (PIXELMILL_WEBHOOK_TIMEOUT) passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _left(self._deadline, timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the checked address, whatever host name the request carries."""

    def __init__(self, target: WebhookTarget, deadline: float) -> None:
        self._target = target
        self._deadline = deadline
        self._sync = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        if port != self._target.port:
            raise httpcore.ConnectError(f"refusing to connect to port {port}: not the checked target")
        stream = self._sync.connect_tcp(
            self._target.address, port, _left(self._deadline, timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are never sent to unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
