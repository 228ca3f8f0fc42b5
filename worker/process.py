"""One chunk message, end to end: claim → generate as one batch → (upload threads) encode → store → record.

Storage is written before the ledger says succeeded, and both writes are idempotent (deterministic key,
unique image row), so a crash anywhere in between is repaired by simply running the chunk again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from pixelmill.db import Ledger
from pixelmill.identity import object_key
from pixelmill.ledger import Item, Job
from pixelmill.queue import Chunk, params_key, plan_chunks, publish, queue_for
from pixelmill.settings import Settings
from pixelmill.storage import Storage
from worker import claims
from worker.encode import CONTENT_TYPES, EXTENSIONS, encode
from worker.engine import Engine, Request, load_engine
from worker.uploads import Uploads

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a worker process holds for its lifetime (built after fork)."""

    settings: Settings
    ledger: Ledger
    storage: Storage
    app: Celery
    node: str
    uploads: Uploads = field(init=False)

    def __post_init__(self) -> None:
        self.uploads = Uploads(self.settings.upload_threads)

    def close(self) -> None:
        self.uploads.close(timeout=self.settings.task_time_limit)
        self.ledger.close()


@dataclass(frozen=True)
class Spec:
    """A claimed item detached from its session."""

    id: int
    key: str
    variant: int
    prompt: str
    negative: str
    seed: int
    params: dict[str, Any]


@dataclass
class Outcome:
    succeeded: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: int = 0


def process_chunk(ctx: Context, chunk: Chunk) -> Future[Outcome]:
    """Generate a chunk and hand its images to the upload threads. The returned future completes once every
    object is stored and the ledger records the outcome; the GPU is free for the next chunk before that."""
    settings = ctx.settings
    with ctx.ledger.session() as session:
        job = session.get(Job, chunk.job)
        if job is None:
            log.warning("chunk for unknown job dropped", extra={"job": chunk.job})
            return _completed(Outcome(skipped=len(chunk.items)))
        model = job.model
    engine: Engine | None = None
    try:  # before claiming, so model loading never eats into a lease
        engine, load_error = load_engine(model, settings), None
    except SoftTimeLimitExceeded:
        load_error = (f"loading model {model!r} took longer than PIXELMILL_TASK_SOFT_TIME_LIMIT "
                      f"({settings.task_soft_time_limit} s), which must cover a worker's first load")
    except Exception:
        load_error = f"loading model {model!r} failed:\n" + traceback.format_exc(limit=5)

    slot = ctx.uploads.begin()  # waits while earlier chunks are still being stored
    try:
        with ctx.ledger.session() as session:
            items = claims.claim(session, chunk.job, chunk.items, node=ctx.node, busy=ctx.uploads.busy(),
                                 lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts)
            specs = [_spec(item) for item in items]
        if not specs:
            log.info("chunk already done or held elsewhere", extra={"job": chunk.job, "items": len(chunk.items)})
            return _completed(Outcome(skipped=len(chunk.items)))

        errors: dict[int, str] = {}
        stores: dict[int, Future[dict[str, Any]]] = {}
        if engine is None:  # claimed all the same, so attempts bound the retries of a broken model
            errors = {spec.id: load_error or "no engine" for spec in specs}
        else:
            _produce(ctx, chunk.job, model, engine, specs, stores, errors)
            with ctx.ledger.session() as session:  # storing gets a full lease, whatever generation took
                claims.renew_lease(session, list(stores), node=ctx.node, lease_seconds=settings.lease_seconds)
        record = functools.partial(_record, ctx, chunk, model, specs, errors,
                                   engine.engine_id if engine else "-", len(chunk.items) - len(specs))
        return ctx.uploads.finish(slot, [spec.id for spec in specs], stores, record)
    finally:
        slot.release()  # a no-op once `finish` has handed the slot to the recorder


def _produce(ctx: Context, job_id: int, model: str, engine: Engine, specs: list[Spec],
             stores: dict[int, Future[dict[str, Any]]], errors: dict[int, str]) -> None:
    """Generate each batch and hand every image to an upload thread as soon as it exists. A soft time limit
    ends generation: items without an image by then count as a failed attempt."""
    groups: dict[str, list[Spec]] = defaultdict(list)
    for spec in specs:  # a chunk is planned homogeneous; a hand-made message may not be
        groups[params_key(spec.params)].append(spec)
    try:
        for group in groups.values():
            for spec, image, timings, engine_id, error in _generate(engine, group):
                if error is not None:
                    errors[spec.id] = error
                else:
                    stores[spec.id] = ctx.uploads.store(
                        functools.partial(_store, ctx, job_id, model, engine_id, spec, image, timings))
    except SoftTimeLimitExceeded:
        limit = ctx.settings.task_soft_time_limit
        for spec in specs:
            if spec.id not in stores:
                errors.setdefault(spec.id, f"batch exceeded PIXELMILL_TASK_SOFT_TIME_LIMIT ({limit} s)")
    except Exception:  # whatever broke, every claimed item still gets an outcome recorded
        error = "generation failed:\n" + traceback.format_exc(limit=5)
        for spec in specs:
            if spec.id not in stores:
                errors.setdefault(spec.id, error)


