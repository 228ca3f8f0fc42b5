"""Every change of an item's state, in one place: the ledger's state machine.

    pending ──schedule──▶ queued ──claim──▶ running ──finish──▶ succeeded | blocked
     ▲ │  ▲                  │                  │
     │ │  └──lost message────┘                  │
     │ └─(prompt filter at submit)─▶ blocked    running ──fail (attempts used up)──▶ failed
     └──fail (attempts left), back_off, lost (lease expired, holder gone): back to the backlog
    blocked (image) ──approve──▶ succeeded
    pending | queued | running ──cancel──▶ cancelled (a late finish of a cancelled item records nothing)
    failed | blocked ──retry──▶ pending (attempts 0, same seed; the caller publishes and marks them queued)

Producers (submit, review) and workers (claim, finish, fail, the reconciler) both call these functions inside
their own transaction; nothing else writes `items.state`. Each transition says which states it may leave
from, so a late or duplicated caller changes nothing it should not: finishing twice adds no rows, a failure
reported by a process that no longer holds the item is ignored, a finished item is never claimed again.

The transitions that end an item (`finish`, `fail` when final, `block`, attempts used up in `claim` and
`requeue_lost`) also write its events in the same transaction (contract/events.py): `item.*` when the job asked
for them, and `job.finished` before the commit that leaves the job with no active item.

Outcomes made outside a worker's recording of its chunk (`cancel`, `claim`'s give-ups, `requeue_lost`) are also
tallied in the ledger (`_tally`): their caller may be a short command nobody scrapes (contract/scheduling.py
counts the tallies).

A holder is `<node name>:<pid>`: the process that claimed an item and holds its lease.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Row, Table, Update, and_, any_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from contract import events, faults
from contract.checks import Safety
from contract.ledger import bound, bulk_insert, ids_param, insert_ignore
from contract.params import GenerationParams
from contract.queue import QueuedItem
from contract.schema import ACTIVE, Candidate, Image, ImageScore, Item, Job, OutcomeTally, State, detached, utcnow

_IN_BATCH = 500  # ids per IN (...) clause


class TransitionError(RuntimeError):
    """A transition that is not allowed from the item's current state; the message says why."""


# --- values -----------------------------------------------------------------------------------------------


class NewItem(NamedTuple):
    """An item as planned at submission: its identity, what to generate, and a prompt-filter block if any.
    A NamedTuple, not a frozen dataclass: a submission builds one per catalogue item (3x cheaper)."""

    key: str
    variant: int
    prompt: str
    negative: str
    params: GenerationParams
    seed: int
    content_hash: str
    blocked: dict[str, str] | None = None  # the prompt filter's reason: never generated
    inputs: dict[str, str] | None = None  # the photo and mask (paths and sha256) of a background/restyle item


@dataclass(frozen=True)
class ClaimedItem:
    """An item this process holds the lease of, detached from its session."""

    id: int
    job: int
    key: str
    variant: int
    prompt: str
    negative: str
    seed: int
    params: GenerationParams
    created: datetime | None = None  # its submission (queue wait and latency metrics)
    inputs: dict[str, Any] | None = None  # NewItem.inputs


@dataclass(frozen=True)
class ImageRecord:
    """The `images` row of a finished item: the object as stored (bytes hashed after every transform)."""

    storage_key: str
    sha256: str
    width: int
    height: int
    bytes: int
    format: str
    engine_id: str
    timings: dict[str, float]
    scores: dict[str, float]
    safety: Safety | None
    candidate: int
    visibility: str  # "public" (under jobs/) or "quarantine"
    provenance: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        values = {
            name: getattr(self, name)
            for name in (
                "storage_key",
                "sha256",
                "width",
                "height",
                "bytes",
                "format",
                "engine_id",
                "timings",
                "scores",
                "candidate",
                "visibility",
            )
        }
        values["safety"] = self.safety.to_json() if self.safety else None
        if self.provenance is not None:
            values["provenance"] = self.provenance
        return values


@dataclass(frozen=True)
class CandidateRecord:
    """One `candidates` row: every image generated for an item, kept or not."""

    candidate: int
    seed: int
    outcome: str  # kept | rejected | blocked
    scores: dict[str, float]
    safety: Safety | None
    engine_id: str

    def row(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "seed": self.seed,
            "outcome": self.outcome,
            "scores": self.scores,
            "safety": self.safety.to_json() if self.safety else None,
            "engine_id": self.engine_id,
        }


