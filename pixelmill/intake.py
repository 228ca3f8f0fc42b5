"""The intake consumer (`pixelmill intake`): a Celery worker for the queue `pixelmill.intake` whose one task,
`pixelmill.submit`, takes one v1 request (producer/request_v1.py `intake`), plus the outbox dispatcher on a
thread beside it.

It runs on the producer side (no torch, no GPU) with the solo pool: a request is validated and written by the
process that received it, and `acks_late` + `reject_on_worker_lost` mean a process killed mid-request leaves
the message to be delivered again (after PIXELMILL_INTAKE_VISIBILITY_TIMEOUT on Redis). The request_id makes
that redelivery harmless: the job is written once, in one transaction, or not at all.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps, signals
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as LedgerError

from contract import logs
from contract.ledger import Ledger
from contract.outbox import Dispatcher
from contract.queue import make_celery
from contract.settings import get_settings, is_amqp
from contract.tenants import DEFAULT_TENANT_ID, TenantInfo, tenant_by_id
from producer.request_v1 import INTAKE_QUEUE, TASK_SUBMIT, answer_failure, intake

log = logging.getLogger(__name__)

settings = get_settings()
app = make_celery(settings, main="pixelmill.intake")
app.conf.task_default_queue = INTAKE_QUEUE
if not is_amqp(app.conf.broker_url):
    # A request is short: redeliver one whose process died after minutes, not after the GPU batches' hour.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "visibility_timeout": settings.intake_visibility_timeout,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }

_ledger: Ledger | None = None


def ledger() -> Ledger:
    global _ledger
    if _ledger is None:
        _ledger = Ledger(settings)
    return _ledger


def tenant() -> TenantInfo:
    """Whose requests this queue carries: the tenant `default` (made by migration 0011)."""
    with ledger().session(readonly=True) as session:
        found = tenant_by_id(session, DEFAULT_TENANT_ID)
    assert found is not None, "migration 0011 makes the tenant default"
    return found


@app.task(name=TASK_SUBMIT, bind=True, max_retries=None)
def submit(self: Any, message: Any) -> dict[str, Any]:
    """One v1 request. A bad request is answered with `job.rejected`, never retried; an unreachable ledger or
    broker is retried (the request did nothing wrong)."""
    log.info("intake started", extra={"request_id": message.get("request_id") if isinstance(message, dict) else None})
    try:
        result = intake(settings, ledger(), message, tenant=tenant())
    except (BrokerError, LedgerError) as exc:
        log.warning("intake could not reach the ledger or broker; retrying", extra={"error": str(exc)[:200]})
        raise self.retry(countdown=min(60, 2 ** min(self.request.retries, 6))) from exc
    except Exception as exc:  # a bug, not the request: still tell the caller how it ended, never drop it silently
        log.exception("intake failed")
        result = answer_failure(settings, ledger(), message, exc, tenant=tenant())
    return {"status": result.status, "job": result.job, "problems": result.problems}


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    logs.configure(loglevel or logging.INFO)


class DispatchStep(bootsteps.StartStopStep):
    """The outbox dispatcher on a thread of the intake process (off with `pixelmill intake --no-dispatch`)."""

    def __init__(self, parent: Any, dispatch: bool = True, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.dispatcher: Dispatcher | None = None

    def start(self, worker: Any) -> None:
        if worker.app.conf.get("pixelmill_dispatch", True):
            self.dispatcher = Dispatcher(settings, Ledger(settings), app)
            self.dispatcher.start()

    def stop(self, worker: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()


app.steps["worker"].add(DispatchStep)
