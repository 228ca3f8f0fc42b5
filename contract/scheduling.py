"""The scheduler: the ledger holds the backlog, the broker only a shallow window per model queue.

Submit writes items `pending` and publishes nothing. One process at a time (the holder of the `dispatch` row of
`scheduler_leases`) runs `Scheduler.run_pass` every PIXELMILL_SCHEDULER_INTERVAL seconds: for each model with a
backlog it counts the items already `queued` (the ledger, not the broker: prefetched and reserved messages leave
a broker's list, the ledger's count does not), and tops the model's window up to

    PIXELMILL_SCHEDULER_WINDOW messages per live worker of the model (`workers` heartbeats), less one, at least 1

with chunks chosen by `contract.fairshare.FairShare` (weighted fair share across tenants, priority within one,
quotas; paused jobs and tenants are skipped), planned on the jobs' `pending` counters (the jobs with a backlog come
from the partial index `ix_jobs_backlog`) and read from the ledger in one statement (each job's first pending ids,
on the `(job_id, state, id)` index), published, and then marked `queued` (`transitions.mark_queued`, pending
only): the order submit always used. A counter can be wrong; the sweep (a holder's first pass, then once per
reconcile interval) recounts any job whose counter disagrees with its items, so a wrong one never strands work.
A crash between publish and mark leaves the items pending with a message out: the
worker claims them from `pending` (claims take pending items), and the scheduler may publish them once more,
which claims nothing. A message that is lost after the mark leaves `queued` items with no message: the
reconciler (worker/reconciler.py) puts them back to `pending` and the scheduler dispatches them again. Nothing
is lost, nothing runs twice (claims skip finished and held items).

The lease (`take_lease`) is a row with holder and expiry, renewed by the holder's passes; it expires after
min(PIXELMILL_SCHEDULER_LEASE, PIXELMILL_RECONCILE_INTERVAL - PIXELMILL_SCHEDULER_INTERVAL) seconds (never under
two scheduler intervals), so a SIGKILLed holder is replaced within one reconcile interval. Two holders for a
moment (a paused process waking after its lease passed) only publish the same items twice. `SchedulerThread` runs
it in the worker parent (worker/app.py) and in `pixelmill intake`.

The holder also counts the item outcomes that transitions tallied in the ledger (`count_tallies`: a cancel, a
claim's give-up, the reconciler's requeues), since the process that made them may be a short command that no
Prometheus scrapes: each tally is deleted and counted in the same step, once, by this long-running process.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Select,
    String,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from contract import metrics, transitions
from contract.fairshare import FairShare, JobBacklog, TenantShare
from contract.ledger import Ledger, ids_param, insert_ignore
from contract.params import GenerationParams
from contract.queue import QueuedItem, publish_items
from contract.schema import Item, Job, OutcomeTally, SchedulerLease, State, Tenant, Worker, utcnow
from contract.settings import Settings

log = logging.getLogger(__name__)

LEASE = "dispatch"
IDLE_WINDOW = 1  # messages per model queue while no worker of the model is live


def lease_seconds(settings: Settings) -> float:
    """How long a holder keeps the lease without renewing it.

    A SIGKILLed holder's lease runs out, then another process's next pass (at most one scheduler interval later)
    takes it: lease + one interval stays within the reconcile interval. Never under two intervals, or a holder
    whose pass ran late would lose the lease every time; with a reconcile interval under three scheduler
    intervals that floor wins and the take-over may take up to three scheduler intervals.
    """
    interval = settings.scheduler_interval
    return max(2 * interval, min(settings.scheduler_lease, settings.reconcile_interval - interval))


def holder_id() -> str:
    """This process, unique even across hosts with the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseSeen:
    """What a pass's first read saw: the lease's holder and expiry (None: no lease row yet), and whether outcome
    tallies wait to be counted."""

    holder: str | None
    expires: datetime | None
    tallies: bool


def read_lease(session: Session, *, name: str = LEASE) -> LeaseSeen:
    """The lease and whether tallies wait, in one statement (one round trip of the pass fewer)."""
    holder, expires, tallies = session.execute(_lease_read(name)).one()
    return LeaseSeen(holder, expires, bool(tallies))


