"""The HTTP API (`pixelmill serve`): FastAPI over the same functions as the intake queue and the Python API.

`POST /v1/jobs` takes the v1 request (contract/schemas/request-v1.json) and runs it through
producer/request_v1.py `intake`, so a bad request gets the same problem list (422) and the same `job.rejected`
event as on the queue, and a repeated `request_id` (or `Idempotency-Key` header) returns the same job.
A bearer token names the caller's tenant (pixelmill/api/access.py `caller`): a ledger token (`pixelmill tenants
add`) or one of PIXELMILL_API_TOKENS (compared with `hmac.compare_digest`); every route is scoped to it.
Cancel, retry and the manifest call `producer.jobs` and `producer.manifest`, as `pixelmill cancel/retry/manifest`
and the Python API do.

The routes are in pixelmill/api/job_routes.py and pixelmill/api/manifest_routes.py; what they depend on (the
served `Door` on `app.state`, the token check) in pixelmill/api/access.py; the bounds every request meets
before a route (token before body, body size, type and depth, Host and Origin without tokens) in
pixelmill/api/bounds.py; the connection limits and timeouts `pixelmill serve` runs uvicorn with in
pixelmill/api/connections.py.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from contract import ledger_metrics
from contract.faults import mask
from contract.outbox import Dispatcher
from contract.settings import Settings
from pixelmill.api import job_routes, manifest_routes
from pixelmill.api.access import Served, make_door
from pixelmill.api.bounds import Bounds
from pixelmill.api.metrics_route import Measured, metrics_endpoint

log = logging.getLogger(__name__)


def parse_tokens(raw: str) -> dict[str, str]:
    """`name:token,name:token` → {token: name}; raises ValueError naming the bad entry."""
    tokens: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if not sep or not name or len(token) < 16:
            # Never the secret: a bare token (no `name:`), or one written first (`token:name`), shows its first
            # 4 characters, masked; a name is shown only while shorter than a token can be.
            shown = name if sep and name and len(name) < 16 else entry[:4] + "***"
            raise ValueError(
                f"PIXELMILL_API_TOKENS: {shown!r}: each entry must be name:token with a token of at least 16 characters"
            )
        tokens[token] = name
    return tokens


def create_app(settings: Settings, *, dispatch: bool = True) -> FastAPI:
    """The API over one ledger; with `dispatch`, the outbox dispatcher runs while the app does."""
    door = make_door(settings, parse_tokens(settings.api_tokens))
    dispatcher = Dispatcher(settings, door.ledger) if dispatch else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        yield
        if dispatcher is not None:
            dispatcher.stop()
        door.ledger.close()

    app = FastAPI(
        title="pixelmill",
        version="1",
        lifespan=lifespan,
        description="Batch image generation: submit v1 requests, follow jobs. Events go to the request's "
        "reply_to queue and webhook (README, Integrations).",
    )
    app.state.door = door
    app.add_middleware(Bounds, door=door)  # token, Host/Origin, body size, type and depth: before any route
    app.add_middleware(Measured)  # outside Bounds: its refusals are counted too
    app.get(
        "/metrics",
        include_in_schema=True,
        response_class=Response,
        responses={401: {"description": "PIXELMILL_METRICS_TOKEN is set and was not sent"}},
    )(metrics_endpoint(ledger_metrics.registry_for(door.ledger, settings), settings.metrics_token))
    app.get("/healthz", responses={503: {"description": "the ledger is unreachable"}})(healthz)
    app.include_router(job_routes.reading)
    app.include_router(manifest_routes.router)
    app.include_router(job_routes.acting)
    return app


def healthz(served: Served) -> JSONResponse:
    try:
        with served.ledger.session(readonly=True) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 (any failure means unhealthy)
        # The reason goes to the log only: /healthz needs no token, and a driver's error names hosts and users.
        log.warning("healthz: the ledger is unreachable", extra={"error": mask(str(exc))[:300]})
        return JSONResponse({"ok": False, "ledger": "unreachable"}, status_code=503)
    return JSONResponse({"ok": True})
