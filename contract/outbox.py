"""The dispatcher: delivers the outbox's pending deliveries (contract/events.py) and records how each went.

At least once, never lost: an event row is committed with the state change that caused it, and a delivery is
marked `delivered` only after the broker took the message (reply queues) or the webhook answered 2xx. A
dispatcher that dies between the two leaves the delivery `pending` under a lease (PIXELMILL_DISPATCH_LEASE);
whichever dispatcher runs next sends it again. Receivers dedupe on the event `id` (the `webhook-id` header).

Webhooks are signed per Standard Webhooks (`standardwebhooks`, HMAC-SHA256 with PIXELMILL_WEBHOOK_SECRET) and
retried on a non-2xx answer, a timeout or a connection error with exponential backoff and full jitter
(PIXELMILL_WEBHOOK_BACKOFF doubled per attempt, at most PIXELMILL_WEBHOOK_BACKOFF_MAX apart) until
PIXELMILL_WEBHOOK_RETRY_PERIOD after the event, then dead-lettered (`state = dead`; `pixelmill events --resend`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from celery import Celery
from sqlalchemy import or_, select, update

from contract.events import TASK_EVENT
from contract.ledger import Ledger
from contract.replies import check_reply_queue
from contract.schema import Delivery, Event, utcnow
from contract.settings import Settings

log = logging.getLogger(__name__)

_BATCH = 50  # deliveries leased per scan
_USER_AGENT = "pixelmill-webhooks/1"


class WebhookUrlError(ValueError):
    """A webhook URL the dispatcher would not call; the message says what to change."""


def check_webhook_url(url: str, *, allow_http: bool) -> None:
    """https, or plain http to a loopback address (or anywhere with PIXELMILL_WEBHOOK_ALLOW_HTTP)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookUrlError(f"webhook must be an https:// URL, got {url!r:.200}")
    if parts.scheme == "http" and not allow_http:
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise WebhookUrlError(
                f"webhook {url!r:.200} is plain http: use https, or a loopback address "
                f"(PIXELMILL_WEBHOOK_ALLOW_HTTP=true allows http on a private network)"
            )


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


@dataclass
class Outcome:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.retrying + self.dead


class Dispatcher:
    """Leases due deliveries, sends them, records the result. `run_once` is one scan; `start` runs scans on a
    daemon thread (in `pixelmill intake` and `pixelmill serve`) until `stop`."""

    def __init__(self, settings: Settings, ledger: Ledger, app: Celery | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self._app = app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            from contract.queue import make_celery

            self._app = make_celery(self.settings, main="pixelmill.dispatch")
        return self._app

    def _lease(self) -> list[Leased]:
        """Take up to a batch of due deliveries under this dispatcher's lease. A read-only look first, so an
        idle dispatcher never takes SQLite's write lock."""
        now = utcnow()
        due = (
            Delivery.state == "pending",
            Delivery.next_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
        )
        with self.ledger.session(readonly=True) as session:
            if session.scalar(select(Delivery.id).where(*due).limit(1)) is None:
                return []
        with self.ledger.session() as session:
            rows = session.execute(
                select(Delivery.id, Delivery.kind, Delivery.target, Delivery.attempts, Event.body, Event.created)
                .join(Event, Event.id == Delivery.event_id)
                .where(*due)
                .order_by(Delivery.id)
                .limit(_BATCH)
                .with_for_update(skip_locked=True, of=Delivery)
            ).all()
            if rows:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_([r[0] for r in rows]))
                    .values(lease_until=now + timedelta(seconds=self.settings.dispatch_lease))
                )
        return [Leased(*r) for r in rows]

    def run_once(self) -> Outcome:
        """Send every delivery due now (a batch at a time) and record each result."""
        outcome = Outcome()
        while not self._stop.is_set():
            leased = self._lease()
            if not leased:
                break
            for delivery_id, kind, target, attempts, body, created in leased:
                error = self._send(kind, target, body)
                self._record(delivery_id, attempts + 1, created, error, outcome)
        return outcome

    def _send(self, kind: str, target: str, body: dict[str, Any]) -> str | None:
        """None when the destination took it; else why not."""
        try:
            if kind == "queue":
                self.app.send_task(TASK_EVENT, args=[body], queue=check_reply_queue(target))
                return None
            return self._post(target, body)
        except Exception as exc:  # noqa: BLE001 (any failure is recorded and retried)
            return f"{type(exc).__name__}: {exc}"

    def _post(self, url: str, body: dict[str, Any]) -> str | None:
        import httpx

        secret = self.settings.webhook_secret
        if not secret:
            return "PIXELMILL_WEBHOOK_SECRET is not set on this dispatcher: webhooks cannot be signed"
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        headers = sign(secret, str(body["id"]), utcnow(), payload)
        response = httpx.post(
            url,
            content=payload.encode(),
            headers=headers,
            timeout=self.settings.webhook_timeout,
            follow_redirects=False,
        )
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}: {response.text[:200]}"

    def _record(self, delivery_id: int, attempts: int, created: datetime, error: str | None, outcome: Outcome) -> None:
        now = utcnow()
        if error is None:
            values: dict[str, Any] = {"state": "delivered", "delivered_at": now, "last_error": None}
            outcome.delivered += 1
        elif now - created > timedelta(seconds=self.settings.webhook_retry_period):
            values = {"state": "dead", "last_error": error}
            outcome.dead += 1
            log.warning("delivery dead-lettered", extra={"delivery": delivery_id, "error": error})
        else:
            values = {"next_at": now + timedelta(seconds=backoff(self.settings, attempts)), "last_error": error}
            outcome.retrying += 1
            log.info("delivery failed; will retry", extra={"delivery": delivery_id, "error": error})
        with self.ledger.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.state == "pending")
                .values(attempts=attempts, lease_until=None, **values)
            )

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
        if self._thread is not None:
            self._thread.join(timeout)
