"""Named catalogues (`pixelmill submit --catalogue NAME`): each job is one run, and `catalogue_entries` says, per
(key, variant), which item's image serves it now and what the latest run did to it.

At run N: a (key, variant) without an entry is `new`; one whose content hash differs is `changed`; the same hash
is `unchanged` (its serving item stays, unless tonight had to generate it again); entries absent tonight become
`retired`, keeping their item and image. Failed and blocked are not stored: they are the serving item's state.

Written in the submit's own transaction, batch by batch as rows stream in, so a rejected catalogue leaves the
entries as they were.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from contract.ledger import bound, bulk_insert, one_of
from contract.schema import CatalogueEntry, Job, utcnow
from contract.settings import Settings
from producer.catalogue import UsageError

NEW, CHANGED, UNCHANGED, RETIRED = "new", "changed", "unchanged", "retired"
CHANGES = (NEW, CHANGED, UNCHANGED, RETIRED)  # in the order runs report them
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


def record_run(
    session: Session, tenant_id: int, catalogue: str, job_id: int, batch: Sequence[Listed]
) -> dict[str, int]:
    """Upsert one batch of tonight's (key, variant)s: read their entries in one query, then one UPDATE for all
    the unchanged ones (the common case of a nightly rerun: a 100k-entry catalogue is one statement a batch,
    not 100k parameter sets), one executemany UPDATE for the changed ones and one bulk INSERT for new ones.
    Returns counts per change."""
    counts = {NEW: 0, CHANGED: 0, UNCHANGED: 0}
    if not batch:
        return counts
    table = cast(Table, CatalogueEntry.__table__)
    old = {
        at: (entry_id, content_hash, item_id)
        for at, (entry_id, content_hash, item_id, _) in _stored(session, tenant_id, catalogue, batch).items()
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
            at = (listed.key, listed.variant, listed.content_hash, listed.item_id)
            inserts.append((tenant_id, catalogue, *at, job_id, new, stamp))
            continue
        entry_id, old_hash, old_item = found
        change = change_of(old_hash, listed.content_hash)
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


def _stored(
    session: Session, tenant_id: int, catalogue: str, batch: Sequence[Keyed]
) -> dict[tuple[str, int], tuple[int, str, int, str]]:
    """(key, variant) -> (entry id, content hash, item id, change) of the batch's stored entries: one query."""
    table = cast(Table, CatalogueEntry.__table__)
    keys = list({listed.key for listed in batch})
    return {
        (key, variant): (entry_id, content_hash, item_id, change)
        for entry_id, key, variant, content_hash, item_id, change in session.execute(
            select(
                table.c.id, table.c.item_key, table.c.variant, table.c.content_hash, table.c.item_id, table.c.change
            ).where(
                table.c.tenant_id == tenant_id,
                table.c.catalogue == catalogue,
                one_of(session, table.c.item_key, keys),
            )
        ).all()
    }


def change_of(stored_hash: str | None, content_hash: str) -> str:
    """What a run does to a listed (key, variant) whose entry holds `stored_hash` (None: no entry). A retired
    entry that comes back is changed or unchanged like any other: its entry is still there."""
    if stored_hash is None:
        return NEW
    return UNCHANGED if stored_hash == content_hash else CHANGED


_ENTRY_COLUMNS = (
    "tenant_id",
    "catalogue",
    "item_key",
    "variant",
    "content_hash",
    "item_id",
    "job_id",
    "change",
    "updated",
)