# The pass's statements are built once (functools.cache) and run with parameters: building a statement and its
# cache key anew each pass was a third of the pass's Python.


@functools.cache
def _lease_read(name: str) -> Select[Any]:
    of_lease = SchedulerLease.name == name
    return select(
        select(SchedulerLease.holder).where(of_lease).scalar_subquery(),
        select(SchedulerLease.expires).where(of_lease).scalar_subquery(),
        exists(select(OutcomeTally.id)),
    )


@functools.cache
def _backlogged_jobs() -> Select[int, str, int, str, int, int, int | None]:
    return (
        select(Job.id, Job.model, Job.tenant_id, Job.priority, Job.pending, Tenant.weight, Tenant.max_in_flight)
        .join(Tenant, Tenant.id == Job.tenant_id)
        .where(Job.pending > 0, Job.paused.is_(False), Tenant.paused.is_(False))
    )


@functools.cache
def _in_flight_and_live() -> CompoundSelect[Any]:
    """Items queued or running per model, tenant and state, and (state `_LIVE`) live workers per model, whose
    heartbeat is after the parameter `since`."""
    in_flight = (
        select(Job.model, Job.tenant_id, type_coerce(Item.state, String), func.count())
        .select_from(Item)
        .join(Job, Job.id == Item.job_id)
        # Neither IN (...) nor a filter on the models: an expanding parameter re-renders the statement at every
        # execution (about 1.5 ms of Python a pass); the live workers of other models are a few rows more.
        .where(or_(Item.state == State.queued, Item.state == State.running))
        .group_by(Job.model, Job.tenant_id, Item.state)
    )
    live_workers = (
        select(Worker.model, null(), literal(_LIVE), func.count())
        .where(Worker.last_seen > bindparam("since"), Worker.state != "failed")
        .group_by(Worker.model)
    )
    return union_all(in_flight, live_workers)


@functools.cache
def _ready_items() -> Select[Any]:
    """Each job's next ready pending items: one LATERAL index range per row of the array parameters `jobs`, `ns`
    (how many) and `afters` (above which id); `now` for the back-off."""
    wanted = (
        func.unnest(ids_param("jobs"), ids_param("ns"), ids_param("afters"))
        .table_valued("job", "n", "above")
        .render_derived(name="wanted")
    )
    ready = (
        select(Item.id, Item.job_id, cast(Item.params, Text).label("params"))
        .where(
            Item.job_id == wanted.c.job,
            Item.state == State.pending,
            Item.id > wanted.c.above,
            or_(Item.not_before.is_(None), Item.not_before <= bindparam("now")),
        )
        .order_by(Item.id)
        .limit(wanted.c.n)
        .lateral("ready")
    )
    return select(ready).select_from(wanted).join(ready, true())


def take_lease(
    ledger: Ledger, holder: str, seconds: float, *, name: str = LEASE, seen: LeaseSeen | None = None
) -> bool:
    """True when `holder` holds the lease now (taken or renewed). A read first (`seen`: the pass read it already):
    a process that is not the holder while the lease is valid writes nothing (on SQLite, it never takes the write
    lock)."""
    now = utcnow()
    if seen is None:
        with ledger.session(readonly=True) as reading:
            seen = read_lease(reading, name=name)
    if seen.holder is not None and seen.expires is not None:
        if seen.holder != holder and seen.expires > now:
            return False
        if seen.holder == holder and (seen.expires - now).total_seconds() > seconds / 2:
            return True  # renewed recently enough: no write
    expires = now + timedelta(seconds=seconds)
    with ledger.session() as session:
        if seen.holder is None:
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
        return asdict(self)


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
    """What one pass did: whether this process held the lease, whether it swept the counters, items and messages
    sent, per model."""

    leader: bool = False
    swept: bool = False
    items: int = 0
    messages: int = 0
    by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Backlogged:
    jobs: list[tuple[JobBacklog, str]]  # each job with its model
    pending: dict[int, int]  # each job's `pending` counter: what a pass plans on
    tenants: dict[int, TenantShare]
    live: dict[str, int]  # live workers per model
    queued: dict[str, int]  # items queued per model


