"""What `submit` does once its job is written: warn when no live worker serves the job's model (checked in a
thread while the submit works), and with `--wait` follow the job to its end and turn the outcome into an exit
code (0 ok, 3 some failed, 4 cancelled or --timeout, 5 drifted with --fail-on-drift)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from contract.settings import get_settings
from pixelmill.cli.common import err
from pixelmill.cli.status import watch_job

log = logging.getLogger(__name__)

# `submit --wait` exit codes: the job finished with every item succeeded or blocked / some failed /
# cancelled or still unfinished at --timeout / the finished run drifted (--fail-on-drift).
EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_DRIFT = 0, 3, 4, 5


def unserved_warning(ledger: Any, model: str, *, timeout: float = 1.0) -> str | None:
    """A warning when no live worker serves `model`'s queue: the ledger's heartbeats show none ready or still
    loading it (`producer.status.no_worker_line`), and none answers Celery's `active_queues` within `timeout` s.
    Workers may start later: a warning, not a refusal."""
    from contract.queue import make_celery, queue_for  # Celery and SQLAlchemy: only once a job is submitted
    from contract.schema import utcnow
    from producer.status import no_worker_line

    settings = get_settings()
    queue = queue_for(model)
    with ledger.session(readonly=True) as session:
        if no_worker_line(session, model, since=utcnow(), stale_after=settings.worker_stale_after) is None:
            return None
    try:
        replies = make_celery(settings).control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001 (an answer we cannot get is no answer)
        replies = {}
    if any(q.get("name") == queue for queues in replies.values() for q in queues or []):
        return None
    return (
        f"no live worker serves this job's model queue {queue}; its items wait until one does: "
        f"pixelmill worker --model {model}"
    )


class UnservedCheck:
    """`unserved_warning` in a thread started with the submit: its broadcast waits up to a second for replies,
    which the submit's own work then hides instead of adding."""

    def __init__(self, ledger: Any, model: str) -> None:
        self.ledger, self.model = ledger, model
        self.warning: str | None = None
        self._thread = threading.Thread(target=self._run, name="unserved-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.warning = unserved_warning(self.ledger, self.model)
        except Exception:  # noqa: BLE001 (a warning we cannot work out is no warning)
            log.debug("unserved check failed", exc_info=True)

    def result(self, timeout: float | None = None) -> str | None:
        self._thread.join(timeout)
        return self.warning


def after_submit(ledger: Any, check: UnservedCheck, *, queued: bool) -> None:
    """Record the absolute data directory in the ledger, and warn (stderr) when nobody serves the model."""
    from contract.ledger import record_meta  # SQLAlchemy

    with ledger.session() as session:
        record_meta(session, "data_dir", str(get_settings().data_path))
    warning = check.result() if queued else None  # nothing queued: nothing waits for a worker (nor for its answer)
    if warning:
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)


def wait_for(
    ledger: Any, job: int, *, tenant_id: int, timeout: float | None, interval: float = 2.0, report_every: float = 30.0
) -> tuple[int, Any]:
    """Block until the job has nothing left to do (or `timeout` s pass), showing progress (`watch_job`: a bar on
    a terminal, a line every `report_every` s in a pipe); the `submit --wait` exit code and the last status."""
    status = watch_job(ledger, job, interval, timeout, tenant_id=tenant_id, report_every=report_every)
    if not status.finished or status.cancelled:
        return EXIT_CANCELLED, status
    return (EXIT_FAILED if status.failed else EXIT_OK), status


def wait_and_report(
    ledger: Any,
    job: int,
    *,
    tenant_id: int,
    timeout: float | None,
    fail_on_drift: bool,
    interval: float = 2.0,
    report_every: float = 30.0,
) -> int:
    """`submit --wait`: wait (with progress), print a one-line outcome on stderr, and return the exit code."""
    code, status = wait_for(
        ledger, job, tenant_id=tenant_id, timeout=timeout, interval=interval, report_every=report_every
    )
    outcome = (
        f"job {job}: {status.succeeded} succeeded, {status.blocked} blocked, {status.failed} failed, "
        f"{status.cancelled} cancelled"
    )
    if not status.finished:
        outcome += f", {status.remaining} unfinished after --timeout {timeout:g} s"
        if status.no_worker:
            outcome += f" ({status.no_worker})"
    err.print(outcome, highlight=False, markup=False, soft_wrap=True)
    if code == EXIT_OK and fail_on_drift and drifted(ledger, job, tenant_id=tenant_id):
        return EXIT_DRIFT
    return code


def drifted(ledger: Any, job: int, *, tenant_id: int) -> bool:
    """Whether the finished job drifted from its catalogue's earlier runs (`pixelmill drift`'s verdict), saying
    why on stderr."""
    from producer.drift import drift_report  # SQLAlchemy

    settings = get_settings()
    with ledger.session() as session:
        report = drift_report(
            session,
            tenant_id,
            None,
            job,
            score_drop=settings.drift_score_drop,
            rate_rise=settings.drift_rate_rise,
            runs=settings.drift_runs,
        )
    if report is not None and report.flagged:
        err.print(f"drift: {'; '.join(report.reasons)}", highlight=False, markup=False, soft_wrap=True)
        return True
    return False
