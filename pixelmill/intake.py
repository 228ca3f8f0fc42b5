"""The intake consumer (`pixelmill intake`): a Celery worker for the intake queues whose one task,
`pixelmill.submit`, takes one v1 request (producer/request_v1.py `intake`), plus the outbox dispatcher on a
thread beside it.

The intake proves a request's tenant by the queue it arrived on, never by the message: it consumes
`pixelmill.intake.<tenant>` for every active tenant (and `pixelmill.intake` for the tenant `default`), picks up
tenants added later every PIXELMILL_INTAKE_TENANT_REFRESH seconds, and the operator lets each tenant's broker
user write only its own queue (docs/operations.md, "Broker ACLs"). pixelmill/intake_broker.py makes the queue a
fact from the broker, and bounds a message's bytes and depth before it is decoded.

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
from sqlalchemy import select
from sqlalchemy.exc import OperationalError as LedgerError

from contract import logs
from contract.ledger import Ledger
from contract.outbox import Dispatcher
from contract.queue import make_celery, serve_only
from contract.scheduling import Scheduler, SchedulerThread
from contract.schema import Tenant
from contract.settings import get_settings, is_amqp
from contract.tenants import TenantInfo, find_tenant
from pixelmill.intake_broker import Refused, arrival_queue, install, tenant_name_of
from producer.request_v1 import INTAKE_QUEUE, TASK_SUBMIT, answer_failure, intake, reject_unread

log = logging.getLogger(__name__)

settings = get_settings()
install(settings.intake_max_message_bytes, settings.intake_max_depth)
app = make_celery(settings, main="pixelmill.intake")
app.conf.task_default_queue = INTAKE_QUEUE
serve_only(app, TASK_SUBMIT)  # no built-in task (celery.group would republish anywhere as the intake)
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


def intake_queues(session: Any) -> list[str]:
    """The queues to consume: `pixelmill.intake` (tenant `default`) and `pixelmill.intake.<name>` per active
    tenant."""
    names = session.scalars(select(Tenant.name).where(Tenant.revoked.is_(None)).order_by(Tenant.name))
    return [INTAKE_QUEUE, *(f"{INTAKE_QUEUE}.{name}" for name in names)]


def current_intake_queues() -> list[str]:
    """The intake queues to consume now (`pixelmill intake` starts with these)."""
    with ledger().session(readonly=True) as session:
        return intake_queues(session)


def tenant_of(delivery_info: dict[str, Any] | None) -> TenantInfo | None:
    """The active tenant whose intake queue the message was taken from, or None."""
    name = tenant_name_of(arrival_queue(delivery_info))
    if name is None:
        return None
    with ledger().session(readonly=True) as session:
        return find_tenant(session, name)


def _one_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Refused | None]:
    """The request of a task call, or why the call is no request (and the reply queue it names, if any)."""
    if len(args) == 1 and not kwargs:
        return args[0], args[0] if isinstance(args[0], Refused) else None
    named = next((a.get("reply_to") for a in (*args, *kwargs.values()) if isinstance(a, dict)), None)
    problem = (
        f"request: the task {TASK_SUBMIT} takes exactly one argument, the v1 request "
        f"(got {len(args)} arguments and {len(kwargs)} keyword arguments)"
    )
    return None, Refused(problem, named if isinstance(named, str) else None)


@app.task(name=TASK_SUBMIT, bind=True, max_retries=None)
def submit(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One v1 request, of the tenant whose queue it came on. A bad request is answered with `job.rejected`, never
    retried; an unreachable ledger or broker is retried (the request did nothing wrong). A message on no active
    tenant's queue creates nothing and is answered nowhere."""
    tenant: TenantInfo | None = None
    message: Any = None
    try:
        tenant = tenant_of(self.request.delivery_info)
        if tenant is None:
            queue = arrival_queue(self.request.delivery_info)
            log.warning("intake message on no active tenant's queue; dropped", extra={"queue": queue})
            return {"status": "refused", "job": None, "problems": ["no tenant"]}
        message, refused = _one_request(args, kwargs)
        if refused is not None:
            result = reject_unread(ledger(), tenant, str(self.request.id), refused.reply_to, refused.problem)
            return {"status": result.status, "job": None, "problems": result.problems}
        rid = message.get("request_id") if isinstance(message, dict) else None
        log.info("intake started", extra={"request_id": rid, "tenant": tenant.name})
        result = intake(settings, ledger(), message, tenant=tenant)
    except (BrokerError, LedgerError) as exc:
        log.warning("intake could not reach the ledger or broker; retrying", extra={"error": str(exc)[:200]})
        raise self.retry(countdown=min(60, 2 ** min(self.request.retries, 6))) from exc
    except Exception as exc:  # a bug, not the request: still tell the caller how it ended, never drop it silently
        log.exception("intake failed")
        if tenant is None:
            return {"status": "refused", "job": None, "problems": ["no tenant"]}
        result = answer_failure(settings, ledger(), message, exc, tenant=tenant)
    return {"status": result.status, "job": result.job, "problems": result.problems}


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    logs.configure(loglevel or logging.INFO)


class DispatchStep(bootsteps.StartStopStep):
    """The outbox dispatcher on a thread of the intake process (off with `pixelmill intake --no-dispatch`), and
    the scheduler (contract/scheduling.py): the intake may hold its lease as any worker parent may."""

    def __init__(self, parent: Any, dispatch: bool = True, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.dispatcher: Dispatcher | None = None
        self.scheduler: SchedulerThread | None = None

    def start(self, worker: Any) -> None:
        if worker.app.conf.get("pixelmill_dispatch", True):
            self.dispatcher = Dispatcher(settings, Ledger(settings), app)
            self.dispatcher.start()
        self.scheduler = SchedulerThread(Scheduler(settings, Ledger(settings), app))
        self.scheduler.start()

    def stop(self, worker: Any) -> None:
        for thread in (self.scheduler, self.dispatcher):  # the scheduler first: it may still publish
            if thread is not None:
                thread.stop()


class TenantQueues(bootsteps.StartStopStep):
    """Every PIXELMILL_INTAKE_TENANT_REFRESH seconds: consume the intake queue of a tenant added since, stop
    consuming that of a revoked one (its waiting messages stay in the broker)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer: Any = None

    def start(self, consumer: Any) -> None:
        self.timer = consumer.timer.call_repeatedly(settings.intake_tenant_refresh, self.refresh, (consumer,))

    def refresh(self, consumer: Any) -> None:
        try:
            with ledger().session(readonly=True) as session:
                wanted = intake_queues(session)
        except LedgerError as exc:
            log.warning("could not read the tenants; keeping the intake queues", extra={"error": str(exc)[:200]})
            return
        consuming = set(consumer.app.amqp.queues.consume_from or ())
        for queue in sorted(set(wanted) - consuming):
            log.info("consuming a new tenant's intake queue", extra={"queue": queue})
            consumer.add_task_queue(queue)
        for queue in sorted(consuming - set(wanted)):
            log.info("tenant revoked: no longer consuming its intake queue", extra={"queue": queue})
            consumer.cancel_task_queue(queue)

    def stop(self, consumer: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


app.steps["worker"].add(DispatchStep)
app.steps["consumer"].add(TenantQueues)
