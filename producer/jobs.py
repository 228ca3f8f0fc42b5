"""Acting on a job after submission: cancel it, retry its failed or blocked items, list its items.

Functions take the caller's session (one transaction) so the command line and the front door share them;
every state change goes through `contract.transitions`. Retried items go back to `pending`; the scheduler
(contract/scheduling.py) dispatches them after the caller's transaction commits. Pause and resume stop and start
the scheduler's dispatch of a job; `contract.tenants.configure_share` does the same for a whole tenant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from contract import promptfilter, transitions
from contract.schema import Item, Job, RunStats, State
from contract.tenants import owned_job


class JobError(LookupError):
    """No such job or state; the message says what to do."""


@dataclass(frozen=True)
class CancelResult:
    """What `cancel` did: items taken from each active state (running ones are discarded, not waited for)."""

    job: int
    pending: int
    queued: int
    running: int

    @property
    def cancelled(self) -> int:
        return self.pending + self.queued + self.running

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cancelled": self.cancelled}


@dataclass(frozen=True)
class ItemRow:
    """One item as `pixelmill items` lists it; `error` is the last line of the last error."""

    id: int
    key: str
    variant: int
    state: str
    attempts: int
    error: str | None
    reason: str | None  # why it is blocked: "prompt:<category>" or "image:<flagged,...>"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _job(session: Session, tenant_id: int, job_id: int) -> Job:
    """The tenant's job; JobError for a missing one and, in the same words, for another tenant's."""
    job = owned_job(session, tenant_id, job_id)
    if job is None:
        raise JobError(f"no job {job_id}; `pixelmill jobs` lists them")
    return job


def cancel(session: Session, job_id: int, *, tenant_id: int) -> CancelResult:
    """Cancel every pending, queued and running item of the tenant's job (see `transitions.cancel`)."""
    _job(session, tenant_id, job_id)  # the tenant's, or JobError
    left = transitions.cancel(session, job_id)  # tallied in the ledger: counted by the scheduler's leader
    return CancelResult(job=job_id, pending=left[State.pending], queued=left[State.queued], running=left[State.running])


def retry(
    session: Session,
    job_id: int,
    *,
    tenant_id: int,
    failed: bool = True,
    blocked_by: str | None = None,
    blocklists: Sequence[str] = (),
) -> int:
    """Re-queue the job's failed items (`failed`) and/or items blocked at `blocked_by` ("image": generated
    again with the same seed, worth it after changing the checker settings; "prompt": only those the current
    prompt filter, `blocklists`, now lets through). Attempts start again from 0. Returns how many; they are
    pending again, and the scheduler dispatches them once the caller's transaction commits."""
    _job(session, tenant_id, job_id)
    refused: set[int] = set()
    if blocked_by == "prompt":
        lists = promptfilter.load(tuple(blocklists)) if blocklists else None
        if lists is not None:
            for item_id, prompt in session.execute(
                select(Item.id, Item.prompt).where(Item.job_id == job_id, Item.state == State.blocked)
            ):
                if lists.check(prompt) is not None:
                    refused.add(item_id)
    queued = transitions.retry(session, job_id, failed=failed, blocked_by=blocked_by, refused=refused)
    if queued:
        session.execute(delete(RunStats).where(RunStats.job_id == job_id))  # the run is not finished any more
    return len(queued)


def pause(session: Session, job_id: int, *, tenant_id: int, paused: bool = True) -> None:
    """Pause (or resume) the tenant's job: the scheduler sends none of its pending items while it is paused.
    Items already sent (at most the model's window) still run; cancel stops those too."""
    _job(session, tenant_id, job_id).paused = paused


def list_items(session: Session, job_id: int, state: State | None = None, *, tenant_id: int) -> Iterator[ItemRow]:
    """The tenant's job's items in id order (streamed), optionally only those in `state`."""
    _job(session, tenant_id, job_id)
    query = (
        select(Item.id, Item.item_key, Item.variant, Item.state, Item.attempts, Item.error, Item.block_reason)
        .where(Item.job_id == job_id)
        .order_by(Item.id)
    )
    if state is not None:
        query = query.where(Item.state == state)
    for row in session.execute(query.execution_options(yield_per=1000)):
        yield ItemRow(
            id=row.id,
            key=row.item_key,
            variant=row.variant,
            state=State(row.state).value,
            attempts=row.attempts,
            error=last_line(row.error),
            reason=block_summary(row.block_reason),
        )


def count_items(session: Session, job_id: int, *, tenant_id: int) -> dict[str, int]:
    _job(session, tenant_id, job_id)
    return {
        State(s).value: n
        for s, n in session.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state))
    }


def last_line(error: str | None) -> str | None:
    """The line of an error that says what went wrong (tracebacks end with it)."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else None


def block_summary(reason: dict[str, Any] | None) -> str | None:
    if not reason:
        return None
    if reason.get("stage") == "prompt":
        return f"prompt:{reason.get('category', '?')}"
    return f"{reason.get('stage', '?')}:{','.join(reason.get('flagged', [])) or reason.get('category', '?')}"
