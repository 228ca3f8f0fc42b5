"""The ledger of record: jobs, items and images. The broker only delivers; these rows say what is true."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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
            raise ValueError("naive datetime given to the ledger; use pixelmill.schema.utcnow()")
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

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({State.succeeded, State.blocked, State.failed})
ACTIVE = frozenset({State.pending, State.queued, State.running})


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    model: Mapped[str] = mapped_column(String(1000))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # template, defaults, source file, seed
    # Counted at submission; live per-state counts come from items.
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)

    items: Mapped[list[Item]] = relationship(back_populates="job", passive_deletes=True)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "item_key", "variant"),
        Index("ix_items_job_id_state", "job_id", "state"),
        Index("ix_items_state_lease_expires", "state", "lease_expires"),
        Index("ix_items_content_hash", "content_hash"),
        Index("ix_items_state_queued_at", "state", "queued_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    item_key: Mapped[str] = mapped_column(String(200))
    variant: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(Text)
    negative: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # width, height, steps, guidance
    seed: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[State] = mapped_column(
        Enum(State, name="item_state", native_enum=False, length=16, validate_strings=True),
        default=State.pending)
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
    # Infrastructure failures back off (pixelmill/faults.py): not published again before `not_before`; the
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