@dataclass(frozen=True)
class Finish:
    """How a claimed item ended well: succeeded with its image, or blocked by the image checker."""

    image: ImageRecord | None  # None: blocked and not kept (PIXELMILL_QUARANTINE=none)
    candidates: tuple[CandidateRecord, ...]
    blocked: dict[str, Any] | None = None  # the block reason; None: succeeded


@dataclass
class Recovery:
    """What `requeue_lost` did: items put back to `pending` (by model; the scheduler dispatches them again),
    and items that used up their attempts."""

    requeued: dict[str, int] = field(default_factory=dict)
    failed: int = 0


# --- holders ----------------------------------------------------------------------------------------------


def holder_name(node: str) -> str:
    return f"{node}:{os.getpid()}"


def reclaimable(holder: str | None, node: str) -> bool:
    """True when `holder` cannot still be working on an item: a process of this node that no longer exists,
    or this very process (its earlier task has ended; `claim` leaves out the items it is still storing).
    A holder on another node is taken to be alive until its lease runs out."""
    if not holder:
        return False
    name, _, pid_text = holder.rpartition(":")
    if name != node or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --- transitions ------------------------------------------------------------------------------------------


def _backlog(session: Session, changes: Mapping[int, int]) -> None:
    """Add each job's change of pending items to `jobs.pending`, in the transaction that made it: every move to
    or from `pending` calls this with the rows it actually moved, so the backlog is a sum over jobs."""
    moved = {job_id: delta for job_id, delta in changes.items() if delta}
    if not moved:
        return
    delta: Any = next(iter(moved.values())) if len(moved) == 1 else case(moved, value=Job.id, else_=0)
    session.execute(  # one statement for the jobs of a scheduler pass's mark
        update(Job)
        .where(Job.id.in_(list(moved)))
        .values(pending=Job.pending + delta)
        .execution_options(synchronize_session=False)
    )


def _tally(session: Session, outcome: str, per_job: Mapping[int, int]) -> None:
    """Record `outcome` for this many items per job, in the caller's transaction: an insert, never an update, so
    concurrent transitions never wait on one another; the scheduler's leader counts and deletes the rows."""
    rows = [{"job_id": job_id, "outcome": outcome, "n": n} for job_id, n in per_job.items() if n]
    if rows:
        session.execute(insert(OutcomeTally), rows)


def recount_pending(session: Session, job_ids: Collection[int]) -> None:
    """Set the jobs' `pending` counters to their items' count: the scheduler's sweep repairs a counter that
    disagrees with the items (a bug, or a hand edit of the ledger), so that a wrong counter never strands work."""
    counted = (
        select(func.count()).where(Item.job_id == Job.id, Item.state == State.pending).correlate(Job).scalar_subquery()
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)))
        .values(pending=counted)
        .execution_options(synchronize_session=False)
    )


_NEW_ITEM_COLUMNS = (
    "job_id",
    "item_key",
    "variant",
    "prompt",
    "negative",
    "params",
    "seed",
    "content_hash",
    "state",
    "attempts",
    "created",
    "block_reason",
    "finished_at",
    "inputs",
)


