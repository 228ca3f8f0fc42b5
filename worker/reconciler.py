"""Re-publish work the broker may have lost. The ledger, not the queue, decides what is outstanding:

- running items whose lease expired (a worker died or hung), or held by a dead process of this node;
- pending items older than PIXELMILL_REQUEUE_AFTER (a producer died between insert and publish);
- queued items older than PIXELMILL_REQUEUE_AFTER while their model's queue is empty (the message is gone),
  or older than PIXELMILL_QUEUED_TIMEOUT whatever the queue holds.

Duplicated messages are harmless (claims skip finished and held items), so erring towards re-publishing
is safe. Attempts are counted at claim time, so a lost message never uses one up.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import and_, or_, select

from pixelmill.db import Ledger
from pixelmill.ledger import Item, Job, State, utcnow
from pixelmill.queue import plan_chunks, publish, queue_depth, queue_for
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
    with ledger.session(readonly=True) as session:  # whose queues could have lost messages?
        models = session.scalars(select(Job.model).distinct().join(Item)
                                 .where(Item.state == State.queued, Item.queued_at < recent)).all()
    empty = [m for m in models if queue_depth(app, queue_for(m)) == 0]
    stale_queued = or_(Item.queued_at < now - timedelta(seconds=settings.queued_timeout),
                       and_(Item.queued_at < recent, Job.model.in_(empty)))
    report = Report()
    outstanding: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
    with ledger.session() as session:
        candidates = session.execute(
            select(Item, Job.model).join(Job).where(or_(
                Item.state == State.running,
                and_(Item.state == State.pending, Item.created < recent),
                and_(Item.state == State.queued, stale_queued),
            )).with_for_update(skip_locked=True, of=Item)
        ).all()
        for item, model in candidates:
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
            outstanding[model].append((item.id, item.job_id, dict(item.params)))
    for model, items in outstanding.items():
        report.requeued += len(items)
        report.messages += publish(app, plan_chunks(items, settings.batch_size), queue_for(model))
    if report.requeued or report.failed:
        log.warning("reconciled", extra={"requeued": report.requeued, "failed": report.failed,
                                         "messages": report.messages, "node": node or "-"})
    return report
