"""`GET /metrics` of the HTTP API (Prometheus text format) and the middleware that counts (and traces) every
request by its route template, never its path: `/v1/jobs/{job_id}`, so job ids never become labels.

The route needs the bearer token PIXELMILL_METRICS_TOKEN when it is set (a scrape config's `authorization`);
the tenants' API tokens do not open it, since the metrics name every tenant.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from contract import logs, metrics
from pixelmill.api.bounds import ASGIApp, Message, Receive, Scope, Send


class Measured:
    """Pure ASGI middleware: seconds and status code of every HTTP request, by route template; and its trace id
    (from `traceparent` or `X-Request-Id`, else new), in its log lines and the `X-Trace-Id` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, code = time.perf_counter(), 500
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        trace = logs.trace_of(headers.get("traceparent"), headers.get("x-request-id"))
        token = logs.TRACE_ID.set(trace)  # every log line of this request carries it (PIXELMILL_LOG_FORMAT=json)

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-trace-id", trace.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            logs.TRACE_ID.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"  # unmatched or refused before routing: one label
            metrics.http_done(template, scope.get("method", ""), code, time.perf_counter() - started)


def metrics_endpoint(registry: CollectorRegistry, token: str) -> Any:
    """The route's function over `registry` (this process's counters and the ledger's gauges)."""

    async def serve_metrics(request: Request) -> Response:
        if token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"detail": "PIXELMILL_METRICS_TOKEN required"}, status_code=401)
        body = await run_in_threadpool(generate_latest, registry)  # the ledger's gauges: a few queries
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return serve_metrics