def add_items(session: Session, job_id: int, items: Sequence[NewItem]) -> list[int]:
    """New items, `pending` (or `blocked` by the prompt filter, finished at once); their ids in order.

    One bulk insert without RETURNING (`ledger.bulk_insert`: COPY or multi-row INSERTs; values shared by many rows
    are bound once), then the ids: this job's rows above the highest id seen before the insert are ours
    (sequences only grow; the job filter leaves out other sessions' rows). When they are one unbroken run of
    len(items) ids, row i has the i-th (ids are drawn in insert order); otherwise they are read back by
    (key, variant)."""
    if not items:
        return []
    table = cast(Table, Item.__table__)
    column = table.c

    def bind(name: str, value: Any) -> Any:
        return bound(session, column[name], value)

    now = bind("created", utcnow())
    pending, blocked, no_reason = bind("state", State.pending), bind("state", State.blocked), bind("block_reason", None)
    params_of: dict[GenerationParams, Any] = {}
    no_inputs = bind("inputs", None)
    rows = []
    for it in items:
        params = params_of.get(it.params)
        if params is None:
            params = params_of[it.params] = bind("params", it.params.to_json())
        if it.blocked:
            state, reason, finished = blocked, bind("block_reason", it.blocked), now
        else:
            state, reason, finished = pending, no_reason, None
        rows.append(
            (job_id, it.key, it.variant, it.prompt, it.negative, params, it.seed, it.content_hash)
            + (state, 0, now, reason, finished, bind("inputs", it.inputs) if it.inputs else no_inputs)
        )
    before = session.scalar(select(func.max(Item.id))) or 0
    bulk_insert(session, table, _NEW_ITEM_COLUMNS, rows)
    _backlog(session, {job_id: sum(1 for it in items if not it.blocked)})
    count, first, last = session.execute(
        select(func.count(), func.min(Item.id), func.max(Item.id)).where(Item.job_id == job_id, Item.id > before)
    ).one()
    if count == len(items) and last - first + 1 == count:
        return list(range(first, last + 1))  # one unbroken run: ids follow the insert order (rowid / sequence)
    ids = {
        (key, variant): item_id
        for item_id, key, variant in session.execute(
            select(Item.id, Item.item_key, Item.variant).where(Item.job_id == job_id, Item.id > before)
        )
    }
    return [ids[(it.key, it.variant)] for it in items]


def mark_queued(session: Session, item_ids: Collection[int], *, jobs: Collection[int] | None = None) -> None:
    """pending → queued, once the scheduler published a message carrying them (never moves an item that went on:
    a worker may have claimed it from `pending` already). With `jobs` (the items' jobs) the UPDATE finds them on
    the `(job_id, state, id)` index: SQLite would otherwise walk every pending item of the state index. On
    PostgreSQL one statement (`_marking`), atomic by itself: the scheduler runs it outside a transaction."""
    ids = list(item_ids)
    if ids and session.get_bind().dialect.name == "postgresql":
        session.execute(_marking(), {"ids": ids, "now": utcnow()})
        return
    same_job = [Item.job_id.in_(list(jobs))] if jobs is not None else []
    moved: Counter[int] = Counter()
    for start in range(0, len(ids), _IN_BATCH):
        moved.update(
            session.scalars(
                update(Item)
                .where(*same_job, Item.state == State.pending, Item.id.in_(ids[start : start + _IN_BATCH]))
                .values(state=State.queued, queued_at=utcnow())
                .returning(Item.job_id)
            )
        )
    _backlog(session, {job: -n for job, n in moved.items()})


@functools.cache
def _marking() -> Update:
    """`mark_queued` on PostgreSQL: the items' UPDATE and their jobs' counters in one statement (a data-modifying
    CTE), the ids as one array parameter: one round trip and one prepared plan, whatever the number of items.
    Built once (the scheduler runs it every pass); parameters `ids`, `now`."""
    moved = (
        update(Item)
        .where(Item.id == any_(ids_param("ids")), Item.state == State.pending)
        .values(state=State.queued, queued_at=bindparam("now"))
        .returning(Item.job_id)
        .cte("moved")
    )
    per_job = select(moved.c.job_id, func.count().label("n")).group_by(moved.c.job_id).subquery("per_job")
    return (
        update(Job)
        .where(Job.id == per_job.c.job_id)
        .values(pending=Job.pending - per_job.c.n)
        .execution_options(synchronize_session=False)
    )


