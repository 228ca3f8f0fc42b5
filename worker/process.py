"""One chunk message, end to end: claim → generate as one batch → judge → (upload threads) encode → store → record.

Storage is written before the ledger says succeeded, and both writes are idempotent (deterministic key,
unique image and candidate rows), so a crash anywhere in between is repaired by simply running the chunk again.
Judging (safety check and scores) runs batched on one judge thread, so without a quality gate it overlaps the
next batch's generation; a gate needs the scores before it can re-roll, so gated chunks wait for them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from pixelmill.checks import Candidate, Checks, candidate_seed
from pixelmill.db import Ledger
from pixelmill.identity import object_key
from pixelmill.ledger import Item, Job
from pixelmill.queue import Chunk, params_key, plan_chunks, publish, queue_for
from pixelmill.settings import Settings
from pixelmill.storage import CONTENT_TYPES, Storage, create_or_get
from worker import claims, provenance  # provenance: XMP + C2PA marks (worker/provenance.py)
from worker.encode import EXTENSIONS, encode
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
    judging: ThreadPoolExecutor = field(init=False)  # one thread: the judge's models run one batch at a time

    def __post_init__(self) -> None:
        self.uploads = Uploads(self.settings.upload_threads)
        self.judging = ThreadPoolExecutor(1, thread_name_prefix="pixelmill-judge")

    def close(self) -> None:
        self.uploads.close(timeout=self.settings.task_time_limit)
        self.judging.shutdown(wait=False, cancel_futures=True)
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
    blocked: list[int] = field(default_factory=list)
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
        model, checks = job.model, Checks.from_json(job.params.get("checks"))
    engine: Engine | None = None
    judge: Any = None
    try:  # before claiming, so model loading never eats into a lease
        engine, load_error = load_engine(model, settings), None
        from worker.judge import load_judge  # imports torch: only ever after fork

        judge = load_judge(checks)
    except SoftTimeLimitExceeded:
        engine, load_error = None, (f"loading model {model!r} or the job's checks took longer than "
                                    f"PIXELMILL_TASK_SOFT_TIME_LIMIT ({settings.task_soft_time_limit} s), "
                                    "which must cover a worker's first load")
    except Exception:
        what = f"model {model!r}" if engine is None else "the job's checker/scorer models"
        engine, load_error = None, f"loading {what} failed:\n" + traceback.format_exc(limit=5)

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
            _produce(ctx, chunk.job, model, engine, judge, checks, specs, stores, errors)
            with ctx.ledger.session() as session:  # storing gets a full lease, whatever generation took
                claims.renew_lease(session, list(stores), node=ctx.node, lease_seconds=settings.lease_seconds)
        record = functools.partial(_record, ctx, chunk, model, specs, errors,
                                   engine.engine_id if engine else "-", len(chunk.items) - len(specs))
        return ctx.uploads.finish(slot, [spec.id for spec in specs], stores, record)
    finally:
        slot.release()  # a no-op once `finish` has handed the slot to the recorder


Judged = tuple[list[Candidate], dict[str, Any]]  # an item's candidates, and its batch's timings


def _produce(ctx: Context, job_id: int, model: str, engine: Engine, judge: Any, checks: Checks, specs: list[Spec],
             stores: dict[int, Future[dict[str, Any]]], errors: dict[int, str]) -> None:
    """Generate and judge each batch, and hand every item to an upload thread. A soft time limit ends
    generation: items without an image by then count as a failed attempt."""
    groups: dict[str, list[Spec]] = defaultdict(list)
    for spec in specs:  # a chunk is planned homogeneous; a hand-made message may not be
        groups[params_key(spec.params)].append(spec)
    store = functools.partial(_store, ctx, job_id, model, checks)
    try:
        for group in groups.values():
            if checks.gate_n > 1:
                for spec, judged in _gated(ctx, engine, judge, checks, group, errors):
                    stores[spec.id] = ctx.uploads.store(functools.partial(store, spec, lambda j=judged: j))
                continue
            made = []
            for spec, image, timings, engine_id, error in _generate(engine, group):
                if error is not None:
                    errors[spec.id] = error
                else:
                    made.append((spec, image, timings, engine_id))
            if not made:
                continue
            verdicts = ctx.judging.submit(_judge, judge, [m[1] for m in made], [m[0].prompt for m in made])
            for i, (spec, image, timings, engine_id) in enumerate(made):
                stores[spec.id] = ctx.uploads.store(functools.partial(
                    store, spec, functools.partial(_first, verdicts, i, spec, image, timings, engine_id)))
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


def _gated(ctx: Context, engine: Engine, judge: Any, checks: Checks, group: list[Spec],
           errors: dict[int, str]) -> list[tuple[Spec, Judged]]:
    """Candidates n = 0, 1, … with seeds seed + n, judged after each round: re-roll mode stops an item at its
    first candidate that passes the gate (and is not blocked), best-of-n always makes n."""
    found: dict[int, list[Candidate]] = {spec.id: [] for spec in group}
    timings: dict[str, Any] = {}
    pending = list(group)
    for n in range(checks.gate_n):
        made = []
        rolled = [replace(spec, seed=candidate_seed(spec.seed, n)) for spec in pending]
        for spec, image, batch_timings, engine_id, error in _generate(engine, rolled):
            if error is None:
                made.append((spec, image, engine_id))
                timings = batch_timings
            elif not found[spec.id]:
                errors[spec.id] = error
        if made:
            verdicts, seconds = ctx.judging.submit(_judge, judge, [image for _, image, _ in made],
                                                   [spec.prompt for spec, _, _ in made]).result()
            timings = {**timings, "judge": round(timings.get("judge", 0.0) + seconds, 6)}
            for (spec, image, engine_id), (scores, safety) in zip(made, verdicts, strict=True):
                found[spec.id].append(Candidate(n=n, seed=spec.seed, scores=scores, safety=safety, image=image,
                                                engine_id=engine_id))
        if checks.gate_mode == "reroll":
            pending = [spec for spec in pending if found[spec.id] and not _passes(checks, found[spec.id][-1])]
        if not pending:
            break
    judged = []
    for spec in group:
        if found[spec.id]:
            errors.pop(spec.id, None)  # a later candidate made up for a failed one
            judged.append((spec, (found[spec.id], {**timings, "candidates": len(found[spec.id])})))
    return judged


def _passes(checks: Checks, candidate: Candidate) -> bool:
    return not candidate.blocked and checks.passes(candidate.scores)


def _judge(judge: Any, images: list[Any], prompts: list[str]) -> tuple[list[Any], float]:
    """On the judge thread: one batched call, timed."""
    started = time.perf_counter()
    verdicts = judge(images, prompts)
    return verdicts, time.perf_counter() - started


def _first(verdicts: Future[tuple[list[Any], float]], i: int, spec: Spec, image: Any,
           timings: dict[str, Any], engine_id: str) -> Judged:
    """The single candidate of an ungated item, once its batch is judged."""
    judged, seconds = verdicts.result()
    scores, safety = judged[i]
    return ([Candidate(n=0, seed=spec.seed, scores=scores, safety=safety, image=image, engine_id=engine_id)],
            {**timings, "judge": round(seconds, 6)})


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
        for item_id, finish in done.items():
            claims.record_finish(session, item_id, finish["image"], finish["candidates"], blocked=finish["blocked"])
            (outcome.blocked if finish["blocked"] else outcome.succeeded).append(item_id)
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
                                      "blocked": len(outcome.blocked),
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


def _store(ctx: Context, job_id: int, model: str, checks: Checks, spec: Spec,
           judged: Callable[[], Judged]) -> dict[str, Any]:
    """Keep the best candidate: a public object, or (blocked) a quarantined one or none; rows for the ledger."""
    settings = ctx.settings
    candidates, timings = judged()
    kept = checks.best(candidates)
    fmt = settings.image_format
    p = spec.params
    metadata = {
        "prompt": spec.prompt, "negative_prompt": spec.negative, "seed": str(kept.seed), "model": model,
        "steps": str(p["steps"]), "guidance": str(p["guidance"]), "size": f"{p['width']}x{p['height']}",
        "job": str(job_id), "item": spec.key, "variant": str(spec.variant), "engine": kept.engine_id,
        "candidate": str(kept.n),
    }
    rows = [{"candidate": c.n, "seed": c.seed, "scores": c.scores, "safety": c.safety, "engine_id": c.engine_id,
             "outcome": "blocked" if c.blocked else "kept" if c is kept else "rejected"} for c in candidates]
    public = object_key(job_id, spec.key, spec.variant, EXTENSIONS[fmt])
    key = checks.quarantine_key(public) if kept.blocked else public
    blocked = ({"stage": "image", "category": "nsfw", "checker": kept.safety["checker"],
                "flagged": kept.safety["flagged"], "quarantined": key} if kept.blocked else None)
    if key is None:  # blocked, and PIXELMILL_QUARANTINE=none: the image is not kept anywhere
        return {"image": None, "candidates": rows, "blocked": blocked}
    started = time.perf_counter()
    data = encode(kept.image, fmt, metadata, quality=settings.image_quality)  # embeds the provenance XMP
    data, marks = provenance.sign(data, fmt, settings)  # provenance: C2PA manifest when configured, before storing
    encoded = time.perf_counter()
    data = create_or_get(ctx.storage, key, data, CONTENT_TYPES[fmt])
    stored = time.perf_counter()
    image = {
        "storage_key": key, "sha256": hashlib.sha256(data).hexdigest(), "width": kept.image.width,
        "height": kept.image.height, "bytes": len(data), "format": fmt, "engine_id": kept.engine_id,
        "timings": {**timings, "encode": round(encoded - started, 6), "store": round(stored - encoded, 6)},
        "scores": kept.scores, "safety": kept.safety, "candidate": kept.n,
        "visibility": "quarantine" if kept.blocked else "public",
        "provenance": marks.as_json(),  # provenance: what the stored bytes carry
    }
    return {"image": image, "candidates": rows, "blocked": blocked}
