"""The HTTP API (`pixelmill serve`): FastAPI over the same functions as the intake queue and the Python API.

`POST /v1/jobs` takes the v1 request (pixelmill/schemas/request-v1.json) and runs it through
producer/frontdoor.py `intake`, so a bad request gets the same problem list (422) and the same `job.rejected`
event as on the queue, and a repeated `request_id` (or `Idempotency-Key` header) returns the same job.
Bearer tokens come from PIXELMILL_API_TOKENS and are compared with `hmac.compare_digest`.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations at runtime, and the ones
that name values local to `create_app` (the `Auth` dependency) cannot be resolved from strings.
"""


import copy
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from pixelmill.api import ItemInfo, list_items
from pixelmill.ledger import Ledger
from pixelmill.outbox import Dispatcher
from pixelmill.settings import Settings
from producer.frontdoor import intake, request_schema
from producer.status import UnknownJob, job_status

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Job id.")]  # a BIGINT: larger ids are a 422, not a 500


def parse_tokens(raw: str) -> dict[str, str]:
    """`name:token,name:token` → {token: name}; raises ValueError naming the bad entry."""
    tokens: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if not sep or not name or len(token) < 16:
            raise ValueError(f"PIXELMILL_API_TOKENS: {name or entry[:8]!r}: each entry must be name:token with a "
                             f"token of at least 16 characters")
        tokens[token] = name
    return tokens


def _openapi_request_schema() -> dict[str, Any]:
    schema = copy.deepcopy(request_schema())
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    return schema


def create_app(settings: Settings, *, dispatch: bool = True) -> FastAPI:
    tokens = parse_tokens(settings.api_tokens)
    ledger = Ledger(settings)
    dispatcher = Dispatcher(settings, ledger) if dispatch else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        yield
        if dispatcher is not None:
            dispatcher.stop()
        ledger.close()

    app = FastAPI(title="pixelmill", version="1", lifespan=lifespan,
                  description="Batch image generation: submit v1 requests, follow jobs. Events go to the request's "
                              "reply_to queue and webhook (README, Integrations).")
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        if not tokens:  # only ever on loopback: `pixelmill serve` refuses other addresses without tokens
            return "anonymous"
        given = credentials.credentials.encode() if credentials is not None else b""
        found = None
        for token, name in tokens.items():  # compare with every token, in constant time each
            if hmac.compare_digest(given, token.encode()):
                found = name
        if found is None:
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        return found

    Auth = Annotated[str, Depends(authorised)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.http_max_body_bytes):
            return JSONResponse({"detail": f"request body over {settings.http_max_body_bytes} bytes "
                                           f"(PIXELMILL_HTTP_MAX_BODY_BYTES); send large catalogues as 'source'"},
                                status_code=413)
        return await call_next(request)

    def not_found(exc: UnknownJob) -> HTTPException:
        return HTTPException(404, str(exc))

    @app.get("/healthz", responses={503: {"description": "the ledger is unreachable"}})
    def healthz() -> JSONResponse:
        try:
            with ledger.session(readonly=True) as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 (any failure means unhealthy)
            return JSONResponse({"ok": False, "ledger": str(exc)[:200]}, status_code=503)
        return JSONResponse({"ok": True})

    @app.post("/v1/jobs", status_code=201, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": _openapi_request_schema()}}}},
        responses={200: {"description": "a request with this request_id was submitted before: that job"},
                   201: {"description": "accepted: the new job"},
                   401: {"description": "no or wrong bearer token"},
                   413: {"description": "body too large"},
                   422: {"description": "bad request: `problems` lists every one; nothing was written"}})
    async def submit(request: Request, _who: Auth,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.http_max_body_bytes:
                return JSONResponse({"detail": "request body too large"}, status_code=413)
        try:
            message = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"problems": [f"request: not JSON: {exc}"]}, status_code=422)
        if idempotency_key is not None and isinstance(message, dict):
            given = message.setdefault("request_id", idempotency_key)
            if given != idempotency_key:
                return JSONResponse({"problems": ["request: field 'request_id': differs from the Idempotency-Key "
                                                  "header; send one or make them equal"]}, status_code=422)
        result = await run_in_threadpool(intake, settings, ledger, message)
        if result.status == "rejected":
            return JSONResponse({"problems": result.problems}, status_code=422)
        assert result.job is not None
        status = 201 if result.status == "accepted" else 200
        sub = result.submission
        return JSONResponse({"job": result.job, "status": f"/v1/jobs/{result.job}", "existing": status == 200,
                             **({"submission": sub.as_dict()} if sub is not None else {})},
                            status_code=status, headers={"Location": f"/v1/jobs/{result.job}"})

    @app.get("/v1/jobs/{job_id}", responses={404: {"description": "no such job"}, 401: {"description": "auth"}})
    def get_job(job_id: JobId, _who: Auth) -> dict[str, Any]:
        try:
            with ledger.session(readonly=True) as session:
                return job_status(session, job_id).as_dict()
        except UnknownJob as exc:
            raise not_found(exc) from None

    @app.get("/v1/jobs/{job_id}/items", responses={404: {"description": "no such job"}, 401: {"description": "auth"}})
    def get_items(job_id: JobId, _who: Auth,
                  state: Annotated[Literal["pending", "queued", "running", "succeeded", "blocked", "failed"] | None,
                                   Query()] = None,
                  after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> dict[str, Any]:
        """One page of the job's items (id order); pass `next_after` as `after` for the next page."""
        try:
            with ledger.session(readonly=True) as session:
                page: list[ItemInfo] = list_items(session, job_id, state=state, after=after, limit=limit)
        except UnknownJob as exc:
            raise not_found(exc) from None
        return {"items": [i.as_dict() for i in page],
                "next_after": page[-1].id if len(page) == limit else None}

    return app