_LIVE = "live"  # in `_read_backlog`'s second statement: a row of live workers, not of items in a state
_ROUNDS = 4  # reads of one model's chunks in a pass: one unless the counters promised items the ledger lacks


def _read_backlog(session: Session, settings: Settings) -> _Backlogged | None:
    """Jobs whose `pending` counter is positive and that may run (neither they nor their tenant paused), from the
    partial index `ix_jobs_backlog`, with their tenants' shares; live workers per model; items queued per model and
    in flight per tenant (both from the items' state index: bounded by the windows and the workers, not the
    backlog). Two statements, whatever the number of jobs or pending items."""
    rows = session.execute(_backlogged_jobs()).all()
    if not rows:
        return None
    since = utcnow() - timedelta(seconds=settings.worker_stale_after)
    live: dict[str, int] = {}
    queued: Counter[str] = Counter()
    flying: Counter[int] = Counter()
    counted: Sequence[Any] = session.execute(_in_flight_and_live(), {"since": since}).all()  # one round trip
    for model, tenant, state, n in counted:
        if state == _LIVE:
            live[model] = int(n)
            continue
        flying[tenant] += n
        if state == State.queued.value:
            queued[model] += n
    tenants = {
        r.tenant_id: TenantShare(r.tenant_id, max(1, r.weight), flying[r.tenant_id], r.max_in_flight) for r in rows
    }
    return _Backlogged(
        jobs=[(JobBacklog(r.id, r.tenant_id, r.priority), r.model) for r in rows],
        pending={r.id: int(r.pending) for r in rows},
        tenants=tenants,
        live=live,
        queued=dict(queued),
    )


def _next_pending(
    session: Session, want: Mapping[int, int], after: Mapping[int, int]
) -> dict[int, list[tuple[int, str]]]:
    """Each job's next `want[job]` ready pending items (id, params as JSON text) above `after[job]`, in id order:
    one statement, a UNION ALL of one `(job_id, state, id)` index range per job (SQLite has no LATERAL). The params
    come as text: a chunk's items mostly share them, and decoding each row's JSON was most of a pass's Python."""
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        return _next_pending_pg(session, want, after, now)
    parts = [
        select(Item.id, Item.job_id, cast(Item.params, Text).label("params"))
        .where(
            Item.job_id == job,
            Item.state == State.pending,
            Item.id > after.get(job, 0),
            or_(Item.not_before.is_(None), Item.not_before <= now),
        )
        .order_by(Item.id)
        .limit(n)
        for job, n in want.items()
        if n > 0
    ]
    found: dict[int, list[tuple[int, str]]] = {job: [] for job in want}
    if not parts:
        return found
    query = parts[0] if len(parts) == 1 else union_all(*(select(part.subquery()) for part in parts))
    for item_id, job, params in session.execute(query).all():
        found[job].append((item_id, params))
    for rows in found.values():
        rows.sort(key=lambda row: row[0])
    return found


def _next_pending_pg(
    session: Session, want: Mapping[int, int], after: Mapping[int, int], now: datetime
) -> dict[int, list[tuple[int, str]]]:
    """`_next_pending` on PostgreSQL: one LATERAL index range per row of three array parameters (job, how many,
    above which id), so the statement is the same for any number of jobs (prepared once, no SQL built per pass)."""
    jobs = [job for job, n in want.items() if n > 0]
    found: dict[int, list[tuple[int, str]]] = {job: [] for job in want}
    if not jobs:
        return found
    values = {
        "jobs": jobs,
        "ns": [want[job] for job in jobs],
        "afters": [after.get(job, 0) for job in jobs],
        "now": now,
    }
    for item_id, job, params in session.execute(_ready_items(), values).all():
        found[job].append((item_id, params))
    for rows in found.values():
        rows.sort(key=lambda row: row[0])
    return found


def _params(raw: str) -> GenerationParams:
    return GenerationParams.from_json(json.loads(raw))


