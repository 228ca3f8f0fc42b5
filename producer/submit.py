"""Submit a catalogue: the one submission path for every door (CLI, Python API, intake queue, HTTP).

`submit_request(settings, ledger, SubmitRequest(...))` validates, writes, then publishes; `preview_request` runs
the same reading and skip lookup and writes nothing. Rows stream from the reader in batches, so a million-row
file is never held whole:

1. read and validate (`producer.catalogue`): a problem anywhere raises CatalogueError at the end of the stream;
2. seeds and content hashes; identical work already succeeded or under way is skipped, found by one IN query
   per batch *before* the prompt filter, which then runs on fresh prompts only;
3. bulk insert (`transitions.add_items`) and, for a named catalogue, its entries (`producer.catalogues`), all in
   ONE transaction with the job: the CatalogueError of a bad last row rolls back everything;
4. commit, then publish pages of pending items in messages of PIXELMILL_ITEMS_PER_MESSAGE over one producer
   connection, each page marked queued in one UPDATE (`transitions.mark_queued_range`).

Order matters for safety. The broker is checked first, so a dead broker leaves nothing behind. Items are
committed as `pending` before any message exists; a producer that dies while publishing leaves pending
items, which the reconciler publishes later. Nothing is lost either way.

On SQLite the write transaction holds the database's write lock while the file streams (about 2 s per 100k
rows); workers' writes wait for it within PIXELMILL_SQLITE_BUSY_TIMEOUT.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import String, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pixelmill import events, promptfilter, transitions
from pixelmill.checks import Checks
from pixelmill.events import Notify
from pixelmill.identity import content_hash, derive_seed, model_problem, offset_seed
from pixelmill.ledger import Ledger
from pixelmill.params import GenerationParams
from pixelmill.promptfilter import PromptFilter
from pixelmill.queue import QueuedItem, make_celery, publish_items
from pixelmill.schema import ACTIVE, Item, Job, State
from pixelmill.settings import Settings
from pixelmill.transitions import NewItem
from producer import catalogues
from producer.catalogue import Defaults, Limits, Row, Stats, UsageError, check_seed, iter_catalogue, iter_rows

log = logging.getLogger(__name__)

BATCH = 2000  # items per skip lookup, insert and catalogue upsert: one IN clause of hashes
PAGE = 20_000  # pending items read back, published and marked queued per step
REQUEST_ID_MAX = 200


@dataclass(frozen=True)
class SubmitRequest:
    """Everything one submission needs, whichever door it came through. Exactly one of `source` (a path, a
    `.gz` path or "-" for stdin) and `rows` (mappings, as the Python API gives them). `model` is resolved
    (`identity.resolve_model`). `request_id` is the idempotency key: a second request with it returns the
    first job and writes nothing."""

    defaults: Defaults
    model: str
    source: Path | str | None = None
    rows: Iterable[Mapping[str, object]] | None = None
    seed: int = 0
    name: str | None = None
    catalogue: str | None = None
    request_id: str | None = None
    checks: Checks | None = None
    blocklists: tuple[str, ...] = ()  # prompt filter sources; empty: no prompt filter
    limits: Limits | None = None  # default: `limits_for(settings)`
    notify: Notify | None = None  # where the job's events go (the intake queue and HTTP doors); None: nowhere

    def __post_init__(self) -> None:
        if (self.source is None) == (self.rows is None):
            raise UsageError("give exactly one of source (a file or '-') and rows")
        try:
            check_seed(self.seed)
            if self.catalogue is not None:
                catalogues.check_name(self.catalogue)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if self.request_id is not None and (not self.request_id.strip() or len(self.request_id) > REQUEST_ID_MAX):
            raise UsageError(f"request_id must be 1 to {REQUEST_ID_MAX} characters, got {self.request_id!r:.80}")

    @property
    def source_name(self) -> str:
        if self.source is None:
            return "<rows>"
        return "-" if str(self.source) == "-" else str(Path(self.source).resolve())

    def job_params(self) -> dict[str, Any]:
        """What the job records about how it was asked for (per-row overrides live on the items)."""
        return {
            "source": self.source_name,
            **asdict(self.defaults),
            "seed": self.seed,
            "prompt_filter": list(self.blocklists),
            "checks": self.checks.as_json() if self.checks else None,
            **({"notify": self.notify.as_json()} if self.notify else {}),
        }


@dataclass
class Submission:
    job: int
    name: str
    rows: int
    items: int  # new work queued
    skipped: int  # already succeeded or already in progress elsewhere
    messages: int
    blocked: int = 0  # refused by the prompt filter (in the ledger as `blocked`, never queued)
    existing: bool = False  # the request_id was seen before: this is that job, nothing new was written
    catalogue: str | None = None
    changes: dict[str, int] = field(default_factory=dict)  # catalogue runs: new, changed, unchanged, retired
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "name": self.name,
            "rows": self.rows,
            "items": self.items,
            "skipped": self.skipped,
            "blocked": self.blocked,
            "messages": self.messages,
            "existing": self.existing,
            "catalogue": self.catalogue,
            "changes": self.changes,
        }


@dataclass
class Preview:
    """A dry run: what submit would do, from the same reading and skip lookup; nothing written."""

    rows: int = 0
    items: int = 0  # to generate
    skipped: int = 0
    blocked: int = 0
    first: list[NewItem] = field(default_factory=list)  # the first five items planned
    first_blocked: list[NewItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def limits_for(settings: Settings) -> Limits:
    """The reader's caps from PIXELMILL_CATALOGUE_* / PIXELMILL_PROMPT_* / PIXELMILL_JOB_MAX_ITEMS, for this store."""
    return Limits.for_storage(
        settings.resolved_storage_url,
        cell_bytes=settings.catalogue_cell_bytes,
        row_bytes=settings.catalogue_row_bytes,
        columns=settings.catalogue_columns,
        prompt_bytes=settings.prompt_bytes,
        items=settings.job_max_items,
        problems=settings.catalogue_max_problems,
        tokens=settings.prompt_tokens,
    )


