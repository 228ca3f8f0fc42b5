"""The servers in front of the submission path: `pixelmill intake` (the intake queue's consumer), `pixelmill
serve` (the HTTP API) and `pixelmill events` (the outbox: pending and dead deliveries, re-sending)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table

from contract.settings import get_settings
from pixelmill.cli.common import caller_tenant, check_schema, fail, open_ledger, out

# The outbox, the intake app, FastAPI and uvicorn pull in SQLAlchemy, Celery and a web stack: imported by the
# command that runs them, so `pixelmill --help` starts without them.

EVENT_STATES = ("pending", "dead", "delivered")


def intake(
    dispatch: Annotated[
        bool,
        typer.Option(
            "--dispatch/--no-dispatch",
            help="Run the outbox dispatcher in this process too (delivers events to reply queues and webhooks).",
        ),
    ] = True,
    hostname: Annotated[str, typer.Option("--hostname", "-n", help="Celery node name.")] = "intake@%h",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Consume v1 requests from the intake queues, `pixelmill.intake.TENANT` per tenant (task `pixelmill.submit`),
    and deliver events."""
    from contract.outbox import Dispatcher  # noqa: F401 (fail here, not in the worker, if a dependency is missing)

    check_schema()
    from pixelmill.intake import app as intake_app
    from pixelmill.intake import current_intake_queues

    intake_app.conf.pixelmill_dispatch = dispatch
    intake_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--hostname={hostname}",
            "--pool=solo",
            f"--queues={','.join(current_intake_queues())}",  # then new tenants' queues as they are added
            "--without-gossip",
            "--without-mingle",
        ]
    )


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8080,
    dispatch: Annotated[
        bool, typer.Option("--dispatch/--no-dispatch", help="Run the outbox dispatcher in this process too.")
    ] = True,
) -> None:
    """The HTTP API (FastAPI on uvicorn): /v1/jobs…, /healthz, OpenAPI at /openapi.json and /docs."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        fail("the HTTP API needs FastAPI and uvicorn: pip install 'pixelmill[http]'")
    from contract.tenants import TenantError
    from pixelmill.api.connections import uvicorn_options
    from pixelmill.api.http import create_app, parse_tokens

    settings = get_settings()
    try:
        parse_tokens(settings.api_tokens)  # its format, before the ledger is opened
    except ValueError as exc:
        fail(str(exc))
    check_schema()
    try:
        app = create_app(settings, dispatch=dispatch)
    except (ValueError, TenantError) as exc:  # a PIXELMILL_API_TOKENS name that is no tenant, or a revoked one
        fail(str(exc))
    if app.state.door.open and not loopback(host):
        fail(
            f"no PIXELMILL_API_TOKENS set and no tenant token (`pixelmill tenants add`): refusing to serve an "
            f"unauthenticated API on {host}; set tokens (name:token,...), add a tenant, or listen on 127.0.0.1"
        )
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=10,
        **uvicorn_options(settings),  # header/body deadlines, keep-alive, the connection cap (docs/http.md)
    )


def events(
    state: Annotated[str, typer.Option(help="pending | dead | delivered | all.")] = "pending,dead",
    job: Annotated[Optional[int], typer.Option(help="Only this job's events.")] = None,
    resend: Annotated[Optional[int], typer.Option(help="Send this delivery (its id, as listed) again.")] = None,
    resend_all: Annotated[bool, typer.Option("--resend-all", help="Send every listed delivery again.")] = False,
    dispatch: Annotated[
        bool, typer.Option("--dispatch", help="Deliver what is due now, in this process, then exit.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Most deliveries listed.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List event deliveries not yet delivered (pending, retrying or dead-lettered) of the tenant's events (its
    jobs' and its rejected requests', which made no job); re-send one or all."""
    from sqlalchemy import select

    from contract.schema import Delivery, Event

    states = list(EVENT_STATES) if state == "all" else [s.strip() for s in state.split(",")]
    bad = [s for s in states if s not in EVENT_STATES]
    if bad:
        fail(f"--state: unknown {', '.join(bad)}; use pending, dead, delivered or all")
    ledger = open_ledger()
    tenant = caller_tenant(ledger)
    query = (
        select(Delivery, Event)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.state.in_(states), Event.tenant_id == tenant.id)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if job is not None:
        query = query.where(Event.job_id == job)
    if resend is not None:
        query = query.where(Delivery.id == resend)
    if resend is not None or resend_all:
        resend_deliveries(
            ledger, query, missing=f"no delivery {resend} in state {state}" if resend is not None else None
        )
    if dispatch:
        from contract.outbox import Dispatcher

        result = Dispatcher(get_settings(), ledger).run_once()
        out.print(f"delivered {result.delivered}, retrying {result.retrying}, dead {result.dead}")
    if resend is not None or resend_all or dispatch:
        return
    with ledger.session(readonly=True) as session:
        rows = [(d, e) for d, e in session.execute(query)]
    if as_json:
        print(json.dumps([delivery_dict(d, e) for d, e in rows]))
        return
    out.print(deliveries_table(rows))


def resend_deliveries(ledger: Any, query: Any, *, missing: str | None) -> None:
    """Make the deliveries the query selects pending again, from their first attempt; exit 2 with `missing`
    (or `nothing to re-send`) when it selects none."""
    from sqlalchemy import update

    from contract.schema import Delivery, utcnow

    with ledger.session() as session:
        ids = [d.id for d, _ in session.execute(query)]
        if not ids:
            fail(missing or "nothing to re-send")
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(state="pending", attempts=0, next_at=utcnow(), lease_until=None)
        )
    out.print(
        f"{len(ids)} deliveries pending again; a dispatcher (pixelmill intake/serve, or "
        f"`pixelmill events --dispatch`) sends them"
    )


def delivery_dict(d: Any, e: Any) -> dict[str, Any]:
    return {
        "delivery": d.id,
        "event": e.uid,
        "type": e.type,
        "job": e.job_id,
        "request_id": e.request_id,
        "kind": d.kind,
        "target": d.target,
        "state": d.state,
        "attempts": d.attempts,
        "next_at": d.next_at.isoformat(),
        "last_error": d.last_error,
    }


def deliveries_table(rows: list[tuple[Any, Any]]) -> Table:
    table = Table(
        "delivery", "event", "type", "job", "to", "state", "tries", "last error", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for d, e in rows:
        table.add_row(
            str(d.id),
            e.uid,
            e.type,
            str(e.job_id or "-"),
            f"{d.kind}:{d.target}"[:60],
            d.state,
            str(d.attempts),
            (d.last_error or "-")[:60],
        )
    return table