def count_tallies(ledger: Ledger, *, waiting: bool | None = None) -> int:
    """Move the outcome tallies (contract/schema.py `OutcomeTally`) into `pixelmill_items_total`: delete them and
    count what was deleted, so two holders for a moment never count one twice. A read first (`waiting`: the pass's
    `read_lease` saw whether any wait): while there is nothing to count (nearly always) nothing is written. Returns
    the items counted."""
    if waiting is None:
        with ledger.session(readonly=True) as session:
            waiting = session.scalar(select(OutcomeTally.id).limit(1)) is not None
    if not waiting:
        return 0
    with ledger.session() as session:
        taken = session.execute(
            delete(OutcomeTally).returning(OutcomeTally.job_id, OutcomeTally.outcome, OutcomeTally.n)
        ).all()
        per_job = Counter[tuple[int, str]]()
        for job_id, outcome, n in taken:
            per_job[(job_id, outcome)] += n
        labels = {
            job_id: (model, tenant or "")
            for job_id, model, tenant in session.execute(
                select(Job.id, Job.model, Tenant.name)
                .outerjoin(Tenant, Tenant.id == Job.tenant_id)
                .where(Job.id.in_({job_id for job_id, _ in per_job}))
            )
        }
    counted = Counter[tuple[str, str, str]]()
    for (job_id, outcome), n in per_job.items():
        model, tenant = labels.get(job_id, ("", ""))
        counted[(outcome, model, tenant)] += n
    metrics.tallied(counted)  # after the commit: a rolled-back take counts nothing
    return sum(counted.values())


def stranded_jobs(session: Session) -> list[int]:
    """Jobs whose `pending` counter disagrees with their items about having any: one probe of the items' index per
    job (the full check that the counters spare every other pass)."""
    has_pending = exists().where(Item.job_id == Job.id, Item.state == State.pending)
    return list(
        session.scalars(
            select(Job.id).where(or_(and_(Job.pending <= 0, has_pending), and_(Job.pending > 0, ~has_pending)))
        )
    )


