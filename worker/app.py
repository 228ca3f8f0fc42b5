"""The Celery app of a pixelmill worker: `pixelmill worker` (or `celery -A worker.app worker -Q <queue>`).

One prefork child per GPU. The parent never imports torch: the child loads the worker's model (PIXELMILL_MODEL,
whose queue it consumes) right after the fork, and builds its ledger engine and storage client there too.
The reconciler runs in the parent on the worker's own timer (a bootstep), so every worker keeps the ledger
and the queue in agreement.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps, signals

from pixelmill import logs
from pixelmill.identity import resolve_model
from pixelmill.ledger import Ledger
from pixelmill.queue import TASK_GENERATE, Chunk, make_celery
from pixelmill.settings import get_settings
from pixelmill.storage import open_storage
from worker import hardening
from worker.chunk import Context, run_chunk
from worker.engine import load_engine
from worker.reconciler import reconcile

log = logging.getLogger(__name__)

settings = get_settings()
app = make_celery(settings, main="pixelmill.worker")
hardening.limit_remote_control()  # only ping and read-only inspection over the broker (see ALLOWED_CONTROL)

_context: Context | None = None
_parent_ledger: Ledger | None = None


def context(node: str) -> Context:
    global _context
    if _context is None:
        _context = Context(settings=settings, ledger=Ledger(settings), node=node, app=app,
                           storage=open_storage(settings))
    return _context


@app.task(name=TASK_GENERATE, bind=True)
def generate(self: Any, message: dict[str, Any]) -> None:
    """Generate one chunk and hand it to the upload threads; raises only for malformed messages (which are
    then dropped, not retried). The ledger, not the message, tracks the chunk until it is recorded."""
    run_chunk(context(self.request.hostname), Chunk.from_message(message))


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    logs.configure(loglevel or logging.INFO)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    global _context
    if _parent_ledger is not None:
        _parent_ledger.dispose_after_fork()  # the parent's pooled connections are not ours to use
    _context = None
    model = resolve_model(settings.default_model)
    try:  # now, not inside the first task's time limit (PIXELMILL_MODEL_LOAD_TIMEOUT bounds it)
        engine = load_engine(model, settings)
        log.info("model loaded", extra={"model": model, "engine": engine.engine_id})
    except Exception:  # tasks will try again and record the error on their items
        log.exception("loading the worker's model failed", extra={"model": model})
    _preload_checks()


def _preload_checks() -> None:
    """Load the checker and scorers this worker's settings name; jobs carry their own, loaded on first use."""
    from pixelmill.checks import ChecksError, resolve_checks

    try:
        checks = resolve_checks(settings)
    except ChecksError:
        return  # nothing (valid) configured here: each job's checks load with its first chunk
    try:
        from worker.judge import load_judge

        load_judge(checks)
    except Exception:
        log.exception("loading the image checks failed", extra={"checker": checks.image_checker})


@signals.worker_process_shutdown.connect
def _before_exit(**_: Any) -> None:
    """A warm shutdown lets the last chunks finish storing and recording before the child exits."""
    if _context is not None:
        _context.close()


class Reconciler(bootsteps.StartStopStep):
    """Runs the reconciler at start (recovering what a previous run of this node held) and then every
    PIXELMILL_RECONCILE_INTERVAL seconds, on its own thread (worker/hardening.py: a locked ledger must not
    stall the timer that fires the time limits). Each pass first restarts a dead embedded broker and sweeps
    temp files of interrupted stores."""

    requires = {"celery.worker.components:Timer", "celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: hardening.ReconcilerThread | None = None

    def start(self, worker: Any) -> None:
        global _parent_ledger
        _parent_ledger = _parent_ledger or Ledger(settings)
        self.node = worker.hostname
        self.sweep = hardening.Sweeper(settings)
        self.thread = hardening.ReconcilerThread(self.tick, settings.reconcile_interval)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()

    def tick(self) -> None:
        assert _parent_ledger is not None
        for step in (lambda: hardening.heal_broker(settings), self.sweep,
                     lambda: reconcile(_parent_ledger, app, settings, node=self.node)):
            try:
                step()
            except Exception:
                log.exception("reconcile failed; will try again", extra={"node": self.node})


app.steps["worker"].add(Reconciler)
