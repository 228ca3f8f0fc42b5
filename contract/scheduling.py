"""The scheduler: the ledger holds the backlog, the broker only a shallow window per model queue.

Submit writes items `pending` and publishes nothing. One process at a time (the holder of the `dispatch` row of
`scheduler_leases`) runs `Scheduler.run_pass` every PIXELMILL_SCHEDULER_INTERVAL seconds: for each model with a
backlog it counts the items already `queued` (the ledger, not the broker: prefetched and reserved messages leave
a broker's list, the ledger's count does not), and tops the model's window up to

    PIXELMILL_SCHEDULER_WINDOW messages per live worker of the model (`workers` heartbeats), 1 while none is live

with chunks chosen by `contract.fairshare.FairShare` (weighted fair share across tenants, priority within one,
quotas; paused jobs and tenants are skipped). A chunk is read from the ledger (a job's first pending ids, on the
`(job_id, state, id)` index), published, and then marked `queued` (`transitions.mark_queued`, pending only): the
order submit always used. A crash between publish and mark leaves the items pending with a message out: the
worker claims them from `pending` (claims take pending items), and the scheduler may publish them once more,
which claims nothing. A message that is lost after the mark leaves `queued` items with no message: the
reconciler (worker/reconciler.py) puts them back to `pending` and the scheduler dispatches them again. Nothing
is lost, nothing runs twice (claims skip finished and held items).

The lease (`take_lease`) is a row with holder and expiry, renewed by the holder's passes; it expires after
min(PIXELMILL_SCHEDULER_LEASE, PIXELMILL_RECONCILE_INTERVAL) seconds, so a SIGKILLed holder is replaced within
one reconcile interval. Two holders for a moment (a paused process waking after its lease passed) only publish
the same items twice. `SchedulerThread` runs it in the worker parent (worker/app.py) and in `pixelmill intake`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from contract import metrics, transitions
from contract.fairshare import FairShare, JobBacklog, TenantShare
from contract.ledger import Ledger, insert_ignore
from contract.params import GenerationParams
from contract.queue import QueuedItem, publish_items
from contract.schema import Item, Job, SchedulerLease, State, Tenant, Worker, utcnow
from contract.settings import Settings

log = logging.getLogger(__name__)

LEASE = "dispatch"
IDLE_WINDOW = 1  # messages per model queue while no worker of the model is live


def lease_seconds(settings: Settings) -> float:
    """How long a holder keeps the lease without renewing it: within one reconcile interval."""
    return min(settings.scheduler_lease, settings.reconcile_interval)


def holder_id() -> str:
    """This process, unique even across hosts with the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def take_lease(ledger: Ledger, holder: str, seconds: float, *, name: str = LEASE) -> bool:
    """True when `holder` holds the lease now (taken or renewed). A read first: a process that is not the
    holder while the lease is valid writes nothing (on SQLite, it never takes the write lock)."""
    now = utcnow()
    with ledger.session(readonly=True) as session:
        row = session.execute(
            select(SchedulerLease.holder, SchedulerLease.expires).where(SchedulerLease.name == name)
        ).first()
    if row is not None:
        if row.holder != holder and row.expires > now:
            return False
        if row.holder == holder and (row.expires - now).total_seconds() > seconds / 2:
            return True  # renewed recently enough: no write
    expires = now + timedelta(seconds=seconds)
    with ledger.session() as session:
        if row is None:
            insert_ignore(session, SchedulerLease, [{"name": name, "holder": holder, "expires": expires}], ["name"])
        result = session.execute(
            update(SchedulerLease)
            .where(SchedulerLease.name == name, or_(SchedulerLease.holder == holder, SchedulerLease.expires <= now))
            .values(holder=holder, expires=expires)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1


def release_lease(ledger: Ledger, holder: str, *, name: str = LEASE) -> None:
    """Give the lease up (a clean shutdown): the next process takes it at its next pass."""
    with ledger.session() as session:
        session.execute(
            update(SchedulerLease)
            .where(SchedulerLease.name == name, SchedulerLease.holder == holder)
            .values(expires=utcnow() - timedelta(seconds=1))
        )


@dataclass(frozen=True)
class BacklogRow:
    """Pending items of one model, tenant and priority."""

    model: str
    tenant: str
    priority: str
    pending: int

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tenant": self.tenant, "priority": self.priority, "pending": self.pending}


def backlog(session: Session, *, tenant_id: int | None = None, model: str | None = None) -> list[BacklogRow]:
    """The backlog (pending items, paused ones included) per model, tenant and priority: a sum of the jobs'
    `pending` counters, which the transitions keep in the transactions that move items to or from `pending`
    (no item is read, so it costs the same for a million pending items as for ten)."""
    query = (
        select(Job.model, Tenant.name, Job.priority, func.sum(Job.pending))
        .join(Tenant, Tenant.id == Job.tenant_id)
        .where(Job.pending > 0)
        .group_by(Job.model, Tenant.name, Job.priority)
        .order_by(Job.model, Tenant.name, Job.priority)
    )
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    if model is not None:
        query = query.where(Job.model == model)
    return [BacklogRow(m, t, p, int(n)) for m, t, p, n in session.execute(query)]


@dataclass
class Report:
    """What one pass did: whether this process held the lease, items and messages sent, per model."""

    leader: bool = False
    items: int = 0
    messages: int = 0
    by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Backlogged:
    jobs: list[tuple[JobBacklog, str]]  # each job with its model
    tenants: dict[int, TenantShare]
    live: dict[str, int]  # live workers per model
    queued: dict[str, int]  # items queued per model


def _read_backlog(session: Session, settings: Settings) -> _Backlogged | None:
    """Jobs that have pending items and may run (neither they nor their tenant paused), their tenants' shares,
    live workers and queued items per model. Each job costs one probe of the items' index."""
    has_pending = exists().where(Item.job_id == Job.id, Item.state == State.pending)
    rows = session.execute(
        select(Job.id, Job.model, Job.tenant_id, Job.priority)
        .join(Tenant, Tenant.id == Job.tenant_id)
        .where(Job.paused.is_(False), Tenant.paused.is_(False), has_pending)
    ).all()
    if not rows:
        return None
    models = sorted({r.model for r in rows})
    tenant_ids = sorted({r.tenant_id for r in rows})
    since = utcnow() - timedelta(seconds=settings.worker_stale_after)
    live = session.execute(
        select(Worker.model, func.count())
        .where(Worker.model.in_(models), Worker.last_seen > since, Worker.state != "failed")
        .group_by(Worker.model)
    ).all()
    queued = session.execute(
        select(Job.model, func.count())
        .select_from(Item)
        .join(Job, Job.id == Item.job_id)
        .where(Item.state == State.queued, Job.model.in_(models))
        .group_by(Job.model)
    ).all()
    flying = dict(
        session.execute(
            select(Job.tenant_id, func.count())
            .select_from(Item)
            .join(Job, Job.id == Item.job_id)
            .where(Item.state.in_([State.queued, State.running]), Job.tenant_id.in_(tenant_ids))
            .group_by(Job.tenant_id)
        ).all()
    )
    tenants = {
        t.id: TenantShare(t.id, max(1, t.weight), int(flying.get(t.id, 0)), t.max_in_flight)
        for t in session.execute(
            select(Tenant.id, Tenant.weight, Tenant.max_in_flight).where(Tenant.id.in_(tenant_ids))
        )
    }
    return _Backlogged(
        jobs=[(JobBacklog(r.id, r.tenant_id, r.priority), r.model) for r in rows],
        tenants=tenants,
        live={m: int(n) for m, n in live},
        queued={m: int(n) for m, n in queued},
    )


class Scheduler:
    """One process's scheduler: its lease holder id and the fair-share memory of each model queue."""

    def __init__(self, settings: Settings, ledger: Ledger, app: Any, *, holder: str | None = None) -> None:
        self.settings, self.ledger, self.app = settings, ledger, app
        self.holder = holder or holder_id()
        self.fair: dict[str, FairShare] = {}

    @property
    def chunk_size(self) -> int:
        return max(self.settings.batch_size, self.settings.items_per_message)

    def window(self, live_workers: int) -> int:
        """Messages the broker may hold for a model with this many live workers."""
        return self.settings.scheduler_window * live_workers if live_workers else IDLE_WINDOW

    def run_pass(self) -> Report:
        """Take or renew the lease; if held, top every model's window up with fairly chosen chunks."""
        if not take_lease(self.ledger, self.holder, lease_seconds(self.settings)):
            return Report()
        report = Report(leader=True)
        with self.ledger.session(readonly=True) as session:
            found = _read_backlog(session, self.settings)
            if found is None:
                return report
            for model in sorted({m for _, m in found.jobs}):
                size = self.chunk_size
                room = self.window(found.live.get(model, 0)) - math.ceil(found.queued.get(model, 0) / size)
                if room <= 0:
                    continue
                chosen = self._choose(session, model, found, room)
                if chosen:
                    sent = self._send(model, chosen)
                    report.items += len(chosen)
                    report.messages += sent
                    report.by_model[model] = len(chosen)
        return report

    def _choose(self, session: Session, model: str, found: _Backlogged, chunks: int) -> list[QueuedItem]:
        """Up to `chunks` chunks of the model's backlog, in fair-share order, read from the ledger."""
        now = utcnow()
        chosen: list[QueuedItem] = []
        after: dict[int, int] = {}  # per job: the highest id taken in this pass (the next take starts above it)

        def take(job: int, n: int) -> int:
            rows = session.execute(
                select(Item.id, Item.params)
                .where(
                    Item.job_id == job,
                    Item.state == State.pending,
                    Item.id > after.get(job, 0),
                    or_(Item.not_before.is_(None), Item.not_before <= now),
                )
                .order_by(Item.id)
                .limit(n)
            ).all()
            if rows:
                after[job] = rows[-1].id
                params_of: dict[str, GenerationParams] = {}
                for item_id, params in rows:
                    key = repr(sorted(params.items()))
                    parsed = params_of.get(key) or params_of.setdefault(key, GenerationParams.from_json(params))
                    chosen.append(QueuedItem(item=item_id, job=job, params=parsed))
            return len(rows)

        jobs = [job for job, job_model in found.jobs if job_model == model]
        picks = self.fair.setdefault(model, FairShare()).choose(
            found.tenants, jobs, chunks=chunks, chunk_size=self.chunk_size, take=take
        )
        for pick in picks:  # a quota spans models: the next model of this pass sees these items in flight
            share = found.tenants.get(pick.tenant)
            if share is not None:
                found.tenants[pick.tenant] = replace(share, in_flight=share.in_flight + pick.items)
        return chosen

    def _send(self, model: str, items: Sequence[QueuedItem]) -> int:
        """Publish, then mark queued (pending items only): a crash in between leaves them pending, dispatched
        again, and the duplicate message claims nothing."""
        settings = self.settings
        chunks = publish_items(self.app, items, model, settings.batch_size, settings.items_per_message)
        with self.ledger.session() as session:
            transitions.mark_queued(session, [q.item for q in items], jobs={q.job for q in items})
        return len(chunks)

    def release(self) -> None:
        release_lease(self.ledger, self.holder)


class SchedulerThread:
    """`Scheduler.run_pass` on a daemon thread every PIXELMILL_SCHEDULER_INTERVAL seconds (`wake` runs one
    sooner); errors are logged and the next pass tries again. `stop` gives the lease up."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixelmill-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        try:
            self.scheduler.release()
        except Exception:
            log.exception("giving the scheduler lease up failed; it expires on its own")

    def _run(self) -> None:
        interval = self.scheduler.settings.scheduler_interval
        while not self._stop.is_set():
            try:
                started = time.perf_counter()
                report = self.scheduler.run_pass()
                metrics.scheduler_pass(report.leader, report.by_model, time.perf_counter() - started)
                if report.items:
                    log.debug("dispatched", extra={"items": report.items, "messages": report.messages})
            except Exception:
                log.exception("scheduler pass failed; will try again")
            self._wake.wait(interval)
            self._wake.clear()