def claim(
    session: Session,
    job_id: int,
    item_ids: Sequence[int],
    *,
    node: str,
    lease_seconds: int,
    max_attempts: int,
    busy: Collection[int] = (),
) -> list[ClaimedItem]:
    """Take the chunk's unfinished, unheld items: running, attempt + 1, leased to this process.

    Skipped: finished items, items another live holder leases (a duplicate message), and `busy` items (this
    process is still storing them). Items whose attempts are used up are failed instead."""
    now = utcnow()
    rows = session.scalars(
        select(Item)
        .where(Item.id.in_(item_ids), Item.job_id == job_id, Item.state.in_(ACTIVE))
        .order_by(Item.id)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    left_pending = gave_up = 0
    for item in rows:
        if item.id in busy or (item.not_before is not None and item.not_before > now):
            continue  # still storing it here, or backing off after an infrastructure failure
        left_pending += item.state == State.pending
        held = item.state == State.running and item.lease_expires is not None and item.lease_expires > now
        if held and not reclaimable(item.worker, node):
            continue
        if item.attempts >= max_attempts:
            _give_up(item, now, f"gave up after {item.attempts} attempts; last error: {item.error or 'worker lost'}")
            gave_up += 1
            continue
        item.state = State.running
        item.attempts += 1
        item.lease_expires = now + timedelta(seconds=lease_seconds)
        item.worker = holder_name(node)
        item.started_at = now
        params = GenerationParams.from_json(item.params)
        claimed.append(detached(ClaimedItem, item, job=item.job_id, key=item.item_key, params=params))
    _backlog(session, {job_id: -left_pending})
    _tally(session, "failed", {job_id: gave_up})
    return claimed


def renew_lease(session: Session, item_ids: Sequence[int], *, node: str, lease_seconds: int) -> None:
    """Extend the lease of items this process still holds (handed to the upload threads)."""
    if item_ids:
        session.execute(
            update(Item)
            .where(Item.id.in_(item_ids), Item.state == State.running, Item.worker == holder_name(node))
            .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds))
        )


def finish(session: Session, item_id: int, outcome: Finish) -> None:
    """running (or any unfinished state) → succeeded, or blocked with its reason.

    Idempotent: a second finish of the same item adds no image or candidate row and changes nothing. A
    cancelled item stays cancelled and gets no rows: its job was called off while this image was made."""
    now = utcnow()
    before = session.scalar(select(Item.state).where(Item.id == item_id).with_for_update())
    if before == State.cancelled:
        return
    if outcome.image is not None:
        insert_ignore(session, Image, [{"item_id": item_id, "created": now, **outcome.image.row()}], ["item_id"])
    insert_ignore(
        session,
        Candidate,
        [{"item_id": item_id, "created": now, **c.row()} for c in outcome.candidates],
        ["item_id", "candidate"],
    )
    state = {"state": State.blocked, "block_reason": outcome.blocked} if outcome.blocked else {"state": State.succeeded}
    ended = session.execute(
        update(Item)
        .where(Item.id == item_id, Item.state.not_in([State.succeeded, State.blocked, State.cancelled]))
        .values(**state, finished_at=now, lease_expires=None, error=None, not_before=None, infra_since=None)
        .returning(Item.job_id, Item.item_key, Item.variant, Item.inputs)
    ).first()
    if ended is not None:
        if before == State.pending:  # a late finish of an item that went back to the backlog
            _backlog(session, {ended.job_id: -1})
        if outcome.image is not None and not outcome.blocked:
            _record_scores(session, item_id, ended.job_id, outcome.image.scores)
        _ended(session, item_id, ended, State.blocked if outcome.blocked else State.succeeded, outcome.blocked)


def fail(
    session: Session,
    item_id: int,
    error: str,
    *,
    node: str,
    max_attempts: int,
    final: bool = False,
    infra: bool = False,
) -> bool:
    """running → pending (attempts left; True: the scheduler dispatches it again) or → failed (attempts used
    up, or `final`: no attempt could succeed). An item another process has claimed since (after our lease ran
    out) is theirs to finish: nothing changes."""
    item = session.get(Item, item_id)
    if item is None or item.state != State.running or item.worker != holder_name(node):
        return False
    now = utcnow()
    item.error = error[-4000:]
    item.lease_expires = None
    item.not_before = None
    if not infra:  # an item failure ends an outage streak; an infrastructure one past its budget does not
        item.infra_since = None
    if final or item.attempts >= max_attempts:
        _give_up(item, now, item.error)
        return False
    item.state = State.pending
    _backlog(session, {item.job_id: 1})
    return True


def back_off(session: Session, item_id: int, error: str, *, node: str, budget: float, base: float, cap: float) -> bool:
    """running → pending with its attempt given back and `not_before` set (exponential, jittered): an
    infrastructure failure (storage, database, broker) says nothing about the item. The scheduler dispatches
    it once `not_before` has passed. False (nothing changed: use `fail`) when the item is not ours, or has
    been failing this way for longer than `budget` seconds."""
    item = session.get(Item, item_id)
    if item is None or item.state != State.running or item.worker != holder_name(node):
        return False
    now = utcnow()
    if (now - (item.infra_since or now)).total_seconds() >= budget:
        return False  # a budget of 0 never backs off
    item.infra_since = item.infra_since or now
    item.not_before = now + faults.backoff(item.infra_since, now, base=base, cap=cap)
    item.attempts = max(0, item.attempts - 1)
    item.error = (
        f"infrastructure failure, retrying after {item.not_before.isoformat(timespec='seconds')}: " + error[-3800:]
    )
    item.state, item.lease_expires = State.pending, None
    _backlog(session, {item.job_id: 1})
    return True