def _record(ctx: Context, chunk: Chunk, model: str, specs: list[Spec], errors: dict[int, str], engine_id: str,
            skipped: int, stores: Mapping[int, Future[dict[str, Any]]]) -> Outcome:
    """On the recorder thread, once every store has finished: successes, failures, retries."""
    settings = ctx.settings
    done: dict[int, dict[str, Any]] = {}
    for item_id, future in stores.items():
        try:
            done[item_id] = future.result()
        except Exception as exc:
            errors[item_id] = "storing the image failed:\n" + "".join(
                traceback.format_exception(exc, limit=5))
    outcome = Outcome(skipped=skipped)
    retry: list[tuple[int, int, dict[str, Any]]] = []
    with ctx.ledger.session() as session:
        for item_id, image in done.items():
            claims.record_success(session, item_id, image)
            outcome.succeeded.append(item_id)
        for spec in specs:
            if spec.id in errors:
                if claims.record_failure(session, spec.id, errors[spec.id], node=ctx.node,
                                         max_attempts=settings.max_attempts):
                    retry.append((spec.id, chunk.job, spec.params))
                    outcome.retried.append(spec.id)
                else:
                    outcome.failed.append(spec.id)
    if retry:  # were it lost here, the reconciler would publish them again
        publish(ctx.app, plan_chunks(retry, settings.batch_size), queue_for(model))
    for item_id in outcome.retried + outcome.failed:
        log.warning("item failed", extra={"job": chunk.job, "item": item_id,
                                          "retry": item_id in outcome.retried,
                                          "error": errors[item_id].strip().splitlines()[-1][:300]})
    log.info("chunk finished", extra={"job": chunk.job, "succeeded": len(outcome.succeeded),
                                      "retried": len(outcome.retried), "failed": len(outcome.failed),
                                      "skipped": outcome.skipped, "engine": engine_id})
    return outcome


def _completed(outcome: Outcome) -> Future[Outcome]:
    future: Future[Outcome] = Future()
    future.set_result(outcome)
    return future


def _spec(item: Item) -> Spec:
    return Spec(id=item.id, key=item.item_key, variant=item.variant, prompt=item.prompt,
                negative=item.negative, seed=item.seed, params=dict(item.params))


def _generate(engine: Engine, specs: list[Spec]):  # type: ignore[no-untyped-def]
    """Yield (spec, image, timings, engine id, error); a failing batch is retried item by item to isolate the
    culprit."""
    p = specs[0].params
    request = Request(prompts=[s.prompt for s in specs], negatives=[s.negative for s in specs],
                      seeds=[s.seed for s in specs], width=p["width"], height=p["height"],
                      steps=p["steps"], guidance=p["guidance"])
    try:
        result = engine.generate(request)
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        if len(specs) == 1:
            yield specs[0], None, None, None, "generation failed:\n" + traceback.format_exc(limit=5)
            return
        log.warning("batch failed; generating its items one by one", extra={"items": len(specs)})
        for spec in specs:
            yield from _generate(engine, [spec])
        return
    timings = {**result.timings, "batch": len(specs)}
    engine_id = result.engine_id or engine.engine_id
    for spec, image in zip(specs, result.images, strict=True):
        yield spec, image, timings, engine_id, None


def _store(ctx: Context, job_id: int, model: str, engine_id: str, spec: Spec, image: Any,
           timings: dict[str, Any]) -> dict[str, Any]:
    settings = ctx.settings
    fmt = settings.image_format
    p = spec.params
    metadata = {
        "prompt": spec.prompt, "negative_prompt": spec.negative, "seed": str(spec.seed), "model": model,
        "steps": str(p["steps"]), "guidance": str(p["guidance"]), "size": f"{p['width']}x{p['height']}",
        "job": str(job_id), "item": spec.key, "variant": str(spec.variant), "engine": engine_id,
    }
    started = time.perf_counter()
    data = encode(image, fmt, metadata, quality=settings.image_quality)
    encoded = time.perf_counter()
    key = object_key(job_id, spec.key, spec.variant, EXTENSIONS[fmt])
    if not ctx.storage.create(key, data, CONTENT_TYPES[fmt]):
        # An earlier attempt stored this item (then died before recording it): record what is stored.
        data = ctx.storage.get(key)
        log.info("object already stored; recording it", extra={"job": job_id, "key": key})
    stored = time.perf_counter()
    return {
        "storage_key": key, "sha256": hashlib.sha256(data).hexdigest(), "width": image.width,
        "height": image.height, "bytes": len(data), "format": fmt, "engine_id": engine_id,
        "timings": {**timings, "encode": round(encoded - started, 6), "store": round(stored - encoded, 6)},
    }
