"""How the intake learns, from the broker and not from the message, which queue a message came on; and how it
refuses a message too large or too deep before decoding it (issue 22, findings 1, 9 and 13).

The tenant of an intake message is the queue it was taken from: `pixelmill.intake.<tenant>` (`pixelmill.intake`:
the tenant `default`), a queue only that tenant's broker user may write (docs/operations.md, "Broker ACLs").

- RabbitMQ sets `exchange` and `routing_key` of a delivery itself; a tenant's user may write only its own
  exchange, which is bound to its own queue, so the exchange names the queue.
- On Redis kombu takes `delivery_info` (and the delivery tag) from the envelope the PRODUCER wrote: a tenant could
  claim another tenant's queue, and a forged exchange would even make kombu's restore of an unacked message push
  it into another tenant's queue. `ProvenChannel` therefore overwrites both with what the broker said: the list
  key BRPOP popped, as a routing key on the anonymous exchange (a restore goes back to that very list), and a
  fresh delivery tag. It also refuses, without decoding, an envelope over the byte or depth bound or one that is
  not JSON (kombu would raise in the consumer loop and stop the intake).

`bounded_json_loads` is the intake's JSON decoder for task bodies: it measures the raw bytes before json.loads,
and hands the task a `Refused` (never decodable from JSON, so no client can forge one) carrying the problem and
the raw body's `reply_to`, so the caller still hears `job.rejected`.
"""

from __future__ import annotations

import json
import logging
from queue import Empty
from typing import Any

from kombu import serialization
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json
from kombu.utils.encoding import bytes_to_str
from kombu.utils.uuid import uuid

from producer.message_bounds import Refused, depth, refusal

log = logging.getLogger(__name__)

INTAKE_PREFIX = "pixelmill.intake"
_ENVELOPE_DEPTH = 8  # kombu's Redis envelope: {"body": "...", "headers": {...}, "properties": {"delivery_info": {}}}


class Bounds:
    """The intake's limits (set from settings when the intake starts)."""

    max_bytes = 16 * 1024 * 1024
    max_depth = 32


def arrival_queue(delivery_info: dict[str, Any] | None) -> str | None:
    """The queue a task message was taken from, as the broker (or `ProvenChannel`) recorded it."""
    info = delivery_info or {}
    exchange, routing_key = info.get("exchange"), info.get("routing_key")
    name = exchange or routing_key
    return name if isinstance(name, str) and name else None


def tenant_name_of(queue: str | None) -> str | None:
    """The tenant whose intake queue this is (`pixelmill.intake` -> `default`), or None for any other name."""
    if queue == INTAKE_PREFIX:
        return "default"
    if queue is not None and queue.startswith(INTAKE_PREFIX + "."):
        return queue[len(INTAKE_PREFIX) + 1 :] or None
    return None


class ProvenChannel(kombu_redis.Channel):
    """kombu's Redis channel, with the delivery's queue and tag taken from the broker (see the module doc)."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                popped = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not popped:
                raise Empty()
            dest, item = popped
            queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            payload = _envelope(queue, item)
            if payload is not None:
                self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu's own reset
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush is not None:
                flush()


def _envelope(queue: str, item: bytes) -> dict[str, Any] | None:
    """The envelope with its delivery facts from the broker, or None (logged) when it cannot be read safely."""
    # The envelope holds the body in base64 (4/3) beside headers: up to 4x the cap is read, so a body over the cap
    # is still answered (`bounded_json_loads`); beyond that, and on a broker without a cap, it is dropped unread.
    if len(item) > 4 * Bounds.max_bytes or depth(item, _ENVELOPE_DEPTH) > _ENVELOPE_DEPTH:
        log.warning("intake envelope refused unread", extra={"queue": queue, "bytes": len(item)})
        return None
    try:
        payload = json.loads(bytes_to_str(item))
    except (ValueError, UnicodeDecodeError):
        payload = None
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict):
        log.warning("intake message is not a kombu envelope; dropped", extra={"queue": queue, "bytes": len(item)})
        return None
    properties["delivery_info"] = {"exchange": "", "routing_key": queue}
    properties["delivery_tag"] = uuid()
    assert isinstance(payload, dict)
    return payload


class ProvenTransport(kombu_redis.Transport):
    Channel = ProvenChannel


def bounded_json_loads(raw: bytes | str) -> Any:
    """kombu's json loads, after the byte and depth bounds; a refused body becomes the task call
    `submit(Refused(...))`."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    refused = refusal(data, max_bytes=Bounds.max_bytes, max_depth=Bounds.max_depth)
    if refused is not None:
        return [[refused], {}, {}]
    return kombu_json.loads(data)


def install(max_bytes: int, max_depth: int) -> None:
    """In the intake process: Redis URLs use `ProvenTransport`, and JSON bodies are decoded by
    `bounded_json_loads` (the intake decodes nothing but intake messages; what it sends is encoded as before)."""
    from kombu import transport

    Bounds.max_bytes, Bounds.max_depth = max_bytes, max_depth
    for alias in ("redis", "rediss"):
        transport.TRANSPORT_ALIASES[alias] = f"{__name__}:ProvenTransport"
    for alias in ("redis", "rediss"):
        transport._transport_cache.pop(alias, None)
    serialization.register(
        "json",
        kombu_json.dumps,
        bounded_json_loads,
        content_type="application/json",
        content_encoding="utf-8",
    )


__all__ = ["Bounds", "ProvenTransport", "Refused", "arrival_queue", "install", "tenant_name_of"]
