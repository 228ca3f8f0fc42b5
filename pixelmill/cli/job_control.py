"""Acting on a submitted job: `pixelmill cancel` (its unfinished items), `pixelmill retry` (failed, or blocked,
items queued again) and `pixelmill items` (its items with their states and errors). Each reads an existing
ledger and never creates one."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from kombu.exceptions import OperationalError
from rich import box
from rich.markup import escape
from rich.table import Table

from contract.settings import get_settings
from pixelmill.cli.common import caller_tenant, fail, out, read_ledger
from producer.options import blocklists as blocklists_of

# producer.jobs and contract.schema pull in SQLAlchemy, contract.queue Celery: imported by each command, so
# `pixelmill --help` starts without them.


def cancel(
    job: Annotated[int, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Cancel a job: its pending, queued and running items become `cancelled` (running ones are discarded:
    their images are not recorded). Finished items stay as they are."""
    from producer.jobs import JobError
    from producer.jobs import cancel as do_cancel

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    try:
        with ledger.session() as session:
            result = do_cancel(session, job, tenant_id=tenant.id)
    except JobError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        out.print(
            f"job {job}: cancelled {result.cancelled} items ({result.pending} pending, {result.queued} "
            f"queued, {result.running} running, discarded)",
            highlight=False,
        )


OneJob = Annotated[Optional[int], typer.Argument(help="Job id.")]
WholeTenant = Annotated[
    bool, typer.Option("--whole-tenant", help="Every job of the tenant (--tenant / PIXELMILL_TENANT), not one job.")
]


def pause(job: OneJob = None, whole_tenant: WholeTenant = False) -> None:
    """Stop sending a job's (or a whole tenant's) pending items to the workers; what was already sent (at most
    the model's window) still runs. `pixelmill resume` sends them again."""
    _set_paused(job, whole_tenant, paused=True)


def resume(job: OneJob = None, whole_tenant: WholeTenant = False) -> None:
    """Send a paused job's (or tenant's) pending items to the workers again, in its fair-share turn."""
    _set_paused(job, whole_tenant, paused=False)


def _set_paused(job: int | None, whole_tenant: bool, *, paused: bool) -> None:
    from contract.tenants import configure_share
    from producer.jobs import JobError
    from producer.jobs import pause as do_pause

    if (job is None) == (not whole_tenant):
        fail("give a job id or --whole-tenant (one of them)")
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    try:
        with ledger.session() as session:
            if job is not None:
                do_pause(session, job, tenant_id=tenant.id, paused=paused)
            else:
                configure_share(session, tenant.name, paused=paused)
    except JobError as exc:
        fail(str(exc))
    what = f"job {job}" if job is not None else f"tenant {tenant.name}"
    out.print(f"{what}: {'paused' if paused else 'resumed'}", highlight=False)


def retry(
    job: Annotated[int, typer.Argument(help="Job id.")],
    failed: Annotated[bool, typer.Option("--failed/--no-failed", help="Retry failed items.")] = True,
    blocked_by: Annotated[
        Optional[str],
        typer.Option(
            "--blocked-by",
            help="Also retry items blocked by the `image` checker (same seed: useful after "
            "changing the checker settings) or the `prompt` filter (only those PIXELMILL_PROMPT_BLOCKLISTS "
            "now lets through).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Queue a job's failed (and, with --blocked-by, blocked) items again: attempts from 0, same seeds and keys."""
    from contract.queue import make_celery
    from producer.jobs import JobError, count_items
    from producer.jobs import retry as do_retry

    if blocked_by is not None and blocked_by not in ("image", "prompt"):
        fail(f"--blocked-by must be image or prompt, got {blocked_by!r}")
    if not failed and blocked_by is None:
        fail("nothing to retry: --no-failed without --blocked-by")
    settings = get_settings()
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    blocklists = list(blocklists_of(settings))
    try:
        celery = make_celery(settings)
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
        with ledger.session() as session:
            before = count_items(session, job, tenant_id=tenant.id) if blocked_by else {}
            requeued = do_retry(
                session,
                job,
                tenant_id=tenant.id,
                failed=failed,
                blocked_by=blocked_by,
                blocklists=blocklists,
            )
    except JobError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"cannot reach the broker (PIXELMILL_BROKER_URL); nothing was retried: {exc}")
    if as_json:
        print(json.dumps({"job": job, "requeued": requeued}))
        return
    out.print(f"job {job}: {requeued} items queued again", highlight=False)
    if blocked_by == "prompt":
        with ledger.session(readonly=True) as session:
            still = count_items(session, job, tenant_id=tenant.id).get("blocked", 0)
        if still and before.get("blocked", 0):
            out.print(
                f"{still} items stay blocked (the prompt filter still refuses them, or they were "
                "blocked by the image checker)",
                highlight=False,
            )


def items(
    job: Annotated[int, typer.Argument(help="Job id.")],
    state: Annotated[
        Optional[str],
        typer.Option(
            help="Only items in this state (pending, queued, running, succeeded, blocked, failed, cancelled)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int, typer.Option(help="At most N rows in the table (0: all; --json prints all).")] = 200,
) -> None:
    """A job's items: key, state, attempts and the last line of the last error."""
    from contract.schema import State
    from producer.jobs import JobError, list_items

    wanted = None
    if state is not None:
        try:
            wanted = State(state)
        except ValueError:
            fail(f"--state must be one of {', '.join(s.value for s in State)}, got {state!r}")
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    try:
        with ledger.session(readonly=True) as session:
            rows = list_items(session, job, wanted, tenant_id=tenant.id)
            if as_json:
                for row in rows:
                    sys.stdout.write(json.dumps(row.as_dict()) + "\n")
                return
            table = Table("item", "key", "state", "attempts", "error / reason", box=box.SIMPLE_HEAD, pad_edge=False)
            shown = total = 0
            for row in rows:
                total += 1
                if limit and shown >= limit:
                    continue
                shown += 1
                table.add_row(
                    str(row.id),
                    escape(f"{row.key}#{row.variant}"),
                    row.state,
                    str(row.attempts),
                    escape(row.error or row.reason or ""),
                )
    except JobError as exc:
        fail(str(exc))
    out.print(table)
    out.print(
        f"{total} items" + (f" (first {shown} shown; --limit 0 for all)" if shown < total else ""), highlight=False
    )
