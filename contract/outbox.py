"""The dispatcher: delivers the outbox's pending deliveries (contract/events.py) and records how each went.

At least once, never lost: an event row is committed with the state change that caused it, and a delivery is
marked `delivered` only after the broker took the message (reply queues) or the webhook answered 2xx. A
dispatcher that dies between the two leaves the delivery `pending` under a lease (PIXELMILL_DISPATCH_LEASE);
whichever dispatcher runs next sends it again. Receivers dedupe on the event `id` (the `webhook-id` header).
A live dispatcher never sends twice: an attempt ends (PIXELMILL_WEBHOOK_TIMEOUT, a total deadline) well
before its lease does, and the outcome is written only while `lease_until` still holds the value this
dispatcher wrote (a compare-and-set, so a late writer cannot overwrite another dispatcher's record).

Webhooks are signed per Standard Webhooks (`standardwebhooks`, HMAC-SHA256 with PIXELMILL_WEBHOOK_SECRET),
checked again before every attempt (contract/webhook_target.py: DNS may have changed since submit; a refused
target is dead at once) and sent to the checked address (contract/webhook_post.py). They are retried on a
non-2xx answer, a timeout or a connection error with exponential backoff and full jitter
(PIXELMILL_WEBHOOK_BACKOFF doubled per attempt, at most PIXELMILL_WEBHOOK_BACKOFF_MAX apart) until
PIXELMILL_WEBHOOK_RETRY_PERIOD after the event, then dead-lettered (`state = dead`; `pixelmill events --resend`).
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from celery import Celery
from sqlalchemy import or_, select, update

from contract import metrics
from contract.events import TASK_EVENT
from contract.faults import mask
from contract.ledger import Ledger
from contract.queue import declare_queue
from contract.replies import ReplyQueueError, check_reply_queue
from contract.schema import Delivery, Event, Tenant, utcnow
from contract.settings import Settings
from contract.webhook_post import post
from contract.webhook_target import (
    Resolver,
    WebhookResolveError,
    WebhookUrlError,
    check_webhook_target,
    parse_hosts,
    shown_url,
)

log = logging.getLogger(__name__)

_BATCH = 50  # reply-queue deliveries leased per scan
_PAGE = 200  # due rows read per query while looking for receivers with room
_USER_AGENT = "pixelmill-webhooks/1"


def sign(secret: str, msg_id: str, when: datetime, payload: str) -> dict[str, str]:
    """The Standard Webhooks headers of one POST."""
    from standardwebhooks.webhooks import Webhook

    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, payload),
        "content-type": "application/json",
        "user-agent": _USER_AGENT,
    }


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: exponential, capped, with full jitter (half to all of it)."""
    delay = min(settings.webhook_backoff * 2.0 ** max(attempts - 1, 0), settings.webhook_backoff_max)
    return float(delay * random.uniform(0.5, 1.0))


class Leased(NamedTuple):
    id: int
    kind: str
    target: str
    attempts: int
    body: dict[str, Any]
    created: datetime
    lease: datetime  # the lease_until this dispatcher wrote: its fencing token when recording the outcome
    expires: float  # time.monotonic() when that lease runs out
    tenant_hosts: tuple[str, ...] = ()  # the event's tenant's webhook hosts (empty: any allowed host)
    tenant_id: int = 0  # the event's tenant: it holds at most all but one of the delivery threads


@dataclass
class Outcome:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    lost: int = 0  # outcomes not recorded: the lease had passed to another dispatcher

    @property
    def total(self) -> int:
        return self.delivered + self.retrying + self.dead


def receiver_of(kind: str, target: str) -> str:
    """What the per-receiver limit counts: a webhook's host:port, or the reply queue."""
    if kind == "queue":
        return f"queue:{target}"
    parts = urlsplit(target)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{(parts.hostname or '').rstrip('.')}:{port}"


