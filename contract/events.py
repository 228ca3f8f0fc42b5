"""Events: how a job tells its caller what happened, written to the outbox (`events`, `deliveries`) in the very
transaction that makes it true, and delivered later by the dispatcher (contract/outbox.py).

- `job.accepted`: in the submit transaction (producer/submit.py `submit_request`).
- `job.rejected`: on its own, since a rejected request writes nothing else (producer/request_v1.py).
- `item.succeeded` / `item.failed` / `item.blocked`: in the transitions that end an item (contract/transitions.py),
  only for jobs whose request asked for them.
- `job.finished`: in the transaction that leaves the job with no pending, queued or running item. Transitions
  that end an item call `touch`; before that transaction commits, `settle` locks the touched jobs' rows (so
  two workers finishing the last two items on PostgreSQL cannot both miss it) and writes the event once.

Every event's `id` is derived from what it is about (a job or an item, and the type), and `events.uid` is
unique: a redelivered request, a second finish or two racing settlers find the row already there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from contract import logs
from contract.ledger import insert_ignore
from contract.schema import ACTIVE, Delivery, Event, Item, Job, State, utcnow
from contract.tenants import DEFAULT_TENANT_ID

EVENT_VERSION = 1
TASK_EVENT = "pixelmill.event"  # the Celery task an event is sent as to a `reply_to` queue

JOB_ACCEPTED = "job.accepted"
JOB_REJECTED = "job.rejected"
JOB_FINISHED = "job.finished"
ITEM_SUCCEEDED = "item.succeeded"
ITEM_FAILED = "item.failed"
ITEM_BLOCKED = "item.blocked"
JOB_EVENTS = (JOB_ACCEPTED, JOB_REJECTED, JOB_FINISHED)
ITEM_EVENTS = (ITEM_SUCCEEDED, ITEM_FAILED, ITEM_BLOCKED)
EVENT_TYPES = JOB_EVENTS + ITEM_EVENTS

FAILED_KEYS_MAX = 1000  # failed keys listed in job.finished; the rest via the items endpoint

_TOUCHED = "pixelmill.touched_jobs"
_NOTIFY = "pixelmill.notify"


@dataclass(frozen=True)
class Notify:
    """Where a job's events go and which ones: stored on the job (`jobs.params["notify"]`) at submit."""

    reply_to: str | None = None  # a queue: each event is sent there as the task `pixelmill.event`
    webhook: str | None = None  # an URL: each event is POSTed there, signed
    events: tuple[str, ...] = JOB_EVENTS  # job-level only unless item events are asked for

    def as_json(self) -> dict[str, Any]:
        return {"reply_to": self.reply_to, "webhook": self.webhook, "events": list(self.events)}

    @classmethod
    def from_json(cls, raw: Any) -> Notify:
        if not isinstance(raw, dict):
            return cls()
        return cls(
            reply_to=raw.get("reply_to"), webhook=raw.get("webhook"), events=tuple(raw.get("events") or JOB_EVENTS)
        )

    def targets(self, type_: str) -> list[tuple[str, str]]:
        """(kind, target) pairs that receive an event of this type. `job.rejected` always goes out, and so
        does every job-level type: a caller who names a reply queue must learn how its request ended."""
        if type_ not in JOB_EVENTS and type_ not in self.events:
            return []
        return [(kind, target) for kind, target in (("queue", self.reply_to), ("webhook", self.webhook)) if target]

    @property
    def wants_items(self) -> bool:
        return any(t in ITEM_EVENTS for t in self.events)


def event_uid(scope: str, type_: str) -> str:
    """A stable event id: the same job/item/request and type always give the same id."""
    return "evt_" + hashlib.sha256(f"{scope}\0{type_}".encode()).hexdigest()[:32]


