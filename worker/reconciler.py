"""Re-publish work the broker may have lost. The ledger, not the queue, decides what is outstanding:

- running items whose lease expired (a worker died or hung), or held by a dead process of this node;
- pending items older than PIXELMILL_REQUEUE_AFTER (a producer died between insert and publish);
- queued items older than PIXELMILL_REQUEUE_AFTER while the queue is empty (their message is gone),
  or older than PIXELMILL_QUEUED_TIMEOUT whatever the queue holds.

Duplicated messages are harmless (claims skip finished and held items), so erring towards re-publishing
is safe. Attempts are counted at claim time, so a lost message never uses one up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import and_, or_, select

from pixelmill.db import Ledger
from pixelmill.ledger import Item, State, utcnow
from pixelmill.queue import plan_chunks, publish, queue_depth
from pixelmill.settings import Settings
from worker.claims import holder_is_dead

log = logging.getLogger(__name__)


@dataclass
class Report:
    requeued: int = 0
    failed: int = 0
    messages: int = 0


def reconcile(ledger: Ledger, app: Celery, settings: Settings, *, node: str | None = None) -> Report:
    now = utcnow()
    recent = now - timedelta(seconds=settings.requeue_after)
    queue_empty = queue_depth(app) == 0
    stale_queued = Item.queued_at < now - timedelta(seconds=settings.queued_timeout)
    if queue_empty:
        stale_queued = or_(stale_queued, Item.queued_at < recent)
    report = Report()
    outstanding: list[tuple[int, int, dict[str, Any]]] = []
    with ledger.session() as session:
        candidates = session.scalars(
            select(Item).where(or_(
                Item.state == State.running,
                and_(Item.state == State.pending, Item.created < recent),
                and_(Item.state == State.queued, stale_queued),
            )).with_for_update(skip_locked=True)
        ).all()
        for item in candidates:
            if item.state == State.running:
                expired = item.lease_expires is None or item.lease_expires <= now
                if not (expired or (node is not None and holder_is_dead(item.worker, node))):
                    continue
                if item.attempts >= settings.max_attempts:
                    item.state, item.finished_at, item.lease_expires = State.failed, now, None
                    item.error = f"worker lost on attempt {item.attempts} of {settings.max_attempts}" \
                                 f" (holder {item.worker}); gave up"
                    report.failed += 1
                    continue
                item.error = f"worker lost on attempt {item.attempts} (holder {item.worker}); re-queued"
            item.state, item.queued_at, item.lease_expires = State.queued, now, None
            outstanding.append((item.id, item.job_id, dict(item.params)))
    report.requeued = len(outstanding)
    if outstanding:
        report.messages = publish(app, plan_chunks(outstanding, settings.batch_size))
    if report.requeued or report.failed:
        log.warning("reconciled", extra={"requeued": report.requeued, "failed": report.failed,
                                         "messages": report.messages, "node": node or "-"})
    return report
