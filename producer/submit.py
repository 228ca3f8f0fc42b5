"""Submit a catalogue: the one submission path for every door (CLI, Python API, intake queue, HTTP).

`submit_request(settings, ledger, SubmitRequest(...))` validates and writes; the dry run
(`producer.planning.preview_request`) runs the same reading and skip lookup and writes nothing. Rows stream from
the reader in batches, so a million-row file is never held whole:

1. read and validate (`producer.catalogue`): a problem anywhere raises CatalogueError at the end of the stream;
2. seeds and content hashes (`producer.planning`); identical work already succeeded or under way is skipped, found
   by one query per batch *before* the prompt filter, which then runs on fresh prompts only (for a large
   submission in helper processes, `producer.screening`, while this process writes the batch before);
3. bulk insert (`transitions.add_items`) and, for a named catalogue, its entries (`producer.catalogue_runs`), all
   in ONE transaction with the job: the CatalogueError of a bad last row rolls back everything, and so does the
   retire guard's RetireRefused (a run that would retire too much of the catalogue, checked before the commit);
4. commit. The items stay `pending`: the ledger holds the backlog, and the scheduler (contract/scheduling.py)
   dispatches it a few chunks at a time, by fair share across tenants and by the job's priority. Nothing is
   published here, so a million-row job never sits in the broker ahead of another tenant's request.

The broker is still checked first: an installation whose broker is unreachable is reported to the submitter
(before anything is written) rather than leaving a job that no worker will ever be sent.

On SQLite the write transaction holds the database's write lock while the file streams (about 2.5 s per 100k
rows on 2 cores); workers' writes wait for it within PIXELMILL_SQLITE_BUSY_TIMEOUT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contract import events, transitions
from contract.events import Notify
from contract.identity import model_problem
from contract.ledger import Ledger, defer_checkpoint
from contract.queue import make_celery
from contract.schema import Job
from contract.settings import Settings
from contract.transitions import NewItem
from producer import catalogue_runs
from producer.catalogue import Stats, UsageError
from producer.planning import BATCH, Batch, batches, items_of, rows_of, screen_of, screened, split_batch
from producer.request import SubmitRequest, digesting, limits_for
from producer.screening import Screen, default_processes

if TYPE_CHECKING:
    from contract.promptfilter import Match

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16  # batches read ahead of their prompt filter verdicts (while the helper processes start)
WRITES_AHEAD = 2  # checked batches queued for the writer thread
WARM_BYTES = 1 << 20  # a catalogue file this big (some 20,000 rows) starts the filter helpers at once

# What a submission reports (`Submission.as_dict`: the CLI's --json, the API), in this order.
SUBMISSION_KEYS = ("job", "name", "rows", "items", "skipped", "blocked", "messages", "existing", "catalogue", "changes")


@dataclass
class Submission:
    job: int
    name: str
    rows: int
    items: int  # new work queued
    skipped: int  # already succeeded or already in progress elsewhere
    messages: int  # always 0 since the scheduler dispatches (issue 23); kept in the answer's keys for its readers
    blocked: int = 0  # refused by the prompt filter (in the ledger as `blocked`, never queued)
    existing: bool = False  # the request_id was seen before: this is that job, nothing new was written
    catalogue: str | None = None
    changes: dict[str, int] = field(default_factory=dict)  # catalogue runs: new, changed, unchanged, retired
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SUBMISSION_KEYS}


def _large(request: SubmitRequest) -> bool:
    """A file of WARM_BYTES or more: worth starting the prompt filter helpers before the first batch."""
    if request.source is None or str(request.source) == "-":
        return False
    try:
        return Path(request.source).stat().st_size >= WARM_BYTES
    except OSError:
        return False


@dataclass
class _InFlight:
    """A batch whose fresh prompts are being checked (by a helper process, or already here)."""

    split: Batch
    prompts: list[str]
    verdicts: Future[list[Match | None]] | None


def _ready(batch: _InFlight) -> bool:
    return batch.verdicts is None or batch.verdicts.done()


class _Window:
    """Content hashes of this run's fresh items that the skip lookup's query may not see yet: planned in a batch
    still in flight (id 0), or written recently (their ids, for catalogue entries reusing them). Bounded: a
    batch's hashes leave once every batch planned before it was written has been written too."""

    def __init__(self, keep: int) -> None:
        self.ids: dict[str, int] = {}
        self._written: deque[list[str]] = deque()
        self._keep = keep

    def planned(self, items: Iterable[NewItem]) -> None:
        self.ids.update((item.content_hash, 0) for item in items)

    def written(self, items: Sequence[NewItem], ids: Sequence[int]) -> None:
        hashes = [item.content_hash for item in items]
        self.ids.update(zip(hashes, ids, strict=True))
        self._written.append(hashes)
        while len(self._written) > self._keep:
            for digest in self._written.popleft():
                self.ids.pop(digest, None)


