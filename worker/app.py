"""The Celery app of a pixelmill worker: `pixelmill worker` (or `celery -A worker.app worker -Q <queue>`).

One prefork child per GPU. The parent never imports torch: the child loads the worker's model (PIXELMILL_MODEL,
whose queue it consumes) right after the fork, and builds its ledger engine and storage client there too.
The reconciler and the scheduler run in the parent (a bootstep), so every worker keeps the ledger and the queue
in agreement, and one of them (the scheduler lease's holder) dispatches the backlog (contract/scheduling.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from celery import bootsteps, signals
from celery.exceptions import Reject
from sqlalchemy import update

from contract import ledger_metrics, logs, metrics
from contract.identity import resolve_model
from contract.ledger import Ledger, insert_ignore
from contract.queue import TASK_GENERATE, Chunk, make_celery, queue_for, serve_only
from contract.scheduling import Scheduler, SchedulerThread
from contract.schema import Worker, utcnow
from contract.settings import get_settings
from contract.storage import open_storage
from worker.chunk import Context, read_job, run_chunk
from worker.control import limit_remote_control
from worker.engine import load_engine
from worker.reconciler import ReconcilerThread, heal_broker, reconcile
from worker.temp_sweep import Sweeper

log = logging.getLogger(__name__)

settings = get_settings()
app = make_celery(settings, main="pixelmill.worker")
serve_only(app, TASK_GENERATE)  # a model queue's writer cannot make the worker run Celery's built-ins
limit_remote_control()  # only ping and read-only inspection over the broker (see ALLOWED_CONTROL)

_context: Context | None = None
_parent_ledger: Ledger | None = None
_booted = datetime.now(UTC)  # the parent's start: heartbeats older than this are a previous run's
_node: str | None = None  # set in the parent before the pool forks (celeryd_after_setup), inherited by the child
_load_failed: str | None = None  # the child's model failed to load: it takes no task


def served_queue() -> tuple[str, str]:
    """The model this worker loads and the queue it consumes."""
    model = resolve_model(settings.default_model)
    return model, queue_for(model)


@dataclass(frozen=True)
class WorkerState:
    """What a worker says of itself in `workers.state`: loading, ready, or failed with its error."""

    state: Literal["loading", "ready", "failed"]
    error: str | None = None


def heartbeat(
    ledger: Ledger, node: str, *, state: WorkerState | None = None, only_before: datetime | None = None
) -> None:
    """Record this worker's queue in `workers`: `state` when given, `last_seen` always.
    `only_before`: change the state only of a row last seen before then (a previous run's)."""
    model, queue = served_queue()
    now = utcnow()
    with ledger.session() as session:
        insert_ignore(
            session,
            Worker,
            [
                {
                    "node": node,
                    "queue": queue,
                    "model": model,
                    "state": state.state if state else "loading",
                    "error": state.error if state else None,
                    "started": now,
                    "last_seen": now,
                }
            ],
            ["node", "queue"],
        )
        values: dict[str, Any] = {"last_seen": now, "model": model}
        if state is not None:
            values.update(error=state.error, state=state.state)  # workers.state: a worker row, not an item
        where = [Worker.node == node, Worker.queue == queue]
        if only_before is not None:
            where.append(Worker.last_seen < only_before)
            values["started"] = now
        session.execute(update(Worker).where(*where).values(**values))


def context(node: str) -> Context:
    global _context
    if _context is None:
        _context = Context(
            settings=settings, ledger=Ledger(settings), node=node, app=app, storage=open_storage(settings)
        )
    return _context


@app.task(name=TASK_GENERATE, bind=True)
def generate(self: Any, message: dict[str, Any]) -> None:
    """Generate one chunk and hand it to the upload threads; raises only for malformed messages (which are
    then dropped, not retried). The ledger, not the message, tracks the chunk until it is recorded."""
    if _load_failed is not None:  # back to the broker for a worker that can run it; this one is stopping
        raise Reject(f"this worker's model failed to load: {_load_failed}", requeue=True)
    ctx = context(self.request.hostname)
    chunk = Chunk.from_message(message)
    job = read_job(ctx, chunk)  # once per message
    logs.TRACE_ID.set(job.trace if job else None)  # this task's log lines carry the trace of the job's request
    for batch in chunk.batches(ctx.settings.batch_size):  # a message may hold several GPU batches
        run_chunk(ctx, batch, job)


@signals.celeryd_after_setup.connect
def _named(sender: Any = None, **_: Any) -> None:
    global _node
    _node = str(sender) if sender else None


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    logs.configure(loglevel or logging.INFO)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    global _context
    if _parent_ledger is not None:
        _parent_ledger.dispose_after_fork()  # the parent's pooled connections are not ours to use
    _context = None
    global _load_failed
    model, queue = served_queue()
    try:  # now, not inside the first task's time limit (PIXELMILL_MODEL_LOAD_TIMEOUT bounds it)
        started = time.perf_counter()
        engine = load_engine(model, settings)
        metrics.model_loaded(model, engine.engine_id, time.perf_counter() - started)
        log.info("model loaded", extra={"model": model, "engine": engine.engine_id, "queue": queue})
    except Exception as exc:
        from worker.engine.select import EngineUnavailable

        if isinstance(exc, EngineUnavailable):  # the engine setting, not the model: recorded on every item
            log.exception("the requested engine cannot run here", extra={"model": model})
            _build_context()
            _report(WorkerState("ready"))
            _preload_checks()
            return
        # Not ready for this queue: record why, hand back anything delivered meanwhile, and stop the worker
        # (warm shutdown of the parent; `pixelmill worker` then exits 1 with this error).
        _load_failed = f"{type(exc).__name__}: {exc}".strip().splitlines()[-1][:500]
        log.exception(
            "loading the worker's model failed; this worker stops and serves no queue",
            extra={"model": model, "queue": queue},
        )
        _report(WorkerState("failed", f"model {model!r}: {_load_failed}"))
        os.kill(os.getppid(), signal.SIGTERM)
        return
    _build_context()
    _report(WorkerState("ready"))
    _preload_checks()


def _build_context() -> None:
    """The child's Context (ledger engine, storage client, policy, the prompt floor's index) now, not inside
    the first task: building the floor from a large blocklist can take longer than a short
    PIXELMILL_TASK_SOFT_TIME_LIMIT, whose exception would then escape the chunk's handling. A failure here is
    logged and the first task tries again."""
    if _node is None:
        return
    try:
        context(_node)
    except Exception:
        log.exception("preparing the worker's context failed; the first task tries again", extra={"node": _node})


def _report(state: WorkerState) -> None:
    if _node is None:
        return
    try:
        ledger = Ledger(settings)
        try:
            heartbeat(ledger, _node, state=state)
        finally:
            ledger.close()
    except Exception:
        log.exception("recording the worker's state failed", extra={"node": _node})


def _preload_checks() -> None:
    """Load the checker and scorers this worker's settings name; jobs carry their own, loaded on first use."""
    from contract.checks import ChecksError, resolve_checks

    try:
        checks = resolve_checks(settings)
    except ChecksError:
        return  # nothing (valid) configured here: each job's checks load with its first chunk
    try:
        from worker.image_checks import load_judge

        load_judge(checks)
    except Exception:
        log.exception("loading the image checks failed", extra={"checker": checks.image_checker})


@signals.worker_process_shutdown.connect
def _before_exit(**_: Any) -> None:
    """A warm shutdown lets the last chunks finish storing and recording before the child exits."""
    if _context is not None:
        _context.close()
    metrics.process_exited()


@signals.worker_init.connect
def _metrics_dir(**_: Any) -> None:
    """In the parent, before the pool forks: where it and its child count (PIXELMILL_METRICS_DIR, emptied, or a
    temporary directory removed at exit). Without PIXELMILL_METRICS_PORT nothing is served and nothing is set up."""
    if not settings.metrics_port:
        return
    if settings.metrics_dir:
        metrics.enable_multiprocess(settings.metrics_dir)
        return
    made = tempfile.mkdtemp(prefix="pixelmill-metrics-")
    metrics.enable_multiprocess(made)
    parent = os.getpid()

    def remove() -> None:
        if os.getpid() == parent:  # the parent's exit, not a forked child's
            shutil.rmtree(made, ignore_errors=True)

    atexit.register(remove)


class Reconciler(bootsteps.StartStopStep):
    """Starts the scheduler's thread (contract/scheduling.py: it dispatches while this process holds the lease),
    and runs the reconciler at start (recovering what a previous run of this node held) and then every
    PIXELMILL_RECONCILE_INTERVAL seconds, on its own thread (worker/reconciler.py: a locked ledger must not
    stall the timer that fires the time limits). Each pass first restarts a dead embedded broker and sweeps
    temp files of interrupted stores."""

    requires = {"celery.worker.components:Timer", "celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: ReconcilerThread | None = None
        self.scheduler: SchedulerThread | None = None

    def start(self, worker: Any) -> None:
        global _parent_ledger
        _parent_ledger = _parent_ledger or Ledger(settings)
        self.node = worker.hostname
        try:  # a previous run's "ready" is not this run's: loading until the child says otherwise
            heartbeat(_parent_ledger, self.node, state=WorkerState("loading"), only_before=_booted)
        except Exception:
            log.exception("recording the worker's state failed", extra={"node": self.node})
        self.sweep = Sweeper(settings)
        self.thread = ReconcilerThread(self.tick, settings.reconcile_interval)
        self.thread.start()
        # Every worker parent may hold the scheduler lease; the holder tops up the model queues' windows.
        self.scheduler = SchedulerThread(Scheduler(settings, _parent_ledger, app))
        self.scheduler.start()
        try:  # with --gpus, the worker of GPU N serves PIXELMILL_METRICS_PORT + N
            ledger_metrics.serve(
                settings, _parent_ledger, port_offset=int(os.environ.get("PIXELMILL_GPU") or 0), gpus=True
            )
        except OSError:
            log.exception("serving metrics failed; the worker runs without", extra={"port": settings.metrics_port})

    def stop(self, worker: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.thread is not None:
            self.thread.stop()

    def tick(self) -> None:
        assert _parent_ledger is not None
        ledger = _parent_ledger
        for step in (
            lambda: heal_broker(settings),
            self.sweep,
            lambda: heartbeat(ledger, self.node),
            lambda: reconcile(ledger, app, settings, node=self.node),
        ):
            try:
                step()
            except Exception:
                log.exception("reconcile failed; will try again", extra={"node": self.node})


app.steps["worker"].add(Reconciler)
