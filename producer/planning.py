"""What a submission plans, read-only: rows → items with their seeds and content hashes → batches → the skip
lookup (work already succeeded or under way) → the prompt filter's verdicts. The dry run (`preview_request`) is
this alone and writes nothing; the submit (`producer.submit`) writes what it plans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, exists, select, type_coerce
from sqlalchemy.orm import Session

from contract.identity import content_hasher, derive_seed, offset_seed, with_inputs
from contract.ledger import Ledger, listed, one_of
from contract.params import GenerationParams
from contract.schema import ACTIVE, Item, Job, State
from contract.settings import Settings
from contract.transitions import NewItem
from producer import catalogue_runs
from producer.catalogue import Defaults, Limits, Row, Stats, iter_catalogue, iter_rows
from producer.lora import CheckedLora
from producer.request import SubmitRequest, limits_for
from producer.screening import Screen

if TYPE_CHECKING:
    from contract.promptfilter import Match

BATCH = 2000  # items per skip lookup, prompt filter request, insert and catalogue upsert


@dataclass
class Preview:
    """A dry run: what submit would do, from the same reading and skip lookup; nothing written. For a catalogue
    run, `changes` are the counts the run would record (new, changed, unchanged, retired), `first_keys` the
    first keys of each, and `refused` the retire guard's refusal the real run would meet (None: it would pass)."""

    rows: int = 0
    items: int = 0  # to generate
    skipped: int = 0
    blocked: int = 0
    first: list[NewItem] = field(default_factory=list)  # the first five items planned
    first_blocked: list[NewItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    catalogue: str | None = None
    current: int = 0  # the catalogue's entries not retired before this run
    changes: dict[str, int] = field(default_factory=dict)
    first_keys: dict[str, list[str]] = field(default_factory=dict)
    refused: catalogue_runs.RetireRefused | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "rows": self.rows,
            "items": self.items,
            "skipped": self.skipped,
            "blocked": self.blocked,
            "prompts": [i.prompt for i in self.first],
            "catalogue": self.catalogue,
            **(
                {
                    "current": self.current,
                    "changes": self.changes,
                    "first_keys": self.first_keys,
                    "refused": self.refused is not None,
                    "refusal": str(self.refused) if self.refused is not None else None,
                }
                if self.catalogue is not None
                else {}
            ),
        }


def rows_of(request: SubmitRequest, limits: Limits, stats: Stats) -> Iterator[Row]:
    if request.rows is not None:
        return iter_rows(request.rows, request.defaults, limits, stats=stats)
    assert request.source is not None
    return iter_catalogue(request.source, request.defaults, limits, stats=stats)


def items_of(rows: Iterable[Row], seed: int, model: str, lora: CheckedLora | None = None) -> Iterator[NewItem]:
    """Each row's variants with their seeds and content hashes (prompt filter not applied yet); `lora`: the job's
    brand LoRA (path, sha256, scale), in every item's params."""
    shapes: dict[tuple[Any, ...], tuple[GenerationParams, Callable[[str, str, int], str]]] = {}
    for row in rows:
        shape = (row.width, row.height, row.steps, row.guidance, row.mode, row.strength)
        found = shapes.get(shape)
        if found is None:
            params = GenerationParams(row.width, row.height, row.steps, row.guidance, row.mode, row.strength)  # type: ignore[arg-type]
            if lora is not None:
                params = replace(params, lora=lora.path, lora_sha256=lora.sha256, lora_scale=lora.scale)
            found = shapes[shape] = (params, content_hasher(params, model))
        params, hasher = found
        for variant in range(row.images_per_item):
            item_seed = offset_seed(row.seed, variant) if row.seed is not None else derive_seed(seed, row.key, variant)
            digest = hasher(row.prompt, row.negative, item_seed)
            if row.inputs is not None or row.mode != "text" or lora is not None:
                digest = with_inputs(digest, params, row.inputs)
            yield NewItem(row.key, variant, row.prompt, row.negative, params, item_seed, digest, None, row.inputs)


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def known_work(session: Session, tenant_id: int, hashes: Sequence[str], *, ids: bool = True) -> dict[str, int]:
    """content hash -> the tenant's item already doing that work: succeeded first, else the newest active one. Only
    the tenant's own items count: another tenant's would tell it what others generate, and its job would lack the
    image (its manifest would show another tenant's item). With
    `ids=False` every known hash maps to 0: a plain submit only counts what it skips. States are filtered
    here, not in SQL: with `state IN (...)` beside the hash list SQLite's planner may scan by state instead."""
    unique = list(set(hashes))
    if not ids:  # the database returns only the hashes nobody does yet: none at all on a nightly rerun
        asked = listed(session, unique, String)
        doing_it = (
            exists()
            .where(Item.content_hash == asked.c.value, Item.state.in_([State.succeeded, *ACTIVE]))
            .where(Job.id == Item.job_id, Job.tenant_id == tenant_id)
        )
        fresh = set(session.connection().execute(select(asked.c.value).where(~doing_it)).scalars())
        return {digest: 0 for digest in unique if digest not in fresh}
    match = one_of(session, Item.content_hash, unique)
    succeeded = State.succeeded.value
    doing = {succeeded, *(state.value for state in ACTIVE)}
    found: dict[str, tuple[bool, int]] = {}
    for item_id, digest, state in (
        session.connection()
        .execute(
            select(Item.id, Item.content_hash, type_coerce(Item.state, String))
            .join(Job, Job.id == Item.job_id)
            .where(match, Job.tenant_id == tenant_id)
        )
        .all()
    ):
        if state not in doing:
            continue
        rank = (state == succeeded, item_id)
        if digest not in found or rank > found[digest]:
            found[digest] = rank
    return {digest: rank[1] for digest, rank in found.items()}