def retire_absent(session: Session, tenant_id: int, catalogue: str, job_id: int) -> int:
    """After the last batch: entries this run did not list become `retired` (item and image kept)."""
    result = session.execute(
        update(CatalogueEntry)
        .where(
            CatalogueEntry.tenant_id == tenant_id,
            CatalogueEntry.catalogue == catalogue,
            CatalogueEntry.job_id != job_id,
            CatalogueEntry.change != RETIRED,
        )
        .values(change=RETIRED, job_id=job_id, updated=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def catalogue_entries(session: Session, tenant_id: int, name: str, *, batch: int = 5000) -> Iterator[Entry]:
    """Every entry of catalogue `name`, retired ones included, by key and variant; streamed."""
    table = cast(Table, CatalogueEntry.__table__)
    query = (
        select(*(table.c[column] for column in _ENTRY_COLUMNS[1:]))  # Entry's fields, in order
        .where(table.c.tenant_id == tenant_id, table.c.catalogue == name)
        .order_by(table.c.item_key, table.c.variant)
        .execution_options(yield_per=batch)
    )
    for row in session.execute(query):
        yield Entry(*row)


# --- the retire guard and the change preview --------------------------------------------------------------

FIRST = 5  # keys shown per change in a preview or a refusal


class Keyed(Protocol):
    """A planned (key, variant) with its content hash: `transitions.NewItem` or `Listed`."""

    @property
    def key(self) -> str: ...

    @property
    def variant(self) -> int: ...

    @property
    def content_hash(self) -> str: ...


class RetireRefused(UsageError):
    """A catalogue run that would retire more of the current entries than the guard allows: raised before the
    commit, so the run's transaction rolls back and nothing is written (job, items, entries, events)."""

    def __init__(self, catalogue: str, retired: int, current: int, guard: RetireGuard, first: Sequence[str]) -> None:
        self.catalogue, self.retired, self.current, self.first = catalogue, retired, current, list(first)
        self.max_retire, self.floor, self.limit = guard.max_retire, guard.floor, guard.limit(current)
        shown = ", ".join(self.first) + (", …" if retired > len(self.first) else "")
        needed = math.ceil(retired * 100 / current) if current else 100
        super().__init__(
            f"catalogue {catalogue!r}: this run would retire {retired} of its {current} current entries "
            f"({retired * 100 / max(current, 1):.0f} %), more than --max-retire {guard.max_retire:g} % "
            f"(PIXELMILL_CATALOGUE_MAX_RETIRE; at most {self.limit} here); first retired: {shown}; nothing was "
            f"submitted. A file cut short, a wrong --key or a filter left on in the export retires keys that still "
            f"exist: check the file first. If they really went away, submit again with --allow-retire "
            f"(allow_retire in the API and v1 requests) or --max-retire {needed} (max_retire)"
        )

    def as_dict(self) -> dict[str, Any]:
        plain = {name: getattr(self, name) for name in ("catalogue", "retired", "current", "max_retire", "limit")}
        return {**plain, "first_retired": self.first}


@dataclass(frozen=True)
class RetireGuard:
    """A run may retire at most `max_retire` percent of the current entries, and always up to `floor` of them
    (a small catalogue losing two of twelve keys is no accident); `allow` turns the guard off for one run."""

    max_retire: float  # percent of the catalogue's current (non-retired) entries
    floor: int
    allow: bool = False

    def limit(self, current: int) -> int:
        return max(self.floor, math.floor(current * self.max_retire / 100 + 1e-9))

    def refusal(self, catalogue: str, retired: int, current: int, first: Sequence[str]) -> RetireRefused | None:
        if self.allow or retired <= self.limit(current):
            return None
        return RetireRefused(catalogue, retired, current, self, first)


def retire_guard(settings: Settings, max_retire: float | None, allow: bool) -> RetireGuard:
    """A run's guard: its max_retire (None: PIXELMILL_CATALOGUE_MAX_RETIRE), PIXELMILL_CATALOGUE_RETIRE_FLOOR."""
    return RetireGuard(
        max_retire=settings.catalogue_max_retire if max_retire is None else float(max_retire),
        floor=settings.catalogue_retire_floor,
        allow=allow,
    )


def current_entries(session: Session, tenant_id: int, catalogue: str) -> int:
    """How many entries of the catalogue are not retired: what a run's retirements are measured against."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(CatalogueEntry)
            .where(
                CatalogueEntry.tenant_id == tenant_id,
                CatalogueEntry.catalogue == catalogue,
                CatalogueEntry.change != RETIRED,
            )
        )
        or 0
    )


def _first_keys(pairs: Iterable[tuple[str, int]], limit: int = FIRST) -> list[str]:
    keys: list[str] = []
    for key, _ in pairs:
        if key not in keys:
            keys.append(key)
            if len(keys) >= limit:
                break
    return keys


def pending_retire(session: Session, tenant_id: int, catalogue: str, job_id: int) -> tuple[int, list[str]]:
    """What `retire_absent` would retire now, in this run's transaction: how many entries, and the first keys."""
    absent = (
        CatalogueEntry.tenant_id == tenant_id,
        CatalogueEntry.catalogue == catalogue,
        CatalogueEntry.job_id != job_id,
        CatalogueEntry.change != RETIRED,
    )
    count = int(session.scalar(select(func.count()).select_from(CatalogueEntry).where(*absent)) or 0)
    if not count:
        return 0, []
    first = session.execute(
        select(CatalogueEntry.item_key, CatalogueEntry.variant)
        .where(*absent)
        .order_by(CatalogueEntry.item_key, CatalogueEntry.variant)
        .limit(FIRST * 16)  # FIRST keys, even with 16 images per key
    )
    return count, _first_keys((key, variant) for key, variant in first)


@dataclass
class ChangePreview:
    """What a run would record in the catalogue (`record_run` + `retire_absent`), worked out read-only batch by
    batch: counts per change and the first keys of each. Memory: one int per listed entry that was current."""

    tenant_id: int
    catalogue: str
    current: int = 0  # non-retired entries before the run
    counts: dict[str, int] = field(default_factory=lambda: {NEW: 0, CHANGED: 0, UNCHANGED: 0, RETIRED: 0})
    first: dict[str, list[str]] = field(default_factory=lambda: {NEW: [], CHANGED: [], UNCHANGED: [], RETIRED: []})
    _matched: int = 0  # listed entries that were current: the rest of `current` would be retired
    _seen: set[int] = field(default_factory=set)  # hash((key, variant)) of those, for the first retired keys

    @classmethod
    def start(cls, session: Session | None, tenant_id: int, catalogue: str) -> ChangePreview:
        current = current_entries(session, tenant_id, catalogue) if session is not None else 0
        return cls(tenant_id, catalogue, current)

    def add(self, session: Session | None, batch: Sequence[Keyed]) -> None:
        stored = _stored(session, self.tenant_id, self.catalogue, batch) if session is not None and batch else {}
        for item in batch:
            found = stored.get((item.key, item.variant))
            change = change_of(found[1] if found else None, item.content_hash)
            self.counts[change] += 1
            keys = self.first[change]
            if len(keys) < FIRST and item.key not in keys:
                keys.append(item.key)
            if found is not None and found[3] != RETIRED:
                self._matched += 1
                self._seen.add(hash((item.key, item.variant)))

    def finish(self, session: Session | None) -> None:
        """The entries no batch listed: retired. Their first keys are read in key order."""
        retired = self.counts[RETIRED] = self.current - self._matched
        if session is None or retired <= 0:
            return
        query = (
            select(CatalogueEntry.item_key, CatalogueEntry.variant)
            .where(
                CatalogueEntry.tenant_id == self.tenant_id,
                CatalogueEntry.catalogue == self.catalogue,
                CatalogueEntry.change != RETIRED,
            )
            .order_by(CatalogueEntry.item_key, CatalogueEntry.variant)
            .execution_options(yield_per=1000)
        )
        absent = ((key, variant) for key, variant in session.execute(query) if hash((key, variant)) not in self._seen)
        self.first[RETIRED] = _first_keys(absent)
        self._seen.clear()


# --- listing and names ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueSummary:
    """One named catalogue: its runs, its entries now, and its last run."""

    name: str
    runs: int  # jobs submitted with this catalogue
    current: int  # entries not retired
    retired: int
    last_job: int
    last_run: datetime
    last_changes: dict[str, int]  # the last run's new / changed / unchanged / retired

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "last_run": self.last_run.isoformat(timespec="seconds")}


def list_catalogues(session: Session, tenant_id: int) -> list[CatalogueSummary]:
    """Every catalogue of the tenant that has a run, by name: three grouped queries, whatever the number of entries."""
    runs = session.execute(
        select(Job.catalogue, func.count(), func.max(Job.id))
        .where(Job.tenant_id == tenant_id, Job.catalogue.is_not(None))
        .group_by(Job.catalogue)
    ).all()
    is_retired = case((CatalogueEntry.change == RETIRED, 1), else_=0)
    entries = {
        name: (int(total or 0), int(retired or 0))
        for name, total, retired in session.execute(
            select(CatalogueEntry.catalogue, func.count(), func.sum(is_retired))
            .where(CatalogueEntry.tenant_id == tenant_id)
            .group_by(CatalogueEntry.catalogue)
        )
    }
    last = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_([r[2] for r in runs])))}
    found = []
    for name, count, last_id in sorted(runs, key=lambda r: str(r[0])):
        total, retired = entries.get(name, (0, 0))
        job = last[last_id]
        found.append(
            CatalogueSummary(
                name=str(name),
                runs=int(count),
                current=total - retired,
                retired=retired,
                last_job=job.id,
                last_run=job.created,
                last_changes=dict(job.counts.get("changes", {})),
            )
        )
    return found


def has_entries(session: Session, tenant_id: int, name: str) -> bool:
    found = select(CatalogueEntry.id).where(CatalogueEntry.tenant_id == tenant_id, CatalogueEntry.catalogue == name)
    return session.scalar(found.limit(1)) is not None


def catalogue_names(session: Session, tenant_id: int) -> list[str]:
    named = select(Job.catalogue).where(Job.tenant_id == tenant_id, Job.catalogue.is_not(None)).distinct()
    return [str(n) for n in session.scalars(named)]


def unknown_catalogue(session: Session, tenant_id: int, name: str) -> str:
    """The message for a catalogue name that has no run, with the closest known name if one is close."""
    message = f"no catalogue {name!r} (no job was submitted with --catalogue {name})"
    names = [n for n in catalogue_names(session, tenant_id) if n != name]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"no catalogue {name!r}; did you mean {close[0]!r}?"
    return message + "; `pixelmill catalogues` lists them"
