"""Submit a catalogue: validate everything, write the job and its items in one transaction, then publish.

Order matters for safety. Validation and the broker check come first, so bad input or a dead broker
leaves nothing behind. Items are committed as `pending` before any message exists; a producer that dies
while publishing leaves pending items, which the reconciler publishes later. Nothing is lost either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pixelmill import promptfilter, transitions
from pixelmill.checks import Checks
from pixelmill.identity import content_hash, derive_seed, offset_seed
from pixelmill.ledger import Ledger
from pixelmill.params import GenerationParams
from pixelmill.queue import QueuedItem, make_celery, publish_items
from pixelmill.schema import ACTIVE, Item, Job, State
from pixelmill.settings import Settings
from pixelmill.transitions import NewItem
from producer.catalogue import Defaults, read_catalogue

log = logging.getLogger(__name__)

_IN_BATCH = 500  # ids per IN (...) clause
_MARK_EVERY = 2000  # items published, then marked queued in one UPDATE


@dataclass
class Plan:
    source: str
    defaults: Defaults
    seed: int
    model: str
    rows: int
    items: list[NewItem]
    skipped: list[NewItem] = field(default_factory=list)
    prompt_filter: list[str] = field(default_factory=list)  # its list sources; empty: no prompt filter
    checks: Checks | None = None  # what every image is judged by after generation

    @property
    def blocked(self) -> list[NewItem]:
        return [item for item in self.items if item.blocked]

    def job_params(self) -> dict[str, Any]:
        """What the job records about how it was asked for (per-row overrides live on the items)."""
        return {"source": self.source, **asdict(self.defaults), "seed": self.seed,
                "prompt_filter": self.prompt_filter, "checks": self.checks.as_json() if self.checks else None}


@dataclass
class Submission:
    job: int
    name: str
    rows: int
    items: int  # new work queued
    skipped: int  # already succeeded or already in progress elsewhere
    messages: int
    blocked: int = 0  # refused by the prompt filter (in the ledger as `blocked`, never queued)

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "name": self.name, "rows": self.rows, "items": self.items,
                "skipped": self.skipped, "blocked": self.blocked, "messages": self.messages}


def plan(path: Path, defaults: Defaults, *, seed: int, model: str, blocklists: Sequence[str] = (),
         checks: Checks | None = None) -> Plan:
    """Read and validate a catalogue into items; prompts the filter of `blocklists` refuses are marked."""
    rows = read_catalogue(path, defaults)  # raises CatalogueError before anything is written
    prompt_filter = promptfilter.load(tuple(blocklists)) if blocklists else None
    items = []
    for row in rows:
        params = GenerationParams(width=row.width, height=row.height, steps=row.steps, guidance=row.guidance)
        found = prompt_filter.check(row.prompt) if prompt_filter else None
        for variant in range(row.images_per_item):
            item_seed = offset_seed(row.seed, variant) if row.seed is not None else derive_seed(seed, row.key, variant)
            items.append(NewItem(
                key=row.key, variant=variant, prompt=row.prompt, negative=row.negative, params=params,
                seed=item_seed, content_hash=content_hash(prompt=row.prompt, negative=row.negative, params=params,
                                                          seed=item_seed, model=model),
                blocked=found.as_dict() if found else None))
    return Plan(source=str(path.resolve()), defaults=defaults, seed=seed, model=model, rows=len(rows), items=items,
                prompt_filter=list(blocklists), checks=checks)


def split_done(ledger: Ledger, planned: Plan) -> Plan:
    """Move items whose identical work already succeeded (or is under way) into `skipped`."""
    hashes = [item.content_hash for item in planned.items]
    known: set[str] = set()
    with ledger.session(readonly=True) as session:
        for batch in _batches(hashes, _IN_BATCH):
            known.update(session.scalars(
                select(Item.content_hash).where(Item.content_hash.in_(batch),
                                                Item.state.in_([State.succeeded, *ACTIVE]))))
    fresh = [item for item in planned.items if item.content_hash not in known]
    skipped = [item for item in planned.items if item.content_hash in known]
    return replace(planned, items=fresh, skipped=skipped)


def submit(settings: Settings, ledger: Ledger, planned: Plan, *, name: str | None = None) -> Submission:
    app = make_celery(settings)
    with app.connection_for_write() as conn:  # fail now, before writing, if the broker is unreachable
        conn.ensure_connection(max_retries=3)
    planned = split_done(ledger, planned)
    name = name or f"{Path(planned.source).stem}-{datetime.now():%Y%m%d-%H%M%S}"
    with ledger.session() as session:
        job = Job(name=name, model=planned.model, params=planned.job_params(),
                  counts={"rows": planned.rows, "items": len(planned.items), "skipped": len(planned.skipped),
                          "blocked": len(planned.blocked)})
        session.add(job)
        session.flush()
        job_id = job.id
        ids = transitions.add_items(session, job_id, planned.items)
    outstanding = [QueuedItem(item=i, job=job_id, params=it.params)
                   for i, it in zip(ids, planned.items, strict=True) if not it.blocked]
    messages = 0
    for group in _batches(outstanding, _MARK_EVERY):  # marked queued group by group as they go out
        chunks = publish_items(app, group, planned.model, settings.batch_size)
        messages += len(chunks)
        with ledger.session() as session:
            transitions.mark_queued(session, [q.item for q in group])
    blocked = len(planned.blocked)
    log.info("submitted", extra={"job": job_id, "items": len(ids) - blocked, "skipped": len(planned.skipped),
                                 "blocked": blocked, "messages": messages})
    return Submission(job=job_id, name=name, rows=planned.rows, items=len(ids) - blocked,
                      skipped=len(planned.skipped), messages=messages, blocked=blocked)


def _batches(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]