class _Writing:
    """The write stage of one submission, in three overlapping steps per batch of BATCH items:

    1. `plan` (this thread): the skip lookup and the window of batches planned before it; fresh prompts go to
       the prompt filter (`Screen`: helper processes for a large submission);
    2. `_hand_over` (this thread): a batch whose verdicts are in goes to the writer thread; this thread waits
       only when the helpers are MAX_IN_FLIGHT batches behind (while they start, it reads ahead instead);
    3. `_write` (the writer thread): insert the checked batch, then its catalogue entries. SQLite runs the
       insert without the GIL, so this thread reads and hashes the next rows meanwhile.

    The session is used by this thread (lookups) and the writer (inserts) in turn, never at once (`_db`). Leaving
    the `with` block waits for every write; on an error, for the one running, and drops the rest: the
    caller's session then rolls back with nothing still writing."""

    def __init__(
        self, session: Session, tenant_id: int, job_id: int, catalogue: str | None, screen: Screen | None
    ) -> None:
        self.session, self.tenant_id, self.job_id = session, tenant_id, job_id
        self.catalogue, self.screen = catalogue, screen
        self.window = _Window(keep=MAX_IN_FLIGHT + 2)
        self.inserted = self.skipped = self.blocked = 0
        self.changes = {
            catalogue_runs.NEW: 0,
            catalogue_runs.CHANGED: 0,
            catalogue_runs.UNCHANGED: 0,
            catalogue_runs.RETIRED: 0,
        }
        self._db = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="submit-writer")
        self._in_flight: deque[_InFlight] = deque()
        self._writes: deque[Future[None]] = deque()

    def __enter__(self) -> _Writing:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                while self._in_flight:
                    self._hand_over(self._in_flight.popleft())
                while self._writes:
                    self._writes.popleft().result()
        finally:
            self._writer.shutdown(wait=True, cancel_futures=True)

    def plan(self, batch: list[NewItem]) -> None:
        with self._db:
            split = split_batch(self.session, self.tenant_id, batch, self.window.ids, ids=self.catalogue is not None)
        self.window.planned(split.fresh)
        screen = self.screen
        prompts = [item.prompt for item in split.fresh] if screen is not None else []
        self._in_flight.append(_InFlight(split, prompts, screen.check(prompts) if screen is not None else None))
        while self._in_flight and (len(self._in_flight) > MAX_IN_FLIGHT or _ready(self._in_flight[0])):
            self._hand_over(self._in_flight.popleft())

    def _hand_over(self, batch: _InFlight) -> None:
        fresh = batch.split.fresh
        if batch.verdicts is not None and self.screen is not None:
            fresh = screened(fresh, self.screen.verdicts(batch.verdicts, batch.prompts))
        self._writes.append(self._writer.submit(self._write, batch.split, fresh))
        while self._writes and (self._writes[0].done() or len(self._writes) > WRITES_AHEAD):
            self._writes.popleft().result()  # a failed write raises here

    def _write(self, split: Batch, fresh: list[NewItem]) -> None:
        with self._db:
            ids = transitions.add_items(self.session, self.job_id, fresh)
        self.window.written(fresh, ids)
        self.inserted += len(ids)
        self.blocked += sum(1 for item in fresh if item.blocked)
        self.skipped += len(split.reused)
        if self.catalogue is not None:
            listed = [
                catalogue_runs.Listed(i.key, i.variant, i.content_hash, item_id, True)
                for i, item_id in zip(fresh, ids, strict=True)
            ]
            listed += [
                catalogue_runs.Listed(i.key, i.variant, i.content_hash, reuse or self.window.ids[i.content_hash], False)
                for i, reuse in split.reused
            ]
            with self._db:
                recorded = catalogue_runs.record_run(self.session, self.tenant_id, self.catalogue, self.job_id, listed)
                for change, n in recorded.items():
                    self.changes[change] += n


# --- the entry points -------------------------------------------------------------------------------------


REQUEST_ID_REUSED = "request_id reused with a different request"