class Scheduler:
    """One process's scheduler: its lease holder id, the fair-share memory of each model queue, and when it last
    swept the counters."""

    def __init__(self, settings: Settings, ledger: Ledger, app: Any, *, holder: str | None = None) -> None:
        self.settings, self.ledger, self.app = settings, ledger, app
        self.holder = holder or holder_id()
        self.fair: dict[str, FairShare] = {}
        self.swept_at: float | None = None  # monotonic time of the last sweep while holding the lease

    @property
    def chunk_size(self) -> int:
        return max(self.settings.batch_size, self.settings.items_per_message)

    def window(self, live_workers: int) -> int:
        """Messages the broker may hold for a model with this many live workers: one fewer than the window per
        worker would give, and at least one. A tenant whose work just arrived then has its first chunk taken by the
        last of the busy workers to finish at the latest (its first images within about two chunks' time), not by
        the first worker to finish a second chunk; the price is that two workers finishing within one scheduler
        interval of each other leave the second idle until the next pass."""
        if not live_workers:
            return IDLE_WINDOW
        return max(1, self.settings.scheduler_window * live_workers - 1)

    def run_pass(self) -> Report:
        """Take or renew the lease; if held, sweep the counters when due, then top every model's window up with
        fairly chosen chunks. Between sweeps one session (`Ledger.statements`) reads the lease (with whether
        tallies wait), the backlog and the chunks, and on PostgreSQL also marks them: there each statement commits
        by itself, sparing the BEGIN and COMMIT round trips (a pass is six round trips, the pool's ping included)."""
        with self.ledger.statements() as session:
            seen = read_lease(session)
            if not take_lease(self.ledger, self.holder, lease_seconds(self.settings), seen=seen):
                self.swept_at = None  # a holder sweeps at its first pass
                return Report()
            if not self.sweep_due():
                return self._dispatch(session, Report(leader=True), seen.tallies)
        self.sweep()  # before the backlog's read: its snapshot (SQLite's) sees the recounted counters
        with self.ledger.statements() as session:
            return self._dispatch(session, Report(leader=True, swept=True), seen.tallies)

    def _dispatch(self, session: Session, report: Report, tallies: bool) -> Report:
        """Count the tallies if any wait, read the backlog, and fill each model's window."""
        try:
            count_tallies(self.ledger, waiting=tallies)
        except Exception:  # counting must never stop dispatch; the tallies wait for the next pass
            log.exception("counting the ledger's outcome tallies failed; will try again")
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
                sent = self._send(model, chosen, session)
                report.items += len(chosen)
                report.messages += sent
                report.by_model[model] = len(chosen)
        return report

    def sweep_due(self) -> bool:
        """At a holder's first pass, then once per reconcile interval."""
        interval = self.settings.reconcile_interval
        return self.swept_at is None or time.monotonic() - self.swept_at >= interval

    def sweep(self) -> list[int]:
        """The safety net under the counters: a job whose counter says it has no pending items while it has some
        would never be chosen; recount every job that disagrees (logged: a counter went wrong)."""
        self.swept_at = time.monotonic()
        with self.ledger.session(readonly=True) as session:
            wrong = stranded_jobs(session)
        if wrong:
            log.warning("jobs' pending counters disagreed with their items; recounted", extra={"jobs": wrong})
            with self.ledger.session() as session:
                transitions.recount_pending(session, wrong)
        return wrong

    def _choose(self, session: Session, model: str, found: _Backlogged, chunks: int) -> list[QueuedItem]:
        """Up to `chunks` chunks of the model's backlog in fair-share order: planned on the jobs' counters, then read
        in one statement. A job that had fewer ready items than its counter (items backing off, a counter too
        high) gets its pick's shortfall refunded and no more picks; the room left is planned again."""
        size, fair = self.chunk_size, self.fair.setdefault(model, FairShare())
        jobs = [job for job, job_model in found.jobs if job_model == model]
        left = {job.job: found.pending[job.job] for job in jobs}
        after: dict[int, int] = {}  # per job: the highest id taken in this pass (the next read starts above it)
        chosen: list[QueuedItem] = []
        params_of: dict[str, GenerationParams] = {}

        def plan(job: int, n: int) -> int:
            n = max(0, min(n, left[job]))
            left[job] -= n
            return n

        for _ in range(_ROUNDS):
            picks = fair.choose(found.tenants, jobs, chunks=chunks, chunk_size=size, take=plan)
            want = Counter[int]()
            for pick in picks:
                want[pick.job] += pick.items
            rows = _next_pending(session, want, after)
            short = False
            for pick in picks:
                got, rows[pick.job] = rows[pick.job][: pick.items], rows[pick.job][pick.items :]
                share = found.tenants.get(pick.tenant, TenantShare(pick.tenant))
                if len(got) < pick.items:
                    fair.refund(pick.tenant, pick.items - len(got), share.weight)
                    left[pick.job], short = 0, True
                if not got:
                    continue
                chunks -= 1
                after[pick.job] = got[-1][0]
                # A quota spans models and rounds: what follows sees these items in flight.
                found.tenants[pick.tenant] = replace(share, in_flight=share.in_flight + len(got))
                for item_id, raw in got:
                    parsed = params_of.get(raw) or params_of.setdefault(raw, _params(raw))
                    chosen.append(QueuedItem(item=item_id, job=pick.job, params=parsed))
            if not short or chunks <= 0:
                break
        return chosen

    def _send(self, model: str, items: Sequence[QueuedItem], session: Session) -> int:
        """Publish, then mark queued (pending items only): a crash in between leaves them pending, dispatched
        again, and the duplicate message claims nothing. On PostgreSQL the mark is one statement, committed by
        itself in the pass's `statements()` session; on SQLite it is a transaction of its own."""
        settings = self.settings
        chunks = publish_items(self.app, items, model, settings.batch_size, settings.items_per_message)
        ids, jobs = [q.item for q in items], {q.job for q in items}
        if self.ledger.statements_commit:
            transitions.mark_queued(session, ids, jobs=jobs)
        else:
            with self.ledger.session() as writing:
                transitions.mark_queued(writing, ids, jobs=jobs)
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
