"""The ledger of record: jobs, items and images. The broker only delivers; these rows say what is true."""

from __future__ import annotations

import enum
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    T = TypeVar("T", bound=DataclassInstance)

# Named constraints so Alembic (and SQLite batch mode) can address them on every dialect.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER primary keys; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every dialect (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use contract.schema.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class State(enum.StrEnum):
    pending = "pending"  # in the ledger, not yet handed to the broker
    queued = "queued"  # a message carrying it was published
    running = "running"  # claimed by a worker until lease_expires
    succeeded = "succeeded"
    blocked = "blocked"  # refused by a content filter; never retried
    failed = "failed"  # gave up after max_attempts
    cancelled = "cancelled"  # `pixelmill cancel`: never (or no longer) generated; a late finish records nothing

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({State.succeeded, State.blocked, State.failed, State.cancelled})
ACTIVE = frozenset({State.pending, State.queued, State.running})


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


def detached(cls: type[T], row: Base, **others: Any) -> T:
    """The dataclass `cls` holding `row`'s columns of the same names as its fields, and `others` for the rest: a
    value that outlives the row's session. A field that is neither raises AttributeError."""
    copied = {f.name: getattr(row, f.name) for f in fields(cls) if f.name not in others}
    return cls(**copied, **others)


class Tenant(Base):
    """Who owns a job (contract/tenants.py): every door learns its caller's tenant before it reads a body, and every
    read, cancel, event and idempotency key is scoped to it. `reply_prefix`, `source_roots` and `webhook_hosts`
    bound what a request of this tenant may point at (an empty `webhook_hosts`: any public host)."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column()
    reply_prefix: Mapped[str] = mapped_column(String(200))
    source_roots: Mapped[list[str]] = mapped_column(default=list)
    webhook_hosts: Mapped[list[str]] = mapped_column(default=list)
    # Fair share (contract/fairshare.py, migration 0013): the tenant's share of each model's GPUs against the
    # other tenants with a backlog there; the most items it may have queued or running at once (None: no
    # limit); paused: nothing of its is dispatched (what is already in the broker still runs).
    weight: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class TenantToken(Base):
    """A tenant's API token, stored only as its SHA-256 (tokens are 256-bit random, so a plain hash suffices)."""

    __tablename__ = "tenant_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "request_id"),
        # The scheduler's candidates: the jobs with a backlog, whatever the number of finished jobs (migration 0014).
        Index("ix_jobs_backlog", "id", postgresql_where=text("pending > 0"), sqlite_where=text("pending > 0")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    model: Mapped[str] = mapped_column(String(1000))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # template, defaults, source file, seed
    # Counted at submission; live per-state counts come from items.
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The named catalogue this job is a run of (`submit --catalogue`); None: a one-off job.
    catalogue: Mapped[str | None] = mapped_column(String(200), index=True)
    # The owner: every read and change of this job is scoped to it (contract/tenants.py).
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # The submitter's idempotency key, per tenant: a second submission with it and the same request
    # (`request_digest`) returns this job and writes nothing; with a different request it is refused.
    request_id: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # Within its tenant, the scheduler dispatches interactive before normal before bulk (contract/fairshare.py);
    # a paused job keeps its pending items in the ledger until resumed.
    priority: Mapped[str] = mapped_column(String(16), default="normal", server_default="normal")
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # How many of its items are `pending`: kept by every transition to or from pending, in its transaction
    # (contract/transitions.py `_backlog`), so the backlog is a sum over jobs, not a count over items.
    pending: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    items: Mapped[list[Item]] = relationship(back_populates="job", passive_deletes=True)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "item_key", "variant"),
        # Also the scheduler's next chunk of a job: its first pending ids, in order (migration 0013 added `id`).
        Index("ix_items_job_id_state_id", "job_id", "state", "id"),
        # The submit's skip lookup (state read from the row: with state here, every state change rewrote
        # pages all over this index; migration 0009).
        Index("ix_items_content_hash", "content_hash"),
        # Also the reconciler's lookup of running items (their leases are read in Python).
        Index("ix_items_state_queued_at", "state", "queued_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    item_key: Mapped[str] = mapped_column(String(200))
    variant: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(Text)
    negative: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # width, height, steps, guidance (mode, strength)
    # The photo (and mask) a background/restyle item is made from: paths as checked at submit, and their sha256.
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[State] = mapped_column(
        Enum(State, name="item_state", native_enum=False, length=16, validate_strings=True), default=State.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    # Why an item is `blocked`: {"stage": "prompt", "category": ..., "term": ...}.
    block_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Infrastructure failures back off (contract/faults.py): not published again before `not_before`; the
    # first such failure of the current streak is `infra_since` (its attempts are given back until the budget).
    not_before: Mapped[datetime | None]
    infra_since: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="items")
    image: Mapped[Image | None] = relationship(back_populates="item", passive_deletes=True)
    candidates: Mapped[list[Candidate]] = relationship(back_populates="item", passive_deletes=True)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), unique=True)
    storage_key: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))
    engine_id: Mapped[str] = mapped_column(String(200))
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # seconds per stage, batch size
    # The kept candidate's quality scores ({"clip_score": 31.2, "sharpness": 412.0, ...}) and the image checker's
    # per-concept scores and decision (None: the job ran without an image checker).
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    safety: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    candidate: Mapped[int] = mapped_column(Integer, default=0)  # which of the item's candidates was kept
    # "public" (under jobs/) or "quarantine" (a blocked image under the quarantine prefix, awaiting review).
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    approved_by: Mapped[str | None] = mapped_column(String(200))  # who published a blocked image, and when
    approved_at: Mapped[datetime | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # The marks the stored bytes carry (worker/provenance.py `Provenance.as_json()`): {"xmp": true, "c2pa": true,
    # "signer": "CN=...", "cert_sha256": ..., "alg": "es256", "digital_source_type": ...}; None: stored before 0004.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    item: Mapped[Item] = relationship(back_populates="image")


class ImageScore(Base):
    """One numeric quality score of a succeeded item's kept image (a copy of `images.scores`), written with the
    transition to succeeded (`transitions.finish`, `approve`). Status percentiles of a 100k-image job read
    the (job, name, value) index instead of parsing every image's JSON (producer/status.py)."""

    __tablename__ = "image_scores"
    __table_args__ = (Index("ix_image_scores_job_id_name_value", "job_id", "name", "value"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    value: Mapped[float] = mapped_column(Float)


class Candidate(Base):
    """Every image generated for an item (its seed, then re-rolls or best-of-n) and how it was judged."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("item_id", "candidate"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    candidate: Mapped[int] = mapped_column(Integer)  # 0: the item's own seed; n: seed + n
    seed: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))  # kept | rejected | blocked
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    safety: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    engine_id: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(default=utcnow)

    item: Mapped[Item] = relationship(back_populates="candidates")


class CatalogueEntry(Base):
    """One (key, variant) of a named catalogue and the item whose image serves it now (producer/catalogue_runs.py).

    `change` says what the latest run (`job_id`) did to it: new | changed | unchanged | retired. Retired entries
    keep their item (and image): nothing is ever deleted. Failed and blocked are read from the item's state."""

    __tablename__ = "catalogue_entries"
    __table_args__ = (
        UniqueConstraint("tenant_id", "catalogue", "item_key", "variant"),
        Index("ix_catalogue_entries_tenant_id_catalogue_job_id", "tenant_id", "catalogue", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))  # catalogue names are per tenant
    catalogue: Mapped[str] = mapped_column(String(200))
    item_key: Mapped[str] = mapped_column(String(200))
    variant: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    change: Mapped[str] = mapped_column(String(16))
    updated: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """The transactional outbox: one row per event, written in the transaction that causes it (contract/events.py).

    `uid` is the event's public id, derived from what it is about (job or item, and type), so a redelivered
    request or a second finish finds the same row instead of writing another one."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    # Whose event: the job's owner, or the tenant whose refused request it answers (`job.rejected` has no job).
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    request_id: Mapped[str | None] = mapped_column(String(200), index=True)
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the event exactly as delivered
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One event to one destination (a reply queue or a webhook URL) and how far its delivery got:
    pending → delivered, or dead after PIXELMILL_WEBHOOK_RETRY_PERIOD (contract/outbox.py)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "kind", "target"),
        Index("ix_deliveries_state_next_at", "state", "next_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # queue | webhook
    target: Mapped[str] = mapped_column(String(1000))  # queue name or URL
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]  # a dispatcher is sending it; another waits until then
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A worker's heartbeat per queue it serves: `state` says whether its model loaded (`loading`, `ready`,
    `failed` with `error`); the parent's reconciler tick refreshes `last_seen`. `status` uses it to say that no
    worker serves a job's model, instead of showing it "starting" forever."""

    __tablename__ = "workers"

    node: Mapped[str] = mapped_column(String(200), primary_key=True)
    queue: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16))  # loading | ready | failed
    error: Mapped[str | None] = mapped_column(Text)
    started: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class SchedulerLease(Base):
    """Who runs the scheduler (contract/scheduling.py): one row per role, held by `holder` until `expires`;
    any process may take it once it has expired, so a killed holder is replaced within one lease."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires: Mapped[datetime] = mapped_column()


class OutcomeTally(Base):
    """Item outcomes made outside a worker's recording of its chunk (a cancel, a claim's give-up, the reconciler's
    requeue or give-up), written by that transition in its own transaction. Such a transition may run in a short
    command nobody scrapes, so the scheduler's leader takes these rows (deleting them) into `pixelmill_items_total`:
    each is counted once, by a long-running process (contract/metrics.py). A row lives about one scheduler pass."""

    __tablename__ = "outcome_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(16))  # cancelled | failed | retried
    n: Mapped[int] = mapped_column(Integer)


class Meta(Base):
    """Facts about the installation, e.g. `data_dir`: the absolute data directory of the last submit."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(default=utcnow)


class RunStats(Base):
    """What one finished job (a catalogue's nightly run) looked like, cached for `pixelmill drift`."""

    __tablename__ = "run_stats"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    catalogue: Mapped[str | None] = mapped_column(String(200), index=True)
    computed: Mapped[datetime] = mapped_column(default=utcnow)
    items: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    blocked: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    cancelled: Mapped[int] = mapped_column(Integer)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    # score -> {"n", "median", "p10", "p90"} over the run's succeeded images
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