def block(session: Session, item_id: int, reason: dict[str, Any], *, node: str) -> bool:
    """running (held by this process) → blocked, never generated: the worker's own prompt check refused it."""
    ended = session.execute(
        update(Item)
        .where(Item.id == item_id, Item.state == State.running, Item.worker == holder_name(node))
        .values(state=State.blocked, block_reason=reason, finished_at=utcnow(), lease_expires=None, error=None)
        .returning(Item.job_id, Item.item_key, Item.variant, Item.inputs)
    ).first()
    if ended is None:
        return False
    _ended(session, item_id, ended, State.blocked, reason)
    return True


def _ended(session: Session, item_id: int, ended: Row[int, str, int, Any], state: State, reason: Any) -> None:
    """The `item.ended` event of an item that just ended; `ended` is the RETURNING row (job, key, variant, inputs)."""
    events.item_ended(
        session,
        item_id=item_id,
        job_id=ended.job_id,
        key=ended.item_key,
        variant=ended.variant,
        state=state,
        reason=reason,
        inputs=ended.inputs,
    )


def requeue_lost(
    session: Session,
    *,
    max_attempts: int,
    requeue_after: int,
    queued_timeout: int,
    empty_models: Collection[str],
    node: str | None = None,
) -> Recovery:
    """Put lost work back in the backlog (`pending`, for the scheduler to dispatch again), or fail it when its
    attempts are used up:

    - running items whose lease expired, or whose holder is a dead process of `node`;
    - queued items older than `requeue_after` s whose model's queue is empty (`empty_models`: the message is
      gone), or older than `queued_timeout` s whatever the queue holds.

    Pending items are the backlog, never "lost": the scheduler dispatches them."""
    now = utcnow()
    stale_queued = or_(
        Item.queued_at < now - timedelta(seconds=queued_timeout),
        and_(Item.queued_at < now - timedelta(seconds=requeue_after), Job.model.in_(list(empty_models))),
    )
    recovery = Recovery()
    back: Counter[int] = Counter()
    lost: Counter[int] = Counter()  # running items: an attempt ended (a queued item's lost message used none)
    failed: Counter[int] = Counter()
    candidates = session.execute(
        select(Item, Job.model)
        .join(Job)
        .where(or_(Item.state == State.running, and_(Item.state == State.queued, stale_queued)))
        .with_for_update(skip_locked=True, of=Item)
    ).all()
    for item, model in candidates:
        if item.state == State.running:
            expired = item.lease_expires is None or item.lease_expires <= now
            if not (expired or (node is not None and reclaimable(item.worker, node))):
                continue
            if item.attempts >= max_attempts:
                _give_up(
                    item,
                    now,
                    f"worker lost on attempt {item.attempts} of {max_attempts} (holder {item.worker}); gave up",
                )
                recovery.failed += 1
                failed[item.job_id] += 1
                continue
            item.error = f"worker lost on attempt {item.attempts} (holder {item.worker}); re-queued"
            lost[item.job_id] += 1
        item.state, item.lease_expires = State.pending, None
        recovery.requeued[model] = recovery.requeued.get(model, 0) + 1
        back[item.job_id] += 1
    _backlog(session, back)
    _tally(session, "retried", lost)
    _tally(session, "failed", failed)
    return recovery


def approve(
    session: Session,
    item: Item,
    image: Image,
    *,
    public_key: str,
    sha256: str,
    size: int,
    by: str,
    note: str | None = None,
) -> None:
    """blocked (by the image checker) → succeeded, its image now public; records who approved it and when."""
    if item.state != State.blocked:
        raise TransitionError(f"item {item.id} is {item.state.value}, not blocked")
    now = utcnow()
    image.storage_key, image.visibility, image.approved_by, image.approved_at = public_key, "public", by, now
    image.sha256, image.bytes = sha256, size
    item.state, item.error = State.succeeded, None
    _record_scores(session, item.id, item.job_id, image.scores or {})
    item.block_reason = {
        **(item.block_reason or {}),
        "approved_by": by,
        "approved_at": now.isoformat(timespec="seconds"),
        **({"approval_note": note} if note else {}),
    }


