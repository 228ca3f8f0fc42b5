"""The HTTP routes for jobs: submitting a v1 request (`POST /v1/jobs`, through the intake as on the queue),
reading a job and its items (`reading`), and cancelling or retrying it (`acting`), as the CLI and the Python
API do.

No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime."""

import copy
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from pixelmill.api import ItemInfo, UnknownJob, list_items, retry_job
from pixelmill.api.access import Auth, Served, not_found
from pixelmill.api.manifest_routes import JobId
from producer.jobs import JobError
from producer.jobs import cancel as cancel_job
from producer.request_v1 import intake, request_schema
from producer.status import job_status
from producer.submit import REQUEST_ID_REUSED

AUTH_AND_JOB: dict[int | str, dict[str, Any]] = {404: {"description": "no such job"}, 401: {"description": "auth"}}
IDEMPOTENCY_MISMATCH = (
    "request: field 'request_id': differs from the Idempotency-Key header; send one or make them equal"
)

reading = APIRouter()
acting = APIRouter()


class RetryRequest(BaseModel):
    """What to queue again: failed items, and/or items blocked by the image checker or the prompt filter."""

    model_config = ConfigDict(extra="forbid")
    failed: bool = True
    blocked_by: Literal["image", "prompt"] | None = None


def request_schema_for_openapi() -> dict[str, Any]:
    """The v1 request's JSON Schema as the OpenAPI document holds it (without `$schema` and `$id`)."""
    schema = copy.deepcopy(request_schema())
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    return schema


@reading.post(
    "/v1/jobs",
    status_code=201,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema_for_openapi()}}}
    },
    responses={
        200: {"description": "a request with this request_id was submitted before: that job"},
        201: {"description": "accepted: the new job"},
        401: {"description": "no or wrong bearer token"},
        409: {"description": "request_id reused with a different request (request_ids are per tenant)"},
        413: {"description": "body too large"},
        415: {"description": "body not application/json"},
        422: {"description": "bad request: `problems` lists every one; nothing was written"},
    },
)
async def submit(
    request: Request,
    served: Served,
    who: Auth,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    body = await request.body()  # capped in bytes and JSON depth by pixelmill/api/bounds.py before this runs
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return JSONResponse({"problems": [f"request: not JSON: {exc}"]}, status_code=422)
    except RecursionError:  # never past the depth bound; kept so that no JSON can make a 500
        return JSONResponse({"problems": ["request: JSON nested too deep"]}, status_code=422)
    if idempotency_key is not None and isinstance(message, dict):
        if message.setdefault("request_id", idempotency_key) != idempotency_key:
            return JSONResponse({"problems": [IDEMPOTENCY_MISMATCH]}, status_code=422)
    result = await run_in_threadpool(intake, served.settings, served.ledger, message, tenant=who)
    if result.status == "rejected":
        reused = any(REQUEST_ID_REUSED in problem for problem in result.problems)
        return JSONResponse({"problems": result.problems}, status_code=409 if reused else 422)
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


@reading.get("/v1/backlog", responses={401: {"description": "auth"}})
def get_backlog(served: Served, who: Auth) -> dict[str, Any]:
    """The caller's pending items per model and priority: the ledger's backlog (what an autoscaler reads)."""
    from contract.scheduling import backlog

    with served.ledger.session(readonly=True) as session:
        return {"backlog": [row.as_dict() for row in backlog(session, tenant_id=who.id)]}


@reading.get("/v1/jobs/{job_id}", responses=AUTH_AND_JOB)
def get_job(job_id: JobId, served: Served, who: Auth) -> dict[str, Any]:
    try:
        with served.ledger.session(readonly=True) as session:
            stale_after = served.settings.worker_stale_after
            return job_status(session, job_id, tenant_id=who.id, stale_after=stale_after).as_dict()
    except UnknownJob as exc:
        raise not_found(exc) from None


@reading.get("/v1/jobs/{job_id}/items", responses=AUTH_AND_JOB)
def get_items(
    job_id: JobId,
    served: Served,
    who: Auth,
    state: Annotated[
        Literal["pending", "queued", "running", "succeeded", "blocked", "failed", "cancelled"] | None, Query()
    ] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict[str, Any]:
    """One page of the job's items (id order); pass `next_after` as `after` for the next page."""
    try:
        with served.ledger.session(readonly=True) as session:
            page: list[ItemInfo] = list_items(session, job_id, tenant_id=who.id, state=state, after=after, limit=limit)
    except UnknownJob as exc:
        raise not_found(exc) from None
    return {"items": [i.as_dict() for i in page], "next_after": page[-1].id if len(page) == limit else None}


@acting.post("/v1/jobs/{job_id}/cancel", responses=AUTH_AND_JOB)
def post_cancel(job_id: JobId, served: Served, who: Auth) -> dict[str, Any]:
    """Cancel the job (`pixelmill cancel`): pending, queued and running items become `cancelled` (running
    ones discarded). Returns how many left each state and `cancelled`, their sum."""
    try:
        with served.ledger.session() as session:
            return cancel_job(session, job_id, tenant_id=who.id).as_dict()
    except JobError as exc:
        raise not_found(exc) from None


@acting.post(
    "/v1/jobs/{job_id}/retry",
    responses={
        **AUTH_AND_JOB,
        422: {"description": "nothing to retry"},
        503: {"description": "the broker is unreachable"},
    },
)
def post_retry(
    job_id: JobId, served: Served, who: Auth, body: Annotated[RetryRequest | None, Body()] = None
) -> dict[str, Any]:
    """Queue failed (and, with `blocked_by`, blocked) items again (`pixelmill retry`): attempts from 0,
    same seeds and keys. Returns `{"job", "requeued"}`."""
    wanted = body or RetryRequest()
    settings, ledger = served.settings, served.ledger
    try:
        count = retry_job(
            settings,
            ledger,
            served.broker(),
            job_id,
            tenant_id=who.id,
            failed=wanted.failed,
            blocked_by=wanted.blocked_by,
        )
    except UnknownJob as exc:
        raise not_found(exc) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except OperationalError as exc:
        raise HTTPException(503, f"cannot reach the broker; nothing was retried: {exc}") from None
    return {"job": job_id, "requeued": count}