class RequestIdReused(UsageError):
    """A `request_id` the tenant used before, sent with a different request (`RequestDigest`): refused, nothing
    written, and the first request's job and events stay its own. The HTTP API answers 409; the intake
    `job.rejected` (a UsageError, as every door reports one)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"{REQUEST_ID_REUSED} (request_id {request_id[:80]!r}); use a new request_id")


def existing_job(session: Session, tenant_id: int, request_id: str) -> Job | None:
    return session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.request_id == request_id)).one_or_none()


def _existing(ledger: Ledger, request: SubmitRequest) -> Submission | None:
    """The job the tenant's earlier request with this `request_id` made, if the request is the same one (its
    digest); RequestIdReused if it is not. A job stored without a digest (before migration 0011) matches."""
    assert request.request_id is not None
    with ledger.session(readonly=True) as session:
        job = existing_job(session, request.tenant_id, request.request_id)
        if job is None:
            return None
        if job.request_digest is not None and request.digest is not None:
            if request.digest.of_rows(request.rows) != job.request_digest:
                raise RequestIdReused(request.request_id)
        counts = job.counts
        return Submission(
            job=job.id,
            name=job.name,
            rows=int(counts.get("rows", 0)),
            items=int(counts.get("items", 0)) - int(counts.get("blocked", 0)),
            skipped=int(counts.get("skipped", 0)),
            blocked=int(counts.get("blocked", 0)),
            messages=0,
            existing=True,
            catalogue=job.catalogue,
            changes=counts.get("changes", {}),
        )


def _broker(settings: Settings, screen: Screen | None) -> Any:
    """The Celery app, its broker reached: fail now, before writing, if it is unreachable (closing the filter
    helpers already started)."""
    try:
        app = make_celery(settings)
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
    except BaseException:
        if screen is not None:
            screen.close()
        raise
    return app


def _job_name(request: SubmitRequest) -> str:
    """The request's name, else the file's (or the catalogue's, "rows", "stdin"), with the time."""
    return (
        request.name
        or (
            f"{Path(request.source).name.split('.')[0] or 'stdin'}"
            if request.source is not None and str(request.source) != "-"
            else request.catalogue or ("rows" if request.rows is not None else "stdin")
        )
        + f"-{datetime.now():%Y%m%d-%H%M%S}"
    )


def _retire(settings: Settings, session: Session, request: SubmitRequest, job_id: int, current: int) -> int:
    """Retire the catalogue's entries this run did not list, unless that is more than the retire guard allows:
    then RetireRefused, before the commit, so the job, its items and entries roll back."""
    assert request.catalogue is not None
    retired, first = catalogue_runs.pending_retire(session, request.tenant_id, request.catalogue, job_id)
    guard = catalogue_runs.retire_guard(settings, request.max_retire, request.allow_retire)
    refused = guard.refusal(request.catalogue, retired, current, first)
    if refused is not None:
        raise refused
    return catalogue_runs.retire_absent(session, request.tenant_id, request.catalogue, job_id)


def submit_request(settings: Settings, ledger: Ledger, request: SubmitRequest) -> Submission:
    """Validate → write (one transaction; the items wait `pending` for the scheduler). Raises CatalogueError
    (nothing written), UsageError, or
    kombu's OperationalError when the broker is unreachable (checked before anything is written)."""
    if request.request_id is not None and (found := _existing(ledger, request)) is not None:
        return found
    digest = request.digest.running() if request.request_id is not None and request.digest is not None else None
    asked = request
    if digest is not None and request.rows is not None:  # digested as they are read: one pass over the rows
        request = replace(request, rows=digesting(request.rows, digest))
    problem = model_problem(request.model, hub=False)  # resolving a hub id is the worker's (it may have the cache)
    if problem is not None:  # the same refusal for every door: a job no worker could run is never written
        raise UsageError(problem)
    processes = settings.submit_processes if settings.submit_processes is not None else default_processes()
    screen = screen_of(request, processes)
    if screen is not None and _large(request):
        screen.warm()  # their start-up overlaps the broker check and the first batches
    _broker(settings, screen)  # reachable, or refused before anything is written
    started = time.perf_counter()
    limits = request.limits or limits_for(settings)
    stats = Stats()
    name = _job_name(request)
    try:
        with ledger.session() as session:
            job = Job(
                name=name,
                model=request.model,
                params=request.job_params(),
                counts={},
                catalogue=request.catalogue,
                request_id=request.request_id,
                tenant_id=request.tenant_id,
                priority=request.priority,
            )
            session.add(job)
            session.flush()  # a concurrent twin with the same request_id fails here (unique constraint)
            catalogue = request.catalogue
            current = catalogue_runs.current_entries(session, request.tenant_id, catalogue) if catalogue else 0
            with _Writing(session, request.tenant_id, job.id, request.catalogue, screen) as writing:
                for batch in batches(
                    items_of(rows_of(request, limits, stats), request.seed, request.model, request.lora), BATCH
                ):
                    writing.plan(batch)
            changes = writing.changes
            if request.catalogue is not None:
                changes[catalogue_runs.RETIRED] = _retire(settings, session, request, job.id, current)
            job.counts = {
                "rows": stats.rows,
                "items": writing.inserted,
                "skipped": writing.skipped,
                "blocked": writing.blocked,
                **({"changes": changes} if request.catalogue is not None else {}),
            }
            job.request_digest = digest.hexdigest() if digest is not None else None
            events.job_accepted(session, job, request.notify or Notify())  # the outbox, same transaction
            defer_checkpoint(session)  # the next writer (the scheduler's first mark) check-points instead
            job_id = job.id
    except IntegrityError:
        if request.request_id is not None and (found := _existing(ledger, asked)) is not None:
            return found  # lost the race to a twin request: its job is the answer
        raise
    finally:
        if screen is not None:
            screen.close()
    inserted, skipped, blocked = writing.inserted, writing.skipped, writing.blocked
    log.info(
        "submitted",
        extra={
            "job": job_id,
            "items": inserted - blocked,
            "skipped": skipped,
            "blocked": blocked,
            "priority": request.priority,
            "write_s": round(time.perf_counter() - started, 3),  # read, check, insert and commit
        },
    )
    return Submission(
        job=job_id,
        name=name,
        rows=stats.rows,
        items=inserted - blocked,
        skipped=skipped,
        messages=0,
        blocked=blocked,
        catalogue=request.catalogue,
        changes=changes if request.catalogue is not None else {},
        warnings=stats.warnings(limits),
    )
