"""Worker-side ledger transitions: claim items with a lease, finish them idempotently, retry or give up.

A holder is `<node name>:<pid>`. An item held by a process of this same node that no longer exists (a
killed child, a restarted worker) is reclaimed at once instead of waiting for its lease to run out.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pixelmill.db import insert_ignore
from pixelmill.ledger import ACTIVE, Candidate, Image, Item, State, utcnow


def holder_name(node: str) -> str:
    return f"{node}:{os.getpid()}"


def holder_is_dead(holder: str | None, node: str) -> bool:
    """True when `holder` was a process on this node that is gone, or is this process (whose earlier task
    ended; `claim` excludes the items this process is still storing)."""
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


def claim(session: Session, job_id: int, item_ids: Sequence[int], *, node: str, lease_seconds: int,
          max_attempts: int, busy: Collection[int] = ()) -> list[Item]:
    """Take the chunk's unfinished, unheld items; items past max_attempts are failed instead. `busy`: items
    this process still holds (being stored)."""
    now = utcnow()
    rows = session.scalars(
        select(Item)
        .where(Item.id.in_(item_ids), Item.job_id == job_id, Item.state.in_(ACTIVE))
        .order_by(Item.id)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for item in rows:
        if item.id in busy:
            continue  # this process is still storing it
        held = item.state == State.running and item.lease_expires is not None and item.lease_expires > now
        if held and not holder_is_dead(item.worker, node):
            continue  # another live worker has it: this message is a duplicate
        if item.attempts >= max_attempts:
            item.state, item.finished_at, item.lease_expires = State.failed, now, None
            item.error = f"gave up after {item.attempts} attempts; last error: {item.error or 'worker lost'}"
            continue
        item.state = State.running
        item.attempts += 1
        item.lease_expires = now + timedelta(seconds=lease_seconds)
        item.worker = holder_name(node)
        item.started_at = now
        claimed.append(item)
    return claimed


def renew_lease(session: Session, item_ids: Sequence[int], *, node: str, lease_seconds: int) -> None:
    """Extend the lease of items this process still holds (handed to the upload threads)."""
    if item_ids:
        session.execute(update(Item)
                        .where(Item.id.in_(item_ids), Item.state == State.running,
                               Item.worker == holder_name(node))
                        .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds)))


def record_finish(session: Session, item_id: int, image: dict[str, Any] | None, candidates: Sequence[dict[str, Any]],
                  *, blocked: dict[str, Any] | None = None) -> None:
    """Succeeded, or blocked with its reason when `blocked` is given (`image`: its quarantined copy, or None).

    Idempotent: a second finish of the same item adds no image or candidate row and changes nothing."""
    now = utcnow()
    if image is not None:
        insert_ignore(session, Image.__table__, [{"item_id": item_id, "created": now, **image}], ["item_id"])
    insert_ignore(session, Candidate.__table__, [{"item_id": item_id, "created": now, **c} for c in candidates],
                  ["item_id", "candidate"])
    state = {"state": State.blocked, "block_reason": blocked} if blocked else {"state": State.succeeded}
    session.execute(
        update(Item)
        .where(Item.id == item_id, Item.state.not_in([State.succeeded, State.blocked]))
        .values(**state, finished_at=now, lease_expires=None, error=None)
    )


def record_failure(session: Session, item_id: int, error: str, *, node: str, max_attempts: int) -> bool:
    """Mark one item's failure; True if it should be published again (attempts left). An item another
    process has claimed since (after our lease ran out) is theirs to finish."""
    item = session.get(Item, item_id)
    if item is None or item.state != State.running or item.worker != holder_name(node):
        return False
    now = utcnow()
    item.error = error[-4000:]
    item.lease_expires = None
    if item.attempts >= max_attempts:
        item.state, item.finished_at = State.failed, now
        return False
    item.state, item.queued_at = State.queued, now
    return True
