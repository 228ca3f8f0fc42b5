"""Named catalogues (`pixelmill submit --catalogue NAME`): each job is one run, and `catalogue_entries` says, per
(key, variant), which item's image serves it now and what the latest run did to it.

At run N: a (key, variant) without an entry is `new`; one whose content hash differs is `changed`; the same hash
is `unchanged` (its serving item stays, unless tonight had to generate it again); entries absent tonight become
`retired`, keeping their item and image. Failed and blocked are not stored: they are the serving item's state.

Written in the submit's own transaction, batch by batch as rows stream in, so a rejected catalogue leaves the
entries as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from pixelmill.ledger import bound, bulk_insert, one_of
from pixelmill.schema import CatalogueEntry, utcnow

NEW, CHANGED, UNCHANGED, RETIRED = "new", "changed", "unchanged", "retired"
CATALOGUE_MAX = 200  # characters, the column's size


@dataclass(frozen=True)
class Listed:
    """One (key, variant) of tonight's file and the item serving it: generated tonight, or reused."""

    key: str
    variant: int
    content_hash: str
    item_id: int
    generated: bool  # a new item of this run (not reused from earlier work)


@dataclass(frozen=True)
class Entry:
    """A catalogue entry as stored."""

    catalogue: str
    key: str
    variant: int
    content_hash: str
    item_id: int
    job_id: int
    change: str
    updated: datetime


def check_name(name: str) -> str:
    """A catalogue name: non-empty, at most 200 characters, no control characters."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > CATALOGUE_MAX
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise ValueError(f"catalogue name must be 1 to {CATALOGUE_MAX} printable characters, got {name!r:.80}")
    return name


def record_run(session: Session, catalogue: str, job_id: int, batch: Sequence[Listed]) -> dict[str, int]:
    """Upsert one batch of tonight's (key, variant)s: read their entries in one query, then one UPDATE for all
    the unchanged ones (the common case of a nightly rerun: a 100k-entry catalogue is one statement a batch,
    not 100k parameter sets), one executemany UPDATE for the changed ones and one bulk INSERT for new ones.
    Returns counts per change."""
    counts = {NEW: 0, CHANGED: 0, UNCHANGED: 0}
    if not batch:
        return counts
    table = cast(Table, CatalogueEntry.__table__)
    keys = list({listed.key for listed in batch})
    old = {
        (key, variant): (entry_id, content_hash, item_id)
        for entry_id, key, variant, content_hash, item_id in session.execute(
            select(table.c.id, table.c.item_key, table.c.variant, table.c.content_hash, table.c.item_id).where(
                table.c.catalogue == catalogue, one_of(session, table.c.item_key, keys)
            )
        ).all()
    }
    now = utcnow()
    stays: list[int] = []  # unchanged entries keeping their item: only the run, change and time move
    updates: list[dict[str, object]] = []
    inserts: list[tuple[object, ...]] = []
    stamp, new = bound(session, table.c.updated, now), bound(session, table.c.change, NEW)
    for listed in batch:
        found = old.get((listed.key, listed.variant))
        if found is None:
            counts[NEW] += 1
            inserts.append(
                (catalogue, listed.key, listed.variant, listed.content_hash, listed.item_id, job_id, new, stamp)
            )
            continue
        entry_id, old_hash, old_item = found
        change = UNCHANGED if old_hash == listed.content_hash else CHANGED
        counts[change] += 1
        if change == UNCHANGED and (not listed.generated or listed.item_id == old_item):
            stays.append(entry_id)
            continue
        item_id = old_item if change == UNCHANGED and not listed.generated else listed.item_id
        updates.append({"eid": entry_id, "h": listed.content_hash, "i": item_id, "j": job_id, "c": change, "u": now})
    if stays:
        session.execute(
            update(table).where(one_of(session, table.c.id, stays)).values(change=UNCHANGED, job_id=job_id, updated=now)
        )
    if updates:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("eid"))
            .values(
                content_hash=bindparam("h"),
                item_id=bindparam("i"),
                job_id=bindparam("j"),
                change=bindparam("c"),
                updated=bindparam("u"),
            ),
            updates,
        )
    if inserts:
        bulk_insert(session, table, _ENTRY_COLUMNS, inserts)
    return counts


_ENTRY_COLUMNS = ("catalogue", "item_key", "variant", "content_hash", "item_id", "job_id", "change", "updated")


def retire_absent(session: Session, catalogue: str, job_id: int) -> int:
    """After the last batch: entries this run did not list become `retired` (item and image kept)."""
    result = session.execute(
        update(CatalogueEntry)
        .where(CatalogueEntry.catalogue == catalogue, CatalogueEntry.job_id != job_id, CatalogueEntry.change != RETIRED)
        .values(change=RETIRED, job_id=job_id, updated=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def catalogue_entries(session: Session, name: str, *, batch: int = 5000) -> Iterator[Entry]:
    """Every entry of catalogue `name`, retired ones included, by key and variant; streamed."""
    query = (
        select(CatalogueEntry)
        .where(CatalogueEntry.catalogue == name)
        .order_by(CatalogueEntry.item_key, CatalogueEntry.variant)
        .execution_options(yield_per=batch)
    )
    for row in session.scalars(query):
        yield Entry(
            catalogue=row.catalogue,
            key=row.item_key,
            variant=row.variant,
            content_hash=row.content_hash,
            item_id=row.item_id,
            job_id=row.job_id,
            change=row.change,
            updated=row.updated,
        )