# --- planning ---------------------------------------------------------------------------------------------


def _rows(request: SubmitRequest, limits: Limits, stats: Stats) -> Iterator[Row]:
    if request.rows is not None:
        return iter_rows(request.rows, request.defaults, limits, stats=stats)
    assert request.source is not None
    return iter_catalogue(request.source, request.defaults, limits, stats=stats)


def _items(rows: Iterable[Row], seed: int, model: str) -> Iterator[NewItem]:
    """Each row's variants with their seeds and content hashes (prompt filter not applied yet)."""
    params_of: dict[tuple[int, int, int, float], GenerationParams] = {}
    for row in rows:
        shape = (row.width, row.height, row.steps, row.guidance)
        params = params_of.get(shape)
        if params is None:
            params = params_of[shape] = GenerationParams(
                width=row.width, height=row.height, steps=row.steps, guidance=row.guidance
            )
        for variant in range(row.images_per_item):
            item_seed = offset_seed(row.seed, variant) if row.seed is not None else derive_seed(seed, row.key, variant)
            yield NewItem(
                key=row.key,
                variant=variant,
                prompt=row.prompt,
                negative=row.negative,
                params=params,
                seed=item_seed,
                content_hash=content_hash(
                    prompt=row.prompt, negative=row.negative, params=params, seed=item_seed, model=model
                ),
            )


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def known_work(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    """content hash -> the item already doing that work: succeeded first, else the newest active one."""
    found: dict[str, tuple[bool, int]] = {}
    for item_id, digest, state in session.execute(
        select(Item.id, Item.content_hash, Item.state).where(
            Item.content_hash.in_(list(set(hashes))), Item.state.in_([State.succeeded, *ACTIVE])
        )
    ):
        rank = (state == State.succeeded, item_id)
        if digest not in found or rank > found[digest]:
            found[digest] = rank
    return {digest: rank[1] for digest, rank in found.items()}


@dataclass
class _Batch:
    fresh: list[NewItem]  # to insert (blocked ones included)
    reused: list[tuple[NewItem, int]]  # skipped, with the item already doing the work (0: earlier in this batch)


def _split(
    session: Session | None, batch: list[NewItem], prompt_filter: PromptFilter | None, seen: dict[str, int] | None
) -> _Batch:
    """Skip lookup first, then the prompt filter on fresh prompts only. Identical work twice in one batch is
    planned once (the second key reuses the first's item, id filled in after the insert). `seen` carries the
    hashes of earlier batches when nothing is written (a dry run); a submit finds them in its own transaction."""
    known = known_work(session, [i.content_hash for i in batch]) if session is not None else {}
    fresh: list[NewItem] = []
    reused: list[tuple[NewItem, int]] = []
    planned: set[str] = set()
    for item in batch:
        digest = item.content_hash
        reuse = known.get(digest) or (seen.get(digest) if seen is not None else None)
        if reuse is not None:
            reused.append((item, reuse))
        elif digest in planned:
            reused.append((item, 0))
        else:
            planned.add(digest)
            found = prompt_filter.check(item.prompt) if prompt_filter else None
            fresh.append(replace(item, blocked=found.as_dict()) if found else item)
    if seen is not None:
        seen.update((i.content_hash, -1) for i in fresh)
    return _Batch(fresh=fresh, reused=reused)


def _prompt_filter(request: SubmitRequest) -> PromptFilter | None:
    return promptfilter.load(tuple(request.blocklists)) if request.blocklists else None


# --- the entry points -------------------------------------------------------------------------------------


def preview_request(settings: Settings, ledger: Ledger | None, request: SubmitRequest) -> Preview:
    """Validate the whole catalogue and count what submit would do (against `ledger` if given); writes nothing.
    Raises CatalogueError / UsageError like `submit_request`."""
    limits = request.limits or limits_for(settings)
    stats = Stats()
    prompt_filter = _prompt_filter(request)
    preview = Preview()
    seen: dict[str, int] = {}
    reader = ledger.session(readonly=True) if ledger is not None else None
    session = reader.__enter__() if reader is not None else None
    try:
        for batch in _batches(_items(_rows(request, limits, stats), request.seed, request.model), BATCH):
            split = _split(session, batch, prompt_filter, seen)
            preview.skipped += len(split.reused)
            for item in split.fresh:
                if item.blocked:
                    preview.blocked += 1
                    if len(preview.first_blocked) < 5:
                        preview.first_blocked.append(item)
                else:
                    preview.items += 1
            preview.first += batch[: 5 - len(preview.first)]
    finally:
        if reader is not None:
            reader.__exit__(None, None, None)
    preview.rows = stats.rows
    preview.warnings = stats.warnings(limits)
    return preview


def existing_job(session: Session, request_id: str) -> Job | None:
    return session.scalars(select(Job).where(Job.request_id == request_id)).one_or_none()


def _existing(ledger: Ledger, request_id: str) -> Submission | None:
    with ledger.session(readonly=True) as session:
        job = existing_job(session, request_id)
        if job is None:
            return None
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


def submit_request(settings: Settings, ledger: Ledger, request: SubmitRequest) -> Submission:
    """Validate → write (one transaction) → publish. Raises CatalogueError (nothing written), UsageError, or
    kombu's OperationalError when the broker is unreachable (checked before anything is written)."""
    if request.request_id is not None and (found := _existing(ledger, request.request_id)) is not None:
        return found
    problem = model_problem(request.model, hub=False)  # resolving a hub id is the worker's (it may have the cache)
    if problem is not None:  # the same refusal for every door: a job no worker could run is never written
        raise UsageError(problem)
    app = make_celery(settings)
    with app.connection_for_write() as conn:  # fail now, before writing, if the broker is unreachable
        conn.ensure_connection(max_retries=3)
    limits = request.limits or limits_for(settings)
    stats = Stats()
    prompt_filter = _prompt_filter(request)
    name = (
        request.name
        or (
            f"{Path(request.source).name.split('.')[0] or 'stdin'}"
            if request.source is not None and str(request.source) != "-"
            else request.catalogue or "stdin"
        )
        + f"-{datetime.now():%Y%m%d-%H%M%S}"
    )
    inserted = skipped = blocked = 0
    changes = {catalogues.NEW: 0, catalogues.CHANGED: 0, catalogues.UNCHANGED: 0, catalogues.RETIRED: 0}
    try:
        with ledger.session() as session:
            job = Job(
                name=name,
                model=request.model,
                params=request.job_params(),
                counts={},
                catalogue=request.catalogue,
                request_id=request.request_id,
            )
            session.add(job)
            session.flush()  # a concurrent twin with the same request_id fails here (unique constraint)
            job_id = job.id
            for batch in _batches(_items(_rows(request, limits, stats), request.seed, request.model), BATCH):
                split = _split(session, batch, prompt_filter, None)
                ids = transitions.add_items(session, job_id, split.fresh)
                inserted += len(ids)
                blocked += sum(1 for item in split.fresh if item.blocked)
                skipped += len(split.reused)
                if request.catalogue is not None:
                    mine = {item.content_hash: item_id for item, item_id in zip(split.fresh, ids, strict=True)}
                    listed = [
                        catalogues.Listed(i.key, i.variant, i.content_hash, item_id, True)
                        for i, item_id in zip(split.fresh, ids, strict=True)
                    ]
                    listed += [
                        catalogues.Listed(i.key, i.variant, i.content_hash, reuse or mine[i.content_hash], False)
                        for i, reuse in split.reused
                    ]
                    for change, n in catalogues.record_run(session, request.catalogue, job_id, listed).items():
                        changes[change] += n
            if request.catalogue is not None:
                changes[catalogues.RETIRED] = catalogues.retire_absent(session, request.catalogue, job_id)
            job.counts = {
                "rows": stats.rows,
                "items": inserted,
                "skipped": skipped,
                "blocked": blocked,
                **({"changes": changes} if request.catalogue is not None else {}),
            }
            events.job_accepted(session, job, request.notify or Notify())  # the outbox, same transaction
    except IntegrityError:
        if request.request_id is not None and (found := _existing(ledger, request.request_id)) is not None:
            return found  # lost the race to a twin request: its job is the answer
        raise
    messages = publish_pending(settings, ledger, app, job_id, request.model)
    log.info(
        "submitted",
        extra={
            "job": job_id,
            "items": inserted - blocked,
            "skipped": skipped,
            "blocked": blocked,
            "messages": messages,
        },
    )
    return Submission(
        job=job_id,
        name=name,
        rows=stats.rows,
        items=inserted - blocked,
        skipped=skipped,
        messages=messages,
        blocked=blocked,
        catalogue=request.catalogue,
        changes=changes if request.catalogue is not None else {},
        warnings=stats.warnings(limits),
    )


def publish_pending(settings: Settings, ledger: Ledger, app: Any, job_id: int, model: str) -> int:
    """Publish the job's pending items page by page (ids ascending), marking each page queued once its messages
    are out. A crash in between leaves pending items: the reconciler publishes them."""
    messages = 0
    after = 0
    params_of: dict[str, GenerationParams] = {}
    while True:
        with ledger.session(readonly=True) as session:
            page = session.execute(
                select(Item.id, type_coerce(Item.params, String))
                .where(Item.job_id == job_id, Item.state == State.pending, Item.id > after)
                .order_by(Item.id)
                .limit(PAGE)
            ).all()
        if not page:
            return messages
        queued = []
        for item_id, raw in page:  # the JSON text on SQLite (decoded once per distinct value), a dict elsewhere
            shape = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
            params = params_of.get(shape)
            if params is None:
                params = params_of[shape] = GenerationParams.from_json(json.loads(shape))
            queued.append(QueuedItem(item=item_id, job=job_id, params=params))
        messages += len(publish_items(app, queued, model, settings.batch_size, settings.items_per_message))
        with ledger.session() as session:
            transitions.mark_queued_range(session, job_id, page[0][0], page[-1][0])
        after = page[-1][0]


# --- small in-memory planning (tests, previews of a few rows) ---------------------------------------------


@dataclass
class Plan:
    rows: int
    items: list[NewItem]


def plan(path: Path, defaults: Defaults, *, seed: int, model: str) -> Plan:
    """Every item of a (small) catalogue with seeds and hashes, held in memory: determinism checks and tests."""
    stats = Stats()
    items = list(_items(iter_catalogue(path, defaults, stats=stats), seed, model))
    return Plan(rows=stats.rows, items=items)