def _record_scores(session: Session, item_id: int, job_id: int, scores: Mapping[str, Any]) -> None:
    """The numeric scores of an item that just succeeded, as `image_scores` rows (status reads their index)."""
    rows = [
        {"item_id": item_id, "name": name, "job_id": job_id, "value": float(value)}
        for name, value in scores.items()
        if isinstance(value, int | float) and math.isfinite(value) and len(name) <= 64
    ]
    insert_ignore(session, ImageScore, rows, ["item_id", "name"])


def cancel(session: Session, job_id: int) -> dict[State, int]:
    """pending, queued and running items of the job → cancelled; returns how many left each state.

    Running items are discarded, not waited for: their worker's `finish` records nothing for a cancelled item
    and its `fail` does not re-queue it (it no longer holds a running item), and a message naming cancelled
    items claims nothing (`claim` takes only active states). At most the chunk on each GPU is wasted."""
    left: dict[State, int] = {}
    for state in (State.pending, State.queued, State.running):
        result = session.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state == state)
            .values(state=State.cancelled, finished_at=utcnow(), lease_expires=None)
            .execution_options(synchronize_session=False)
        )
        left[state] = int(getattr(result, "rowcount", 0) or 0)
    _backlog(session, {job_id: -left[State.pending]})
    _tally(session, "cancelled", {job_id: sum(left.values())})
    if any(left.values()):
        events.touch(session, job_id)  # the job may be over now: `job.finished` is settled before the commit
    return left


RETRYABLE_BLOCKS = ("image", "prompt")


def retry(
    session: Session, job_id: int, *, failed: bool = True, blocked_by: str | None = None, refused: Collection[int] = ()
) -> list[QueuedItem]:
    """failed items (with `failed`) and items blocked at `blocked_by` ("image" or "prompt") → pending with
    fresh attempts, their seeds and keys unchanged; returns them for the caller to publish and mark queued.

    An image-blocked item loses its quarantined image and candidate rows (the quarantined object stays in
    storage), so the new attempt can record its own. `refused`: prompt-blocked items whose prompt the current
    filter still refuses; they stay blocked (the caller checks, the contract does not run the filter)."""
    if blocked_by is not None and blocked_by not in RETRYABLE_BLOCKS:
        raise TransitionError(f"blocked_by must be one of {', '.join(RETRYABLE_BLOCKS)}, got {blocked_by!r}")
    wanted = []
    if failed:
        wanted.append(Item.state == State.failed)
    if blocked_by is not None:
        wanted.append(Item.state == State.blocked)
    if not wanted:
        return []
    chosen: list[Item] = []
    for item in session.scalars(
        select(Item).where(Item.job_id == job_id, or_(*wanted)).order_by(Item.id).with_for_update(skip_locked=True)
    ):
        if item.state == State.blocked:
            reason = item.block_reason or {}
            if reason.get("stage") != blocked_by or item.id in refused or reason.get("approved_by"):
                continue
        chosen.append(item)
    blocked_ids = [item.id for item in chosen if item.state == State.blocked]
    for start in range(0, len(blocked_ids), _IN_BATCH):
        batch = blocked_ids[start : start + _IN_BATCH]
        session.execute(delete(Candidate).where(Candidate.item_id.in_(batch)))
        session.execute(delete(Image).where(Image.item_id.in_(batch)))
    _backlog(session, {job_id: len(chosen)})
    for item in chosen:
        item.state, item.attempts, item.error, item.block_reason = State.pending, 0, None, None
        item.lease_expires = item.worker = item.started_at = item.finished_at = None
    return [
        QueuedItem(item=item.id, job=item.job_id, params=GenerationParams.from_json(item.params)) for item in chosen
    ]


def _give_up(item: Item, now: datetime, error: str) -> None:
    """→ failed: the item's attempts are used up."""
    item.state, item.finished_at, item.lease_expires = State.failed, now, None
    item.error = error
    session = Session.object_session(item)
    assert session is not None
    events.item_ended(
        session,
        item_id=item.id,
        job_id=item.job_id,
        key=item.item_key,
        variant=item.variant,
        state=State.failed,
        error=error,
        inputs=item.inputs,
    )
