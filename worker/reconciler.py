"""Put back in the backlog the work the broker or a worker may have lost. The ledger, not the queue, decides:

- running items whose lease expired (a worker died or hung), or held by a dead process of this node;
- queued items older than PIXELMILL_REQUEUE_AFTER while their model's queue is empty (the message is gone),
  or older than PIXELMILL_QUEUED_TIMEOUT whatever the queue holds.

They go back to `pending`; the scheduler (contract/scheduling.py) is the one place that dispatches, so recovered
work takes its fair-share turn like any other. Pending items are the backlog, not stranded work. Duplicated
messages are harmless (claims skip finished and held items). Attempts are counted at claim time, so a lost
message never uses one up. What it puts back or gives up is tallied in the ledger by the transition and counted in
`pixelmill_items_total` by the scheduler's leader (`pixelmill reconcile` is a short command nobody scrapes).

`ReconcilerThread`: the reconciler runs on its own thread of the worker's main process, so a ledger that blocks
for the busy timeout never stalls Celery's timer (which also fires the time limits: a blocked timer fired stale
ones and replaced a healthy child). Each pass also restarts a dead embedded broker (`heal_broker`) and sweeps
temp files left by interrupted local stores (worker/temp_sweep.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery
from sqlalchemy import select

from contract import transitions
from contract.ledger import Ledger
from contract.queue import queue_depth, queue_for
from contract.schema import Item, Job, State, utcnow
from contract.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Report:
    requeued: int = 0
    failed: int = 0


def reconcile(ledger: Ledger, app: Celery, settings: Settings, *, node: str | None = None) -> Report:
    """One pass: find which models' queues are empty, then put lost items back to pending in the ledger."""
    recent = utcnow() - timedelta(seconds=settings.requeue_after)
    with ledger.session(readonly=True) as session:  # whose queues could have lost messages?
        models = session.scalars(
            select(Job.model).distinct().join(Item).where(Item.state == State.queued, Item.queued_at < recent)
        ).all()
    empty = [m for m in models if queue_depth(app, queue_for(m)) == 0]
    with ledger.session() as session:
        recovery = transitions.requeue_lost(
            session,
            max_attempts=settings.max_attempts,
            requeue_after=settings.requeue_after,
            queued_timeout=settings.queued_timeout,
            empty_models=empty,
            node=node,
        )
    report = Report(requeued=sum(recovery.requeued.values()), failed=recovery.failed)
    if report.requeued or report.failed:
        log.warning("reconciled", extra={"requeued": report.requeued, "failed": report.failed, "node": node or "-"})
    return report


class ReconcilerThread:
    """The reconciler's loop on its own daemon thread: at start, then every `interval` seconds."""

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self.tick, self.interval = tick, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixelmill-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("reconcile failed; will try again")
            if self._stop.wait(self.interval):
                return


def heal_broker(settings: Settings) -> bool:
    """Restart the embedded Redis from its append-only file if it died (under its start lock, so several
    processes finding it dead start one). True if it was restarted."""
    if not settings.embedded_broker:
        return False
    from contract.broker import EmbeddedRedis

    broker = EmbeddedRedis(settings.data_path)
    if broker.is_running():
        return False
    log.warning("embedded broker not answering; restarting it", extra={"socket": str(broker.socket)})
    broker.ensure_running()
    return True
