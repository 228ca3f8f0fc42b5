"""The front door's commands: `pixelmill intake` (the intake queue's consumer), `pixelmill serve` (the HTTP
API) and `pixelmill events` (the outbox: pending and dead deliveries, re-sending). Registered by the import at
the end of pixelmill/cli/__init__.py."""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from contract.settings import get_settings
from pixelmill.cli import _ledger, app, fail, out


@app.command()
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
    """Consume v1 requests from the queue `pixelmill.intake` (task `pixelmill.submit`) and deliver events."""
    from contract.outbox import Dispatcher  # noqa: F401 (fail here, not in the worker, if a dependency is missing)

    try:
        _ledger().close()
    except RuntimeError as exc:
        fail(str(exc))
    from pixelmill.intake import app as intake_app
    from producer.request_v1 import INTAKE_QUEUE

    intake_app.conf.pixelmill_dispatch = dispatch
    intake_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--hostname={hostname}",
            "--pool=solo",
            f"--queues={INTAKE_QUEUE}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8080,
    dispatch: Annotated[
        bool, typer.Option("--dispatch/--no-dispatch", help="Run the outbox dispatcher in this process too.")
    ] = True,
) -> None:
    """The HTTP API (FastAPI on uvicorn): /v1/jobs…, /healthz, OpenAPI at /openapi.json and /docs."""
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        fail("the HTTP API needs FastAPI and uvicorn: pip install 'pixelmill[http]'")
    from pixelmill.api.http import create_app, parse_tokens

    settings = get_settings()
    try:
        tokens = parse_tokens(settings.api_tokens)
    except ValueError as exc:
        fail(str(exc))
    if not tokens and not _loopback(host):
        fail(
            f"no PIXELMILL_API_TOKENS set: refusing to serve an unauthenticated API on {host}; "
            f"set tokens (name:token,...) or listen on 127.0.0.1"
        )
    try:
        _ledger().close()
    except RuntimeError as exc:
        fail(str(exc))
    import uvicorn

    uvicorn.run(
        create_app(settings, dispatch=dispatch),
        host=host,
        port=port,
        log_level="info",
        limit_concurrency=256,
        timeout_graceful_shutdown=10,
    )


@app.command()
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
    """List event deliveries not yet delivered (pending, retrying or dead-lettered); re-send one or all."""
    from sqlalchemy import select, update

    from contract.schema import Delivery, Event, utcnow

    states = ["pending", "dead", "delivered"] if state == "all" else [s.strip() for s in state.split(",")]
    bad = [s for s in states if s not in ("pending", "dead", "delivered")]
    if bad:
        fail(f"--state: unknown {', '.join(bad)}; use pending, dead, delivered or all")
    ledger = _ledger()
    query = (
        select(Delivery, Event)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.state.in_(states))
        .order_by(Delivery.id)
        .limit(limit)
    )
    if job is not None:
        query = query.where(Event.job_id == job)
    if resend is not None:
        query = query.where(Delivery.id == resend)
    if resend is not None or resend_all:
        with ledger.session() as session:
            ids = [d.id for d, _ in session.execute(query)]
            if not ids:
                fail(f"no delivery {resend} in state {state}" if resend is not None else "nothing to re-send")
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(state="pending", attempts=0, next_at=utcnow(), lease_until=None)
            )
        out.print(
            f"{len(ids)} deliveries pending again; a dispatcher (pixelmill intake/serve, or "
            f"`pixelmill events --dispatch`) sends them"
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
        print(
            json.dumps(
                [
                    {
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
                    for d, e in rows
                ]
            )
        )
        return
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
    out.print(table)