class Dispatcher:
    """Leases due deliveries, sends them, records the result. `run_once` sends everything due (webhooks on a pool
    of PIXELMILL_WEBHOOK_WORKERS threads, at most PIXELMILL_WEBHOOK_PER_RECEIVER at a time to one host:port and
    all but one thread to one tenant, so a slow receiver holds only its own slots and a tenant's many slow
    receivers never hold every thread) and returns once all it started are recorded; `start` runs it on a
    daemon thread (in `pixelmill intake` and `pixelmill serve`) until `stop`. `ssl_context` and `resolve` replace
    the system's CAs and DNS (tests)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        app: Celery | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self._app = app
        self._ssl_context = ssl_context
        self._resolve = resolve
        self._allow = parse_hosts(settings.webhook_allow_hosts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._changed = threading.Condition()
        self._busy: Counter[str] = Counter()  # receiver -> webhook deliveries in flight
        self._by_tenant: Counter[int] = Counter()  # tenant -> webhook deliveries in flight
        # One tenant's receivers (many slow hosts of its own) never hold every thread: another tenant keeps one.
        self._per_tenant = max(1, settings.webhook_workers - 1)

    @property
    def app(self) -> Celery:
        if self._app is None:
            from contract.queue import make_celery

            self._app = make_celery(self.settings, main="pixelmill.dispatch")
        return self._app

    def run_once(self) -> Outcome:
        """Send every delivery due now and record each result; returns when none is due and none in flight."""
        outcome = Outcome()
        while not self._stop.is_set():
            with self._changed:
                idle = not self._busy  # only this thread adds to it: idle now means no slot was full in _lease
            leased = self._lease()
            for delivery in leased:  # webhooks first: their attempts start at once, well inside their leases
                if delivery.kind != "queue":
                    self._start(delivery, outcome)
            for delivery in leased:
                if delivery.kind == "queue":
                    self._record(delivery, self._send_queue(delivery), outcome)
            if leased:
                continue
            if idle:
                break
            with self._changed:
                if self._busy:
                    self._changed.wait(self.settings.dispatch_interval)
        return outcome

    def _lease(self) -> list[Leased]:
        """Take the due deliveries there is room for now. A read-only look first (an idle dispatcher never takes
        SQLite's write lock), then each row is leased by a compare-and-set on `lease_until`, so two dispatchers
        never both hold one; the value written is this lease's fencing token."""
        with self._changed:
            busy, by_tenant = Counter(self._busy), Counter(self._by_tenant)
        free = self.settings.webhook_workers - sum(busy.values())
        picked: list[int] = []
        queues, after = 0, 0
        with self.ledger.session(readonly=True) as session:
            while free > 0 or queues < _BATCH:
                rows = session.execute(
                    select(Delivery.id, Delivery.kind, Delivery.target, Event.tenant_id)
                    .join(Event, Event.id == Delivery.event_id)
                    .where(*self._due(utcnow()), Delivery.id > after)
                    .order_by(Delivery.id)
                    .limit(_PAGE)
                ).all()
                for delivery_id, kind, target, tenant_id in rows:
                    receiver = receiver_of(kind, target)
                    if kind == "queue" and queues < _BATCH:
                        picked.append(delivery_id)
                        queues += 1
                    elif (
                        kind != "queue"
                        and free > 0
                        and busy[receiver] < self.settings.webhook_per_receiver
                        and by_tenant[tenant_id] < self._per_tenant
                    ):
                        picked.append(delivery_id)
                        busy[receiver] += 1
                        by_tenant[tenant_id] += 1
                        free -= 1
                if len(rows) < _PAGE:
                    break
                after = rows[-1][0]
        if not picked:
            return []
        expires = time.monotonic() + self.settings.dispatch_lease
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.dispatch_lease)
        with self.ledger.session() as session:
            got = [
                delivery_id
                for delivery_id in picked
                if _rowcount(
                    session.execute(
                        update(Delivery).where(Delivery.id == delivery_id, *self._due(now)).values(lease_until=lease)
                    )
                )
            ]
            taken = session.execute(
                select(
                    Delivery.id,
                    Delivery.kind,
                    Delivery.target,
                    Delivery.attempts,
                    Event.body,
                    Event.created,
                    Tenant.webhook_hosts,
                    Event.tenant_id,
                )
                .join(Event, Event.id == Delivery.event_id)
                .join(Tenant, Tenant.id == Event.tenant_id)
                .where(Delivery.id.in_(got))
                .order_by(Delivery.id)
            ).all()
        return [
            Leased(i, kind, target, n, body, created, lease, expires, tuple(hosts or ()), tenant)
            for i, kind, target, n, body, created, hosts, tenant in taken
        ]

    @staticmethod
    def _due(now: datetime) -> tuple[Any, ...]:
        return (
            Delivery.state == "pending",
            Delivery.next_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
        )

    def _start(self, delivery: Leased, outcome: Outcome) -> None:
        receiver = receiver_of(delivery.kind, delivery.target)
        with self._changed:
            self._busy[receiver] += 1
            self._by_tenant[delivery.tenant_id] += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.webhook_workers, thread_name_prefix="pixelmill-webhook")
        self._pool.submit(self._deliver, delivery, receiver, outcome)

    def _deliver(self, delivery: Leased, receiver: str, outcome: Outcome) -> None:
        try:
            self._record(delivery, self._send_webhook(delivery), outcome)
        except Exception:
            log.exception(
                "webhook delivery failed; the lease runs out and it is sent again", extra={"delivery": delivery.id}
            )
        finally:
            with self._changed:
                self._busy[receiver] -= 1
                if not self._busy[receiver]:
                    del self._busy[receiver]
                self._by_tenant[delivery.tenant_id] -= 1
                if not self._by_tenant[delivery.tenant_id]:
                    del self._by_tenant[delivery.tenant_id]
                self._changed.notify_all()

    def _send_queue(self, delivery: Leased) -> Failure | None:
        try:  # the name was checked at submit time; checked again here, whoever wrote the row
            queue = check_reply_queue(delivery.target)
        except ReplyQueueError as exc:
            return Failure(f"refused: {exc}", final=True)
        try:
            with self.app.producer_or_acquire() as producer:
                declare_queue(self.app, producer, queue)
                self.app.send_task(TASK_EVENT, args=[delivery.body], queue=queue, producer=producer, declare=[])
            return None
        except Exception as exc:  # noqa: BLE001 (any failure is recorded and retried)
            return Failure(f"{type(exc).__name__}: {exc}")

    def _send_webhook(self, delivery: Leased) -> Failure | None:
        """None when the receiver answered 2xx; else why not (`final` when retrying cannot help)."""
        import httpcore

        secret = self.settings.webhook_secret
        if not secret:
            return Failure("PIXELMILL_WEBHOOK_SECRET is not set on this dispatcher: webhooks cannot be signed")
        timeout = self.settings.webhook_timeout
        start = time.monotonic()
        # The attempt ends well inside the lease: nobody else can take the delivery while it runs.
        deadline = min(start + timeout, delivery.expires - timeout / 2)
        try:
            target = check_webhook_target(
                delivery.target,
                allow_http=self.settings.webhook_allow_http,
                allow_hosts=self._allow,
                tenant_hosts=delivery.tenant_hosts,  # as at submit: the operator may have narrowed them since
                resolve=self._resolve,
            )
        except WebhookResolveError as exc:
            return Failure(str(exc))
        except WebhookUrlError as exc:  # checked at submit time too; DNS may have changed since
            return Failure(f"refused: {exc}", final=True)
        payload = json.dumps(delivery.body, separators=(",", ":"), ensure_ascii=False)
        headers = sign(secret, str(delivery.body["id"]), utcnow(), payload)
        try:
            answer = post(target, payload.encode(), headers, deadline=deadline, ssl_context=self._ssl_context)
        except httpcore.TimeoutException:
            return Failure(f"timeout: no complete answer within {timeout:g} s (PIXELMILL_WEBHOOK_TIMEOUT)")
        except Exception as exc:  # noqa: BLE001 (connection refused, TLS verification, protocol: recorded, retried)
            return Failure(f"{type(exc).__name__}: {exc}")
        if 200 <= answer.status < 300:
            log.debug("webhook delivered", extra={"delivery": delivery.id, "url": shown_url(delivery.target)})
            return None
        return Failure(f"HTTP {answer.status}: {answer.body.decode('utf-8', 'replace')[:200]}")

    def _record(self, delivery: Leased, failure: Failure | None, outcome: Outcome) -> None:
        """Write the outcome only while the lease is still ours (`lease_until` unchanged: the fencing token)."""
        now = utcnow()
        attempts = delivery.attempts + 1
        shown = shown_url(delivery.target) if delivery.kind == "webhook" else delivery.target
        if failure is None:
            values: dict[str, Any] = {"state": "delivered", "delivered_at": now, "last_error": None}
        elif failure.final or now - delivery.created > timedelta(seconds=self.settings.webhook_retry_period):
            values = {"state": "dead", "last_error": mask(failure.error)}
        else:
            values = {
                "next_at": now + timedelta(seconds=backoff(self.settings, attempts)),
                "last_error": mask(failure.error),
            }
        with self.ledger.session() as session:
            recorded = _rowcount(
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == delivery.id, Delivery.state == "pending", Delivery.lease_until == delivery.lease
                    )
                    .values(attempts=attempts, lease_until=None, **values)
                )
            )
        fields = {"delivery": delivery.id, "target": shown, "error": values.get("last_error")}
        if recorded:
            metrics.delivery_done(delivery.kind, values.get("state", "retrying"))
        with self._changed:
            if not recorded:
                outcome.lost += 1
                log.warning("delivery outcome not recorded: the lease passed to another dispatcher", extra=fields)
            elif failure is None:
                outcome.delivered += 1
            elif values.get("state") == "dead":
                outcome.dead += 1
                log.warning("delivery dead-lettered", extra=fields)
            else:
                outcome.retrying += 1
                log.info("delivery failed; will retry", extra=fields)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pixelmill-dispatch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once().total
            except Exception:
                log.exception("dispatch failed; will try again")
                busy = 0
            if not busy:
                self._stop.wait(self.settings.dispatch_interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)


@dataclass(frozen=True)
class Failure:
    error: str
    final: bool = False  # dead at once (a refused target), not retried


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
