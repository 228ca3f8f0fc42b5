"""The Python API for scripts: submit a catalogue file or any iterable of dicts, get a `Job`, follow it.

    from pixelmill.api import Client

    client = Client()  # PIXELMILL_* settings, as the CLI reads them; acting as PIXELMILL_TENANT (`default`)
    job = client.submit(rows=[{"sku": "MUG-1", "title": "mug"}], key="sku", template="photo of {title}")
    final = job.wait(timeout=600, progress=lambda s: print(s.succeeded, "/", s.total))
    failed = job.items(state="failed")
    job.retry()                       # failed items queued again (after fixing what failed them)
    rows = list(job.manifest())       # one ManifestRow per item: object key, sha256, scores, ...

It goes through the same submission path as every other door (producer/request.py `make_request`, then
producer/submit.py `submit_request`): the model is resolved and refused up front when no worker could load it,
the whole catalogue is validated before anything is written (`SubmitError` lists every problem, in the CLI's
`where: field 'x': message` form), and a `request_id` makes a retried call return the same job.

A client acts as one tenant (`Client(tenant="team-a")`, default PIXELMILL_TENANT): it sees, cancels and
retries only that tenant's jobs and catalogues. It runs with the ledger's credentials, on the operator's side, so
it is trusted to name its tenant; callers who are not go through the HTTP API, which knows them by their token.

A door: it imports `producer` and the contract, never the other way round (tests/test_layout.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, Unpack, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.ledger import Ledger
from contract.queue import make_celery
from contract.schema import Event, Image, Item, State
from contract.settings import Settings, get_settings
from contract.storage import open_storage
from contract.tenants import TenantError, TenantInfo, find_tenant, owned_job
from producer.catalogue import CatalogueError, UsageError
from producer.catalogue_runs import CatalogueSummary, list_catalogues
from producer.jobs import CancelResult, JobError
from producer.jobs import cancel as cancel_job
from producer.jobs import retry as retry_items
from producer.manifest import ManifestError, ManifestRow, iter_manifest
from producer.options import OptionArgs, blocklists, declared
from producer.planning import Preview, preview_request
from producer.request import Options, RequestProblems, make_request
from producer.status import JobStatus, UnknownJob, job_status, list_jobs
from producer.submit import Submission, submit_request

__all__ = [
    "CancelResult",
    "CatalogueSummary",
    "Preview",
    "Client",
    "Job",
    "ItemInfo",
    "JobStatus",
    "ManifestError",
    "ManifestRow",
    "SubmitError",
    "TenantError",
    "UnknownJob",
    "list_items",
    "retry_job",
]

SubmitError = RequestProblems  # raised before anything is written; `.problems` lists every problem
Rows = Iterable[Mapping[str, object]]  # a catalogue's rows, one dict per product
OPTION_NAMES = frozenset(d.name for d in declared())  # the keyword arguments `Client.submit` takes as options


@dataclass
class ItemInfo:
    """One item of a job, as the ledger has it now."""

    id: int
    key: str
    variant: int
    state: str
    attempts: int
    error: str | None  # the last error (failed, or retried)
    block_reason: dict[str, Any] | None
    image: str | None  # storage key of the stored image
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_items(
    session: Any, job_id: int, *, tenant_id: int, state: str | None = None, after: int = 0, limit: int = 1000
) -> list[ItemInfo]:
    """The tenant's job's items in id order, after item id `after` (paging), optionally in one state."""
    if owned_job(session, tenant_id, job_id) is None:
        raise UnknownJob(f"no job {job_id}")
    query = (
        select(Item, Image.storage_key, Image.sha256)
        .outerjoin(Image, Image.item_id == Item.id)
        .where(Item.job_id == job_id, Item.id > after)
        .order_by(Item.id)
        .limit(limit)
    )
    if state is not None:
        query = query.where(Item.state == State(state))
    return [
        ItemInfo(
            id=item.id,
            key=item.item_key,
            variant=item.variant,
            state=item.state.value,
            attempts=item.attempts,
            error=item.error,
            block_reason=item.block_reason,
            image=key,
            sha256=sha,
        )
        for item, key, sha in session.execute(query)
    ]


def retry_job(
    settings: Settings,
    ledger: Ledger,
    celery: Any,
    job_id: int,
    *,
    tenant_id: int,
    failed: bool = True,
    blocked_by: str | None = None,
) -> int:
    """`producer.jobs.retry` as `pixelmill retry` runs it: the broker checked first (kombu's OperationalError,
    nothing changed), the items committed as pending for the scheduler to dispatch. Returns how many were
    re-queued; raises UnknownJob, or ValueError for nothing to retry or a `blocked_by` other than image/prompt."""
    if blocked_by is not None and blocked_by not in ("image", "prompt"):
        raise ValueError(f"blocked_by must be image or prompt, got {blocked_by!r}")
    if not failed and blocked_by is None:
        raise ValueError("nothing to retry: failed=False without blocked_by")
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
    try:
        with ledger.session() as session:  # published after this commits (producer.jobs)
            return retry_items(
                session,
                job_id,
                tenant_id=tenant_id,
                failed=failed,
                blocked_by=blocked_by,
                blocklists=list(blocklists(settings)),
            )
    except JobError as exc:
        raise UnknownJob(str(exc)) from None


P = ParamSpec("P")
T = TypeVar("T")


def stream_manifest(
    ledger: Ledger, query: Callable[Concatenate[Session, P], Iterator[T]], *args: P.args, **kwargs: P.kwargs
) -> Iterator[T]:
    """`query(session, ...)` (such as `producer.manifest.iter_manifest`) in a read-only session held open while
    the rows are read: a manifest streams in constant memory."""
    with ledger.session(readonly=True) as session:
        yield from query(session, *args, **kwargs)


class Client:
    """A connection to one pixelmill installation (its ledger and broker, from settings), acting as `tenant`
    (default: PIXELMILL_TENANT)."""

    def __init__(self, settings: Settings | None = None, *, tenant: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.tenant_name = tenant if tenant is not None else self.settings.tenant
        self._tenant: TenantInfo | None = None
        self._ledger: Ledger | None = None
        self._celery: Any = None

    @property
    def tenant(self) -> TenantInfo:
        """The tenant this client acts as, read from the ledger on first use; TenantError if it is unknown or
        revoked (`pixelmill tenants list`)."""
        if self._tenant is None:
            with self.ledger.session(readonly=True) as session:
                found = find_tenant(session, self.tenant_name)
            if found is None:
                raise TenantError(
                    f"no tenant {self.tenant_name!r} (unknown or revoked; Client(tenant=...) or PIXELMILL_TENANT "
                    "names it, `pixelmill tenants list` shows them)"
                )
            self._tenant = found
        return self._tenant

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.settings)
        return self._ledger

    # The options are keyword arguments named as producer/options.py declares them (`Options`' fields, with
    # their defaults there); only what is not an option is spelled out here.
    @overload
    def submit(
        self,
        source: str | Path | None = None,
        *,
        rows: Rows | None = None,
        dry_run: Literal[False] = False,
        **options: Unpack[OptionArgs],
    ) -> Job: ...

    @overload
    def submit(
        self,
        source: str | Path | None = None,
        *,
        rows: Rows | None = None,
        dry_run: Literal[True],
        **options: Unpack[OptionArgs],
    ) -> Preview: ...

    def submit(
        self,
        source: str | Path | None = None,
        *,
        rows: Rows | None = None,
        dry_run: bool = False,
        **options: Unpack[OptionArgs],
    ) -> Job | Preview:
        """Validate and queue a catalogue: a file path (.csv/.jsonl, optionally .gz) or `rows`, an iterable of
        dicts (one per product). `options` are the submit options with the CLI's names and defaults (every field
        of `producer.options.Options`); `columns` is --column as a mapping ({"size": "render_size", "seed":
        None}), `row_overrides=False` is --no-row-overrides. Raises TypeError for a name that is no option,
        SubmitError (nothing written) or kombu's OperationalError (broker unreachable, nothing written). A
        catalogue run that would retire more than `max_retire` percent of the current entries is refused
        (SubmitError) unless `allow_retire`. `dry_run=True` writes nothing and returns a `Preview` (for a
        catalogue: the changes it would record, their first keys, and `refused`, the guard's refusal the real run
        would meet)."""
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            raise TypeError(f"submit() got an unexpected keyword argument {unknown[0]!r}")
        if (source is None) == (rows is None):
            raise SubmitError(["request: give exactly one of source (a catalogue file) and rows"])
        path = Path(source) if source is not None and str(source) != "-" else source
        request = make_request(
            self.settings,
            Options(**options),
            source=path,
            rows=rows,
            tenant_id=self.tenant.id,
            input_roots=self.tenant.source_roots,
        )
        try:
            if dry_run:
                return preview_request(self.settings, self.ledger, request)
            submission = submit_request(self.settings, self.ledger, request)
        except CatalogueError as exc:
            raise SubmitError([str(p) for p in exc.problems]) from None
        except UsageError as exc:
            raise SubmitError([f"request: {exc}"]) from None
        return Job(self, submission.job, submission)

    @property
    def celery(self) -> Any:
        """The Celery app that publishes re-queued items (`Job.retry`)."""
        if self._celery is None:
            self._celery = make_celery(self.settings)
        return self._celery

    def manifest(self, *, catalogue: str, urls: bool = False, expires: int | None = None) -> Iterator[ManifestRow]:
        """Stream a catalogue's manifest: one row per current entry (retired ones included, `change` says so),
        as `pixelmill manifest --catalogue`. `urls`: presigned (S3) or file URLs valid `expires` s. Raises
        ManifestError (no such catalogue) when the first row is read."""
        return stream_manifest(
            self.ledger,
            iter_manifest,
            tenant_id=self.tenant.id,
            catalogue=catalogue,
            **self._url_options(urls, expires),
        )

    def _url_options(self, urls: bool, expires: int | None) -> dict[str, Any]:
        if not urls:
            return {}
        return {
            "storage": open_storage(self.settings),
            "urls": True,
            "expires": expires or self.settings.s3_presign_expires,
        }

    def jobs(self, limit: int = 50) -> list[JobStatus]:
        """The tenant's newest `limit` jobs, newest first, as `pixelmill jobs --json` (each with its `catalogue`)."""
        tenant_id = self.tenant.id
        with self.ledger.session(readonly=True) as session:
            return list_jobs(session, limit, tenant_id=tenant_id, stale_after=self.settings.worker_stale_after)

    def backlog(self) -> list[dict[str, Any]]:
        """The tenant's pending items per model and priority (`pixelmill backlog --json`): the ledger's backlog,
        which the scheduler sends to the workers a few chunks at a time."""
        from contract.scheduling import backlog

        with self.ledger.session(readonly=True) as session:
            return [row.as_dict() for row in backlog(session, tenant_id=self.tenant.id)]

    def pause(self, job_id: int, *, paused: bool = True) -> None:
        """Pause (or, `paused=False`, resume) one of the tenant's jobs: the scheduler sends none of its pending
        items meanwhile. Raises UnknownJob."""
        from producer.jobs import JobError, pause

        try:
            with self.ledger.session() as session:
                pause(session, job_id, tenant_id=self.tenant.id, paused=paused)
        except JobError as exc:
            raise UnknownJob(str(exc)) from None

    def catalogues(self) -> list[CatalogueSummary]:
        """The tenant's named catalogues, by name: runs, current and retired entries, the last run and its changes."""
        tenant_id = self.tenant.id
        with self.ledger.session(readonly=True) as session:
            return list_catalogues(session, tenant_id)

    def job(self, job_id: int) -> Job:
        """A handle on an existing job of the tenant's; raises UnknownJob (another tenant's job is unknown)."""
        tenant_id = self.tenant.id
        with self.ledger.session(readonly=True) as session:
            if owned_job(session, tenant_id, job_id) is None:
                raise UnknownJob(f"no job {job_id}")
        return Job(self, job_id)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Job:
    """A handle on one job. Every call reads the ledger: the record of truth, never the broker."""

    def __init__(self, client: Client, job_id: int, submission: Submission | None = None) -> None:
        self.client = client
        self.id = job_id
        self.submission = submission  # what submit did (None for a handle from `Client.job`)

    def __repr__(self) -> str:
        return f"Job({self.id})"

    def status(self) -> JobStatus:
        """Counts per state, images/s, ETA, scores: the same `JobStatus` as `pixelmill status --json`."""
        tenant_id = self.client.tenant.id
        with self.client.ledger.session(readonly=True) as session:
            return job_status(session, self.id, tenant_id=tenant_id)

    def wait(
        self,
        timeout: float | None = None,
        *,
        interval: float = 1.0,
        progress: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Block until every item is succeeded, blocked or failed, and return the final status. `progress` is
        called with each status read; raises TimeoutError (with the last status) after `timeout` seconds."""
        started = time.monotonic()
        while True:
            current = self.status()
            if progress is not None:
                progress(current)
            if current.finished:
                return current
            if timeout is not None and time.monotonic() - started >= timeout:
                raise TimeoutError(
                    f"job {self.id} not finished after {timeout:g} s: {current.remaining} items "
                    f"left ({current.pending} pending, {current.queued} queued, "
                    f"{current.running} running); is a worker running for model {current.model}?"
                )
            time.sleep(interval)

    def items(self, state: str | None = None, *, limit: int = 100_000) -> list[ItemInfo]:
        """The job's items (optionally in one state: pending, queued, running, succeeded, blocked, failed)
        with their errors, block reasons and stored images."""
        found: list[ItemInfo] = []
        tenant_id = self.client.tenant.id
        with self.client.ledger.session(readonly=True) as session:
            while len(found) < limit:
                page = list_items(
                    session,
                    self.id,
                    tenant_id=tenant_id,
                    state=state,
                    after=found[-1].id if found else 0,
                    limit=min(1000, limit - len(found)),
                )
                found += page
                if len(page) < 1000:
                    break
        return found

    def events(self) -> list[dict[str, Any]]:
        """The job's events so far (job.accepted, job.finished, item events it asked for), oldest first; raises
        UnknownJob for a job that is not the tenant's."""
        tenant_id = self.client.tenant.id
        with self.client.ledger.session(readonly=True) as session:
            if owned_job(session, tenant_id, self.id) is None:
                raise UnknownJob(f"no job {self.id}")
            return list(session.scalars(select(Event.body).where(Event.job_id == self.id).order_by(Event.id)))

    def cancel(self) -> CancelResult:
        """Cancel the job (`pixelmill cancel`): its pending, queued and running items become `cancelled`
        (running ones are discarded), finished ones stay; the job is then finished (`job.finished` event)."""
        tenant_id = self.client.tenant.id
        try:
            with self.client.ledger.session() as session:
                return cancel_job(session, self.id, tenant_id=tenant_id)
        except JobError as exc:
            raise UnknownJob(str(exc)) from None

    def retry(self, failed: bool = True, blocked_by: str | None = None) -> int:
        """Queue failed items (`failed`) and/or items blocked by the `image` checker or the `prompt` filter
        (`blocked_by`) again, as `pixelmill retry`: attempts from 0, same seeds and keys. Returns how many."""
        client = self.client
        return retry_job(
            client.settings,
            client.ledger,
            client.celery,
            self.id,
            tenant_id=client.tenant.id,
            failed=failed,
            blocked_by=blocked_by,
        )

    def manifest(self, *, urls: bool = False, expires: int | None = None) -> Iterator[ManifestRow]:
        """Stream the job's manifest, one `ManifestRow` per item in id order (`pixelmill manifest --job`),
        in constant memory; `urls` fills the url column. Raises ManifestError (no such job) on the first read."""
        client = self.client
        return stream_manifest(
            client.ledger, iter_manifest, tenant_id=client.tenant.id, job=self.id, **client._url_options(urls, expires)
        )