def emit(
    session: Session,
    *,
    type_: str,
    scope: str,
    request_id: str | None,
    data: dict[str, Any],
    notify: Notify,
    tenant_id: int,
    job_id: int | None = None,
    catalogue: str | None = None,
    created: datetime | None = None,
    trace_id: str | None = None,
) -> bool:
    """Write one event and its deliveries in the caller's transaction. False: it already existed (nothing added).
    No `job_id` nor `catalogue`: an event about a request that made no job (`job.rejected`). `tenant_id`: whose
    event it is (the job's owner, or the tenant that sent the refused request): who may list it. `trace_id`: the
    request's (else the trace being served, contract/logs.py), in the body when there is one."""
    now = created or utcnow()
    trace_id = trace_id or logs.TRACE_ID.get()
    uid = event_uid(scope, type_)
    body = {
        "v": EVENT_VERSION,
        "type": type_,
        "id": uid,
        "request_id": request_id,
        **({"trace_id": trace_id} if trace_id else {}),
        "job": job_id,
        "catalogue": catalogue,
        "created_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }
    event_id = _insert_new(
        session,
        Event,
        {
            "uid": uid,
            "type": type_,
            "job_id": job_id,
            "tenant_id": tenant_id,
            "request_id": request_id,
            "body": body,
            "created": now,
        },
        ["uid"],
    )
    if event_id is None:
        return False
    insert_ignore(
        session,
        Delivery,
        [_pending(event_id, kind, target, now) for kind, target in notify.targets(type_)],
        ["event_id", "kind", "target"],
    )
    return True


def resend(session: Session, uids: Iterable[str], notify: Notify) -> int:
    """Deliver these events again to `notify`'s targets (a duplicate request gets its events again): existing
    deliveries go back to pending, missing ones are added. Returns how many deliveries are now pending."""
    now = utcnow()
    count = 0
    for event_id, type_ in session.execute(select(Event.id, Event.type).where(Event.uid.in_(list(uids)))):
        for kind, target in notify.targets(type_):
            if (
                _insert_new(session, Delivery, _pending(event_id, kind, target, now), ["event_id", "kind", "target"])
                is None
            ):
                session.execute(
                    update(Delivery)
                    .where(Delivery.event_id == event_id, Delivery.kind == kind, Delivery.target == target)
                    .values(state="pending", attempts=0, next_at=now, lease_until=None)
                )
            count += 1
    return count


def _pending(event_id: int, kind: str, target: str, now: datetime) -> dict[str, Any]:
    """A delivery row that is due now."""
    return {
        "event_id": event_id,
        "kind": kind,
        "target": target,
        "state": "pending",
        "attempts": 0,
        "next_at": now,
        "created": now,
    }


def _insert_new(
    session: Session, table: type[Event] | type[Delivery], row: dict[str, Any], conflict: list[str]
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the new row's id, or None when it already existed
    (rowcount is not reliable for this on every driver)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stmt = insert(table).values(**row).on_conflict_do_nothing(index_elements=conflict).returning(table.id)
    return session.scalar(stmt)


def job_event_uids(session: Session, job_id: int) -> list[str]:
    return list(
        session.scalars(select(Event.uid).where(Event.job_id == job_id, Event.type.in_(JOB_EVENTS)).order_by(Event.id))
    )


@dataclass(frozen=True)
class JobFacts:
    """What an event about a job carries besides its data: where it goes, the request id, catalogue and owner."""

    notify: Notify
    request_id: str | None
    catalogue: str | None
    tenant_id: int
    trace_id: str | None = None  # of the request that made the job (`jobs.params["trace_id"]`)


def notify_of(session: Session, job_id: int) -> JobFacts:
    """The job's notify targets, request id, catalogue and tenant, cached for the session (one read per job)."""
    cache: dict[int, JobFacts] = session.info.setdefault(_NOTIFY, {})
    if job_id not in cache:
        row = session.execute(
            select(Job.params, Job.request_id, Job.catalogue, Job.tenant_id).where(Job.id == job_id)
        ).one_or_none()
        params = (row[0] or {}) if row is not None else {}
        cache[job_id] = (
            JobFacts(Notify.from_json(params.get("notify")), row[1], row[2], row[3], params.get("trace_id"))
            if row is not None
            else JobFacts(Notify(), None, None, DEFAULT_TENANT_ID)
        )
    return cache[job_id]


# --- what the transitions call ----------------------------------------------------------------------------


def _emit_job(session: Session, job: Job, type_: str, notify: Notify, data: dict[str, Any]) -> None:
    """One event about a whole job (scope `job:<id>`), with the job's request id and catalogue."""
    emit(
        session,
        type_=type_,
        scope=f"job:{job.id}",
        job_id=job.id,
        tenant_id=job.tenant_id,
        request_id=job.request_id,
        catalogue=job.catalogue,
        notify=notify,
        data=data,
        trace_id=(job.params or {}).get("trace_id"),
    )


def job_accepted(session: Session, job: Job, notify: Notify) -> None:
    """In the submit transaction, once the job's counts are known."""
    counts = job.counts or {}
    _emit_job(
        session,
        job,
        JOB_ACCEPTED,
        notify,
        {
            "name": job.name,
            "model": job.model,
            "rows": counts.get("rows", 0),
            "items": int(counts.get("items", 0)) - int(counts.get("blocked", 0)),
            "skipped": counts.get("skipped", 0),
            "blocked": counts.get("blocked", 0),
            "status": f"/v1/jobs/{job.id}",
        },
    )
    touch(session, job.id)  # a job with nothing to generate is finished at once


def item_ended(
    session: Session,
    *,
    item_id: int,
    job_id: int,
    key: str,
    variant: int,
    state: State,
    error: str | None = None,
    reason: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> None:
    """An item reached a final state in this transaction: its event if asked for, and the job re-checked. A photo
    row's event names its photo (`input`, `input_sha256`: `items.inputs`)."""
    touch(session, job_id)
    facts = notify_of(session, job_id)
    type_ = {State.succeeded: ITEM_SUCCEEDED, State.failed: ITEM_FAILED, State.blocked: ITEM_BLOCKED}[state]
    if type_ not in facts.notify.events:
        return
    data: dict[str, Any] = {"item": item_id, "key": key, "variant": variant, "state": state.value}
    if error is not None:
        data["error"] = error[-1000:]
    if reason is not None:
        data["reason"] = reason
    if inputs:
        data["input"], data["input_sha256"] = inputs.get("image"), inputs.get("image_sha256")
    emit(
        session,
        type_=type_,
        scope=f"item:{item_id}",
        job_id=job_id,
        tenant_id=facts.tenant_id,
        request_id=facts.request_id,
        catalogue=facts.catalogue,
        trace_id=facts.trace_id,  # None unless the request carried or was given one
        data=data,
        notify=facts.notify,
    )


def touch(session: Session, job_id: int) -> None:
    """Mark a job whose items changed in this transaction: `settle` checks it before the commit."""
    session.info.setdefault(_TOUCHED, set()).add(job_id)


def settle(session: Session, job_ids: Iterable[int]) -> list[int]:
    """Write `job.finished` for each of these jobs that has no active item left (and has none yet). The job
    rows are locked first, in id order, so concurrent transactions settle one after the other and the last
    sees every other's items. Returns the jobs finished now."""
    finished = []
    jobs = session.scalars(select(Job).where(Job.id.in_(sorted(set(job_ids)))).order_by(Job.id).with_for_update()).all()
    for job in jobs:
        if session.scalar(select(Event.id).where(Event.uid == event_uid(f"job:{job.id}", JOB_FINISHED))):
            continue
        if session.scalar(select(Item.id).where(Item.job_id == job.id, Item.state.in_(ACTIVE)).limit(1)):
            continue
        counts = {state.value: 0 for state in (State.succeeded, State.blocked, State.failed)}
        for state, n in session.execute(
            select(Item.state, func.count()).where(Item.job_id == job.id).group_by(Item.state)
        ):
            counts[State(state).value] = n
        counts["skipped"] = int((job.counts or {}).get("skipped", 0))
        failed = list(
            session.scalars(
                select(Item.item_key)
                .where(Item.job_id == job.id, Item.state == State.failed)
                .order_by(Item.id)
                .limit(FAILED_KEYS_MAX + 1)
            )
        )
        notify = notify_of(session, job.id).notify
        _emit_job(
            session,
            job,
            JOB_FINISHED,
            notify,
            {
                "counts": counts,
                "failed_keys": failed[:FAILED_KEYS_MAX],
                "failed_keys_truncated": len(failed) > FAILED_KEYS_MAX,
                "status": f"/v1/jobs/{job.id}",
                "items": f"/v1/jobs/{job.id}/items?state=failed",
                "manifest": {"http": f"/v1/jobs/{job.id}/manifest", "cli": f"pixelmill manifest --job {job.id}"},
            },
        )
        finished.append(job.id)
    return finished


@sa_event.listens_for(Session, "before_commit")
def _settle_touched(session: Session) -> None:
    touched = session.info.pop(_TOUCHED, None)
    session.info.pop(_NOTIFY, None)
    if touched:
        settle(session, touched)


@sa_event.listens_for(Session, "after_rollback")
def _forget_touched(session: Session) -> None:
    session.info.pop(_TOUCHED, None)
    session.info.pop(_NOTIFY, None)
