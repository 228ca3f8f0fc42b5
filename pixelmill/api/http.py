"""The HTTP API (`pixelmill serve`): FastAPI over the same functions as the intake queue and the Python API.

`POST /v1/jobs` takes the v1 request (contract/schemas/request-v1.json) and runs it through
producer/request_v1.py `intake`, so a bad request gets the same problem list (422) and the same `job.rejected`
event as on the queue, and a repeated `request_id` (or `Idempotency-Key` header) returns the same job.
Bearer tokens come from PIXELMILL_API_TOKENS and are compared with `hmac.compare_digest`. Cancel, retry and the
manifest call `producer.jobs` and `producer.manifest`, as `pixelmill cancel/retry/manifest` and the Python API do.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations at runtime, and the ones
that name values local to `create_app` (the `Auth` dependency) cannot be resolved from strings.
"""

import copy
import hmac
import json
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from contract.ledger import Ledger
from contract.outbox import Dispatcher
from contract.schema import Job as JobRow
from contract.settings import Settings
from pixelmill.api import ItemInfo, UnknownJob, list_items, retry_job, stream_manifest
from producer.catalogue_runs import check_name, has_entries, list_catalogues, unknown_catalogue
from producer.jobs import JobError
from producer.jobs import cancel as cancel_job
from producer.manifest import WRITERS, ManifestError, parquet_schema
from producer.request_v1 import intake, request_schema
from producer.status import job_status

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Job id.")]  # a BIGINT: larger ids are a 422, not a 500


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


MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
_CHUNK = 64 * 1024


class RetryRequest(BaseModel):
    """What to queue again: failed items, and/or items blocked by the image checker or the prompt filter."""

    model_config = ConfigDict(extra="forbid")
    failed: bool = True
    blocked_by: Literal["image", "prompt"] | None = None


class _Gone(Exception):
    """The client went away: the writer stops."""


class _Pipe:
    """A write-only file for the manifest writers: what they write goes to a bounded queue in ~64 KiB chunks,
    so a slow client holds back the database cursor instead of the server buffering the manifest."""

    closed = False

    def __init__(self, out: queue.Queue[bytes | BaseException | None], stop: threading.Event) -> None:
        self.out, self.stop = out, stop
        self.parts: list[bytes] = []
        self.size = self.written = 0

    def write(self, data: str | bytes) -> int:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self.parts.append(chunk)
        self.size += len(chunk)
        self.written += len(chunk)
        if self.size >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.parts:
            self.put(b"".join(self.parts))
            self.parts, self.size = [], 0

    def put(self, item: bytes | BaseException | None) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Gone

    def tell(self) -> int:
        return self.written

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        pass


