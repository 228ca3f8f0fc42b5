"""The queue contract: task and queue names, the chunk message, and the Celery configuration both sides use.

A message is `{"v": 1, "job": <job id>, "items": [<item id>, ...]}`, JSON only: up to
PIXELMILL_ITEMS_PER_MESSAGE items, which the worker cuts into GPU batches of PIXELMILL_BATCH_SIZE (`batches`).
It carries ids, not prompts: the ledger holds the truth, so a stale or duplicated message can do no harm.

Each model has its own queue (`queue_for`), so a worker consumes only the work for the model it has loaded.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from contract.identity import resolve_model
from contract.params import GenerationParams
from contract.settings import Settings, is_amqp

TASK_GENERATE = "pixelmill.generate"
QUEUE_PREFIX = "pixelmill"
MESSAGE_VERSION = 1


def queue_for(model: str) -> str:
    """The queue of one model: readable, and unique per model id (a path or a hub id)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.rstrip("/").rsplit("/", 1)[-1]).strip("-.")[:40] or "model"
    return f"{QUEUE_PREFIX}.{name}.{hashlib.sha256(model.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Chunk:
    job: int
    items: tuple[int, ...]

    def to_message(self) -> dict[str, Any]:
        return {"v": MESSAGE_VERSION, "job": self.job, "items": list(self.items)}

    def batches(self, size: int) -> list[Chunk]:
        """The GPU batches of this message; each is claimed, generated and recorded on its own."""
        return [Chunk(job=self.job, items=self.items[i : i + size]) for i in range(0, len(self.items), size)]

    @classmethod
    def from_message(cls, body: Any) -> Chunk:
        if not isinstance(body, dict) or body.get("v") != MESSAGE_VERSION:
            raise ValueError(f"not a pixelmill v{MESSAGE_VERSION} chunk message: {body!r:.200}")
        job, items = body.get("job"), body.get("items")
        if (
            not isinstance(job, int)
            or not isinstance(items, list)
            or not items
            or not all(isinstance(i, int) for i in items)
        ):
            raise ValueError(f"malformed chunk message: {body!r:.200}")
        return cls(job=job, items=tuple(items))


@dataclass(frozen=True)
class QueuedItem:
    """An item to publish: chunks group items of one job that share generation parameters."""

    item: int
    job: int
    params: GenerationParams


def plan_chunks(items: Iterable[QueuedItem], size: int) -> list[Chunk]:
    """Cut items into GPU batches: one batch shares a job and its pipeline params."""
    groups: dict[tuple[int, GenerationParams], list[int]] = defaultdict(list)
    for queued in items:
        groups[(queued.job, queued.params)].append(queued.item)
    return [
        Chunk(job=job_id, items=tuple(ids[i : i + size]))
        for (job_id, _), ids in groups.items()
        for i in range(0, len(ids), size)
    ]


def publish_items(
    app: Celery, items: Iterable[QueuedItem], model: str, batch_size: int, items_per_message: int | None = None
) -> list[Chunk]:
    """The one way items reach a worker: cut them into messages of up to `items_per_message` items (whole GPU
    batches: at least `batch_size`) and publish those on the model's queue. Returns the chunks sent (the caller
    marks their items queued, where they were pending)."""
    chunks = plan_chunks(items, max(batch_size, items_per_message or batch_size))
    publish(app, chunks, queue_for(model))
    return chunks


def broker_url(settings: Settings) -> str:
    """The configured broker, or the embedded Redis (started on first use)."""
    if settings.broker_url:
        return settings.broker_url
    from contract.broker import EmbeddedRedis

    # 1.5 x the intake's cap: a message the intake would read fits with its envelope (the body in base64, 4/3, and
    # the headers); anything larger is refused at the socket and never read by the intake.
    return EmbeddedRedis(settings.data_path, settings.intake_max_message_bytes * 3 // 2).ensure_running()


def serve_only(app: Celery, *names: str) -> None:
    """A consuming app runs only its own tasks: Celery's built-ins (`celery.group`, `celery.chord`, `celery.map`,
    ...) are unregistered once the app is finalised, so a message naming one is discarded as unregistered.
    Whoever may write a queue could otherwise have the consumer run `celery.group`, which republishes any
    signature with options the sender chose (another tenant's intake queue, kombu's own keys) under the
    consumer's broker user."""

    def drop(sender: Celery, **_: Any) -> None:
        for name in [name for name in sender.tasks if name not in names]:
            sender.tasks.unregister(name)

    if app.finalized:
        drop(app)
    else:
        app.on_after_finalize.connect(drop, weak=False)


def make_celery(settings: Settings, *, main: str = "pixelmill") -> Celery:
    url = broker_url(settings)
    if is_amqp(url):
        # Quorum queues are replicated and survive a broker node; publisher confirms mean a publish returns
        # only once the broker has the message. Its consumer_timeout is checked in settings.
        transport: dict[str, Any] = {"confirm_publish": True}
        queue_type = "quorum"
    else:
        # Redis redelivers an unacked message after the visibility timeout: keep it above the longest batch.
        transport = {"visibility_timeout": settings.visibility_timeout}
        queue_type = "classic"
    app = Celery(main, set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        task_default_queue_type=queue_type,
        task_create_missing_queue_type=queue_type,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],  # a pickled message is rejected, never executed
        event_serializer="json",
        task_ignore_result=True,  # the ledger records outcomes; no result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="prefork",
        # A broker outage must not kill the batch in hand (that cost each of its items an attempt): it runs on
        # and records; the redelivered message later finds its items finished or held, and is skipped.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        task_default_queue=queue_for(resolve_model(settings.default_model)),
        worker_hijack_root_logger=False,
        worker_proc_alive_timeout=settings.model_load_timeout,  # a child loads its model before it is "up"
        enable_utc=True,
    )
    return app


def declare_queue(app: Celery, producer: Any, queue: str) -> None:
    """Declare `queue` now, whatever kombu remembers; send on this producer with `declare=[]` after it.

    Left to itself kombu declares a queue once per process: its producer pool is shared by every app with the
    same broker URL, and its cache of declared queues with it. A queue deleted since (by an operator, a policy,
    a client, a test's clean-up) would then swallow every message: the default exchange drops what it cannot
    route, and the broker still confirms it.
    """
    app.amqp.queues[queue].bind(producer.channel).declare()


def publish(app: Celery, chunks: Iterable[Chunk], queue: str) -> int:
    """Send chunks over one pooled connection (per-message connections are an order of magnitude slower), in
    pipelined batches where the transport supports them."""
    sent = 0
    with app.producer_or_acquire() as producer:
        declare_queue(app, producer, queue)
        # producer.batch: Redis gets the LPUSHes in pipelines of 1,000 (one round trip each instead of one per
        # message); AMQP publishes (and confirms) one by one as before.
        with producer.batch(max_size=1000):
            for chunk in chunks:
                app.send_task(
                    TASK_GENERATE,
                    args=[chunk.to_message()],
                    queue=queue,
                    producer=producer,
                    declare=[],  # declared above
                    argsrepr=f"[job {chunk.job}: {len(chunk.items)} items]",
                )  # not a repr of every id
                sent += 1
    return sent


def queue_depth(app: Celery, queue: str) -> int:
    """Messages waiting in the broker (not counting ones a worker already holds)."""
    from kombu.exceptions import ChannelError

    with app.connection_for_write() as conn:
        try:
            _name, count, _consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # never declared: nothing can be waiting in it
            return 0
        return int(count)
