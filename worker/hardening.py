"""What keeps a worker working through outages and out of other people's hands.

- `renew_lease` / `within_lease`: a locked or briefly unreachable ledger is tried again, never raised into
  the task (which would lose the chunk's stores) or into the recorder (which would leave items running until
  their lease ran out, an attempt lost).
- `ReconcilerThread`: the reconciler runs on its own thread of the worker's main process, so a ledger that
  blocks for the busy timeout never stalls Celery's timer (which also fires the time limits: a blocked timer
  fired stale ones and replaced a healthy child). Each pass also restarts a dead embedded broker and sweeps
  temp files left by interrupted local stores.
- `foreign_model`: a worker serves only the model it was started with.
- `limit_remote_control`: only the control commands ping, Flower and the CLI need are accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from contract import faults, transitions
from contract.identity import resolve_model
from contract.ledger import Ledger
from contract.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Remote control commands a worker accepts (celery.worker.control). `ping`: `pixelmill ping` and container
# health checks. Read-only inspection for Flower and operators: stats, active, reserved, scheduled, revoked,
# registered, active_queues, query_task, clock, report. `enable_events`/`disable_events`/`heartbeat`: Flower's
# task view (events are JSON status updates, no code). Everything that changes or stops the worker (shutdown,
# pool_restart/grow/shrink, autoscale, add/cancel_consumer, rate_limit, time_limit, revoke, terminate) and
# everything that dumps internals (conf, memdump, objgraph, dump_*) is refused: anyone who can publish on the
# broker could send them, and the supervisor stops workers with signals, never over the broker.
ALLOWED_CONTROL = frozenset(
    {
        "ping",
        "stats",
        "active",
        "reserved",
        "scheduled",
        "revoked",
        "registered",
        "active_queues",
        "query_task",
        "clock",
        "report",
        "enable_events",
        "disable_events",
        "heartbeat",
    }
)


def limit_remote_control(allowed: frozenset[str] = ALLOWED_CONTROL) -> list[str]:
    """Unregister every control command not in `allowed` (a command not registered gets no reply and has no
    effect); returns the names removed."""
    from celery.worker.control import Panel

    removed = sorted(name for name in Panel.data if name not in allowed)
    for name in removed:
        Panel.data.pop(name, None)
        Panel.meta.pop(name, None)
    return removed


def foreign_model(settings: Settings, model: str) -> str | None:
    """Why this worker refuses a job's model, or None when it is the model the worker serves."""
    served = resolve_model(settings.default_model)
    if model == served:
        return None
    return (
        f"this worker serves model {served!r} only (PIXELMILL_MODEL / --model) and refuses chunks for model "
        f"{model!r}; the item goes back to that model's queue"
    )


def retrying(
    fn: Callable[[], T], *, deadline: float, what: str, first_delay: float = 0.5, max_delay: float = 10.0
) -> T:
    """`fn()`, called again after infrastructure failures (exponential backoff) until `deadline`
    (time.monotonic()); any other error, or one at the deadline, is raised."""
    delay = first_delay
    while True:
        try:
            return fn()
        except Exception as exc:
            if not faults.is_infra(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                f"{what} failed; trying again",
                extra={"error": str(exc).splitlines()[0][:200], "retry_in": round(delay, 1)},
            )
            time.sleep(delay)
            delay = min(max_delay, delay * 2)


def renew_lease(ledger: Ledger, item_ids: Sequence[int], *, node: str, lease_seconds: int) -> None:
    """Extend the lease of items handed to the upload threads. A ledger that stays locked leaves them the
    lease of their claim (which already covers the task's time limit): logged, never raised into the task."""

    def renew() -> None:
        with ledger.session() as session:
            transitions.renew_lease(session, item_ids, node=node, lease_seconds=lease_seconds)

    try:
        retrying(renew, deadline=time.monotonic() + 5, what="renewing leases")
    except Exception as exc:
        if not faults.is_infra(exc):
            raise
        log.warning(
            "could not renew leases; the claim's lease stands", extra={"items": len(item_ids), "error": str(exc)[:200]}
        )


def within_lease(fn: Callable[[], T], settings: Settings) -> T:
    """Record a chunk, trying again through a locked or unreachable ledger for up to half a lease (the items
    are still ours that long; past it, the reconciler takes over)."""
    return retrying(fn, deadline=time.monotonic() + settings.lease_seconds / 2, what="recording a chunk")


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


class Sweeper:
    """Removes temp files of interrupted local stores, at most once per `every` seconds."""

    def __init__(self, settings: Settings, every: float = 600.0) -> None:
        self.settings, self.every = settings, every
        self._last: float | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            return 0
        self._last = now
        if self.settings.resolved_storage_url.startswith("s3:"):
            return 0
        from contract.storage import LocalStorage, open_storage

        storage = open_storage(self.settings)
        if not isinstance(storage, LocalStorage):
            return 0
        removed = storage.sweep_temp(self.settings.temp_grace)
        if removed:
            log.warning("removed temp files of interrupted stores", extra={"files": removed})
        return removed