def manifest_chunks(ledger: Ledger, job_id: int | None, fmt: str, *, catalogue: str | None = None) -> Iterator[bytes]:
    """The job's (or, with `catalogue`, the catalogue's) manifest in `fmt`, written by `producer.manifest`'s
    writer in a thread of its own and handed over in chunks through a queue of 8: memory stays flat whatever
    the job's size."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()
    pipe = _Pipe(chunks, stop)

    def produce() -> None:
        try:
            rows = stream_manifest(ledger, catalogue=catalogue) if catalogue else stream_manifest(ledger, job=job_id)
            WRITERS[fmt](rows, pipe)  # type: ignore[operator]
            pipe.flush()
            pipe.put(None)
        except _Gone:
            pass
        except BaseException as exc:  # noqa: BLE001 (handed to the response, which aborts)
            try:
                pipe.put(exc)
            except _Gone:
                pass

    threading.Thread(target=produce, name=f"manifest-{catalogue or job_id}", daemon=True).start()
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        stop.set()


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

    app = FastAPI(
        title="pixelmill",
        version="1",
        lifespan=lifespan,
        description="Batch image generation: submit v1 requests, follow jobs. Events go to the request's "
        "reply_to queue and webhook (docs/message-v1.md).",
    )
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
            raise HTTPException(
                401,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    Auth = Annotated[str, Depends(authorised)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.http_max_body_bytes):
            return JSONResponse(
                {
                    "detail": f"request body over {settings.http_max_body_bytes} bytes "
                    f"(PIXELMILL_HTTP_MAX_BODY_BYTES); send large catalogues as 'source'"
                },
                status_code=413,
            )
        return await call_next(request)

    celery: Any = None

    def broker() -> Any:
        nonlocal celery
        if celery is None:
            from contract.queue import make_celery

            celery = make_celery(settings)
        return celery

    def not_found(exc: LookupError) -> HTTPException:
        """404 with the lookup's message less its CLI hint (the `pixelmill jobs` one): HTTP clients
        get HTTP words."""
        return HTTPException(404, str(exc).split("; `pixelmill")[0])

    @app.get("/healthz", responses={503: {"description": "the ledger is unreachable"}})
    def healthz() -> JSONResponse:
        try:
            with ledger.session(readonly=True) as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 (any failure means unhealthy)
            return JSONResponse({"ok": False, "ledger": str(exc)[:200]}, status_code=503)
        return JSONResponse({"ok": True})

    @app.post(
        "/v1/jobs",
        status_code=201,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _openapi_request_schema()}}}
        },
        responses={
            200: {"description": "a request with this request_id was submitted before: that job"},
            201: {"description": "accepted: the new job"},
            401: {"description": "no or wrong bearer token"},
            413: {"description": "body too large"},
            422: {"description": "bad request: `problems` lists every one; nothing was written"},
        },
    )
    async def submit(
        request: Request, _who: Auth, idempotency_key: Annotated[str | None, Header(max_length=200)] = None
    ) -> JSONResponse:
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
                return JSONResponse(
                    {
                        "problems": [
                            "request: field 'request_id': differs from the Idempotency-Key "
                            "header; send one or make them equal"
                        ]
                    },
                    status_code=422,
                )
        result = await run_in_threadpool(intake, settings, ledger, message)
        if result.status == "rejected":
            return JSONResponse({"problems": result.problems}, status_code=422)
        assert result.job is not None
        status = 201 if result.status == "accepted" else 200
        sub = result.submission
        return JSONResponse(
            {
                "job": result.job,
                "status": f"/v1/jobs/{result.job}",
                "existing": status == 200,
                **({"submission": sub.as_dict()} if sub is not None else {}),
            },
            status_code=status,
            headers={"Location": f"/v1/jobs/{result.job}"},
        )

    @app.get("/v1/jobs/{job_id}", responses={404: {"description": "no such job"}, 401: {"description": "auth"}})
    def get_job(job_id: JobId, _who: Auth) -> dict[str, Any]:
        try:
            with ledger.session(readonly=True) as session:
                return job_status(session, job_id).as_dict()
        except UnknownJob as exc:
            raise not_found(exc) from None

    @app.get("/v1/jobs/{job_id}/items", responses={404: {"description": "no such job"}, 401: {"description": "auth"}})
    def get_items(
        job_id: JobId,
        _who: Auth,
        state: Annotated[
            Literal["pending", "queued", "running", "succeeded", "blocked", "failed", "cancelled"] | None, Query()
        ] = None,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> dict[str, Any]:
        """One page of the job's items (id order); pass `next_after` as `after` for the next page."""
        try:
            with ledger.session(readonly=True) as session:
                page: list[ItemInfo] = list_items(session, job_id, state=state, after=after, limit=limit)
        except UnknownJob as exc:
            raise not_found(exc) from None
        return {"items": [i.as_dict() for i in page], "next_after": page[-1].id if len(page) == limit else None}

    @app.get(
        "/v1/jobs/{job_id}/manifest",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "one row per item (id order), streamed",
                "content": {m.split(";")[0]: {} for m in MEDIA_TYPES.values()},
            },
            404: {"description": "no such job"},
            401: {"description": "auth"},
            422: {"description": "bad format (parquet: pyarrow not installed on the server)"},
        },
    )
    def get_manifest(
        job_id: JobId, _who: Auth, format: Annotated[Literal["csv", "jsonl", "parquet"], Query()] = "csv"
    ) -> StreamingResponse:
        """The job's manifest (`pixelmill manifest --job`): object key, sha256, size, scores, safety,
        provenance and error per item, as CSV (with a header row), JSON lines or Parquet."""
        if format == "parquet":
            try:
                parquet_schema()
            except ManifestError as exc:
                raise HTTPException(422, str(exc)) from None
        with ledger.session(readonly=True) as session:
            if session.get(JobRow, job_id) is None:
                raise HTTPException(404, f"no job {job_id}")
        return StreamingResponse(
            manifest_chunks(ledger, job_id, format),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="job-{job_id}.{format}"'},
        )

    @app.get("/v1/catalogues", responses={401: {"description": "auth"}})
    def get_catalogues(_who: Auth) -> dict[str, Any]:
        """The named catalogues (`pixelmill catalogues --json`): runs, current and retired entries, the last run
        and its changes."""
        with ledger.session(readonly=True) as session:
            return {"catalogues": [c.as_dict() for c in list_catalogues(session)]}

    @app.get(
        "/v1/catalogues/{name}/manifest",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "one row per entry (key order, retired ones included), streamed",
                "content": {m.split(";")[0]: {} for m in MEDIA_TYPES.values()},
            },
            404: {"description": "no such catalogue (the closest name, if one is close)"},
            401: {"description": "auth"},
            422: {"description": "bad format (parquet: pyarrow not installed on the server)"},
        },
    )
    def get_catalogue_manifest(
        name: Annotated[str, Path(min_length=1, max_length=200, description="Catalogue name (submit --catalogue).")],
        _who: Auth,
        format: Annotated[Literal["csv", "jsonl", "parquet"], Query()] = "csv",
    ) -> StreamingResponse:
        """The catalogue's manifest (`pixelmill manifest --catalogue`): one row per entry, its `change`, and the
        item serving it now, in the job manifest's columns and formats."""
        if format == "parquet":
            try:
                parquet_schema()
            except ManifestError as exc:
                raise HTTPException(422, str(exc)) from None
        try:
            check_name(name)  # a name no run could have had (control characters) is never looked up
        except ValueError:
            raise HTTPException(404, f"no catalogue {name!r}") from None
        with ledger.session(readonly=True) as session:
            if not has_entries(session, name):
                raise HTTPException(404, unknown_catalogue(session, name))
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]
        return StreamingResponse(
            manifest_chunks(ledger, None, format, catalogue=name),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="catalogue-{filename}.{format}"'},
        )

    @app.post("/v1/jobs/{job_id}/cancel", responses={404: {"description": "no such job"}, 401: {"description": "auth"}})
    def post_cancel(job_id: JobId, _who: Auth) -> dict[str, Any]:
        """Cancel the job (`pixelmill cancel`): pending, queued and running items become `cancelled` (running
        ones discarded). Returns how many left each state and `cancelled`, their sum."""
        try:
            with ledger.session() as session:
                return cancel_job(session, job_id).as_dict()
        except JobError as exc:
            raise not_found(exc) from None

    @app.post(
        "/v1/jobs/{job_id}/retry",
        responses={
            404: {"description": "no such job"},
            401: {"description": "auth"},
            422: {"description": "nothing to retry"},
            503: {"description": "the broker is unreachable"},
        },
    )
    def post_retry(job_id: JobId, _who: Auth, body: Annotated[RetryRequest | None, Body()] = None) -> dict[str, Any]:
        """Queue failed (and, with `blocked_by`, blocked) items again (`pixelmill retry`): attempts from 0,
        same seeds and keys. Returns `{"job", "requeued"}`."""
        wanted = body or RetryRequest()
        try:
            count = retry_job(settings, ledger, broker(), job_id, failed=wanted.failed, blocked_by=wanted.blocked_by)
        except UnknownJob as exc:
            raise not_found(exc) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except OperationalError as exc:
            raise HTTPException(503, f"cannot reach the broker; nothing was retried: {exc}") from None
        return {"job": job_id, "requeued": count}

    return app