@dataclass
class Batch:
    fresh: list[NewItem]  # to insert once the prompt filter has seen them
    reused: list[tuple[NewItem, int]]  # skipped, with the item already doing the work (0: planned in this run)


def split_batch(
    session: Session | None, tenant_id: int, batch: list[NewItem], seen: Mapping[str, int], *, ids: bool = True
) -> Batch:
    """The skip lookup, before any prompt filter: work already succeeded or under way in the ledger, or planned
    earlier in this run (`seen`: content hash → item id, 0 while its batch is not written yet), is reused;
    identical work twice in one batch is planned once. `ids`: find the reused items' ids (catalogue entries
    need them; a plain submit does not)."""
    hashes = [i.content_hash for i in batch]
    known = known_work(session, tenant_id, hashes, ids=ids) if session is not None else {}
    fresh: list[NewItem] = []
    reused: list[tuple[NewItem, int]] = []
    planned: set[str] = set()
    for item in batch:
        digest = item.content_hash
        reuse = known[digest] if digest in known else seen.get(digest)
        if reuse is not None:
            reused.append((item, reuse))
        elif digest in planned:
            reused.append((item, 0))
        else:
            planned.add(digest)
            fresh.append(item)
    return Batch(fresh=fresh, reused=reused)


def screened(items: list[NewItem], verdicts: Sequence[Match | None]) -> list[NewItem]:
    """The items with the prompt filter's verdicts: a refused one is inserted `blocked`, never queued."""
    return [
        item._replace(blocked=found.as_dict()) if found else item for item, found in zip(items, verdicts, strict=True)
    ]


def screen_of(request: SubmitRequest, processes: int) -> Screen | None:
    return Screen(tuple(request.blocklists), processes) if request.blocklists else None


def preview_request(settings: Settings, ledger: Ledger | None, request: SubmitRequest) -> Preview:
    """Validate the whole catalogue and count what submit would do (against `ledger` if given); writes nothing.
    Raises CatalogueError / UsageError like `submit_request`."""
    limits = request.limits or limits_for(settings)
    stats = Stats()
    screen = screen_of(request, 0)
    preview = Preview()
    seen: dict[str, int] = {}
    reader = ledger.session(readonly=True) if ledger is not None else None
    session = reader.__enter__() if reader is not None else None
    try:
        changes = (
            catalogue_runs.ChangePreview.start(session, request.tenant_id, request.catalogue)
            if request.catalogue
            else None
        )
        for batch in batches(
            items_of(rows_of(request, limits, stats), request.seed, request.model, request.lora), BATCH
        ):
            if changes is not None:
                changes.add(session, batch)
            split = split_batch(session, request.tenant_id, batch, seen)
            seen.update((item.content_hash, -1) for item in split.fresh)
            preview.skipped += len(split.reused)
            verdicts = screen.check_here([i.prompt for i in split.fresh]) if screen else [None] * len(split.fresh)
            for item in screened(split.fresh, verdicts):
                if item.blocked:
                    preview.blocked += 1
                    if len(preview.first_blocked) < 5:
                        preview.first_blocked.append(item)
                else:
                    preview.items += 1
            preview.first += batch[: 5 - len(preview.first)]
        if changes is not None:
            changes.finish(session)
            preview.catalogue, preview.current = changes.catalogue, changes.current
            preview.changes, preview.first_keys = changes.counts, changes.first
            preview.refused = catalogue_runs.retire_guard(settings, request.max_retire, request.allow_retire).refusal(
                changes.catalogue,
                changes.counts[catalogue_runs.RETIRED],
                changes.current,
                changes.first[catalogue_runs.RETIRED],
            )
    finally:
        if reader is not None:
            reader.__exit__(None, None, None)
    preview.rows = stats.rows
    preview.warnings = stats.warnings(limits)
    return preview


@dataclass
class Plan:
    rows: int
    items: list[NewItem]


def plan(path: Path, defaults: Defaults, *, seed: int, model: str) -> Plan:
    """Every item of a (small) catalogue with seeds and hashes, held in memory: determinism checks and tests."""
    stats = Stats()
    items = list(items_of(iter_catalogue(path, defaults, stats=stats), seed, model))
    return Plan(rows=stats.rows, items=items)
