"""One chunk message, end to end, as numbered steps (each a named function with typed inputs and outputs):

1. `read_job`         the job's model and checks, raised to this worker's safety floor (`Policy`)
2. `load_models`      the engine and the judge, before claiming, so loading never eats into a lease
3. `claim_items`      `transitions.claim`: the chunk's items this process may work on, now `running`;
   `screen_prompts`   the worker's own prompt check: what it refuses is `blocked`, whatever the job asked
4. `make_candidates`  generate and judge each item's candidates (worker/candidates.py)
5. `store_item`       on an upload thread: keep the best candidate, encode, store (worker/store.py)
6. `Recording`        on the recorder thread, once every store is done: finish, fail or re-queue each item

Storage is written before the ledger says succeeded, and both writes are idempotent (deterministic key,
unique image and candidate rows), so a crash anywhere in between is repaired by simply running the chunk
again. Steps 5 and 6 run off the task: the GPU takes the next chunk while this one is stored.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session

from contract import faults, logs, metrics, promptfilter, transitions
from contract.checks import Checks, Policy, PolicyError
from contract.ledger import Ledger
from contract.promptfilter import PromptFilter
from contract.queue import Chunk
from contract.schema import Job, Tenant, utcnow
from contract.settings import Settings
from contract.storage import Storage
from contract.transitions import ClaimedItem, Finish
from worker.candidates import Candidates, Failure, JobSpec, Judge, make_candidates
from worker.engine import Engine, load_engine
from worker.leases import renew_lease, within_lease
from worker.model_guard import foreign_model
from worker.remote_inputs import RemoteInputs
from worker.store import store_item
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
    policy: Policy = field(init=False)
    prompt_floor: PromptFilter | None = field(init=False)
    inputs: RemoteInputs = field(init=False)  # local copies of s3 photos, masks and LoRAs

    def __post_init__(self) -> None:
        self.inputs = RemoteInputs(self.settings)
        self.uploads = Uploads(self.settings.upload_threads)
        self.judging = ThreadPoolExecutor(1, thread_name_prefix="pixelmill-judge")
        self.policy = Policy.from_settings(self.settings)
        self.prompt_floor = promptfilter.load(self.policy.prompt_lists) if self.policy.prompt_lists else None

    def back_off(self, session: Session, item_id: int, error: str) -> bool:
        """`transitions.back_off` on this worker's PIXELMILL_INFRA_RETRY_* settings."""
        budget, base, cap = (
            self.settings.infra_retry_budget,
            self.settings.infra_retry_base,
            self.settings.infra_retry_max_delay,
        )
        return transitions.back_off(session, item_id, error, node=self.node, budget=budget, base=base, cap=cap)

    def close(self) -> None:
        self.uploads.close(timeout=self.settings.task_time_limit)
        self.judging.shutdown(wait=False, cancel_futures=True)
        self.inputs.close()
        self.ledger.close()


@dataclass(frozen=True)
class Models:
    engine: Engine
    judge: Judge


@dataclass
class ChunkOutcome:
    succeeded: list[int] = field(default_factory=list)
    blocked: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: int = 0


def run_chunk(ctx: Context, chunk: Chunk, job: JobSpec | None = None) -> Future[ChunkOutcome]:
    """Generate a chunk and hand its images to the upload threads. The returned future completes once every
    object is stored and the ledger records the outcome; the GPU is free for the next chunk before that.
    `job`: the chunk's job when the caller read it already (once per message, not once per batch)."""
    job = job or read_job(ctx, chunk)  # 1
    if job is None:
        log.warning("chunk for unknown job dropped", extra={"job": chunk.job})
        return _completed(ChunkOutcome(skipped=len(chunk.items)))
    models = load_models(ctx, job)  # 2
    slot = ctx.uploads.begin()  # waits while earlier chunks are still being stored
    try:
        claimed = claim_items(ctx, chunk)  # 3
        claimed_at = time.monotonic()
        metrics.claimed(job.model, (item.created for item in claimed), utcnow())
        try:
            items = screen_prompts(ctx, claimed)
            blocked = len(claimed) - len(items)
            if not items:
                log.info(
                    "chunk already done or held elsewhere",
                    extra={"job": chunk.job, "items": len(chunk.items), "blocked": blocked},
                )
                metrics.recorded(job.model, job.tenant, {"blocked": blocked}, (), (), (), utcnow())
                return _completed(ChunkOutcome(skipped=len(chunk.items) - blocked, blocked=[i.id for i in claimed]))
            if isinstance(models, Failure):  # claimed all the same: attempts bound the retries of a broken model
                made: dict[int, Candidates | Failure] = {item.id: models for item in items}
            else:
                with ctx.inputs.for_chunk(items) as (local, unread):  # s3 inputs read again, their sha256 checked
                    made = make_candidates(  # 4
                        models.engine,
                        models.judge,
                        ctx.judging,
                        job.checks,
                        local,
                        soft_limit=ctx.settings.task_soft_time_limit,
                    )
                made.update(unread)
        except SoftTimeLimitExceeded:
            # The limit struck before generation began (a slow ledger, a long prompt check): the claimed items
            # are still ours and running, so they are recorded now rather than left for their lease to expire.
            over = Failure(f"batch exceeded PIXELMILL_TASK_SOFT_TIME_LIMIT ({ctx.settings.task_soft_time_limit} s)")
            items, made = claimed, {item.id: over for item in claimed}
        stores = {
            item_id: ctx.uploads.store(store_item, ctx.storage, ctx.settings, job, candidates)  # 5
            for item_id, candidates in made.items()
            if isinstance(candidates, Candidates)
        }
        if stores and time.monotonic() - claimed_at > ctx.settings.lease_seconds / 4:
            # Storing gets at least three quarters of a lease, whatever generation took (a quick batch spares the
            # ledger a write; a locked ledger keeps the claim's lease).
            renew_lease(ctx.ledger, list(stores), node=ctx.node, lease_seconds=ctx.settings.lease_seconds)
        failures = {item_id: f for item_id, f in made.items() if isinstance(f, Failure)}
        skipped, refused = len(chunk.items) - len(claimed), [i.id for i in claimed if i not in items]
        recording = Recording(ctx, job, items, failures, skipped=skipped, blocked=refused)  # 6
        return ctx.uploads.finish(slot, [item.id for item in items], stores, recording)
    finally:
        slot.release()  # a no-op once `finish` has handed the slot to the recorder


def read_job(ctx: Context, chunk: Chunk) -> JobSpec | None:
    """The job, with the checks it runs with here (raised to this worker's policy, or why it may not run)."""
    with ctx.ledger.session(readonly=True) as session:
        found = session.execute(
            select(Job, Tenant.name).outerjoin(Tenant, Tenant.id == Job.tenant_id).where(Job.id == chunk.job)
        ).first()  # one round trip per chunk: the job and its tenant's name (the metrics' label)
        if found is None:
            return None
        job, tenant = found[0], found[1] or ""
        model, asked = job.model, Checks.from_json(job.params.get("checks"))
        trace = job.params.get("trace_id")
    try:
        return JobSpec(chunk.job, model, asked=asked, checks=ctx.policy.apply(asked), tenant=tenant, trace=trace)
    except PolicyError as exc:
        return JobSpec(chunk.job, model, asked=asked, checks=asked, refused=str(exc), tenant=tenant, trace=trace)


def load_models(ctx: Context, job: JobSpec) -> Models | Failure:
    """The process's engine for the job's model and its judge for the job's checks (each loaded once and
    kept); a failure to load is recorded against every claimed item."""
    if job.refused is not None:
        return Failure(job.refused, final=True)
    if (refused := foreign_model(ctx.settings, job.model)) is not None:
        return Failure(refused)  # re-published on the job's own model's queue (attempts bound it)
    engine: Engine | None = None
    try:
        engine = load_engine(job.model, ctx.settings)
        from worker.image_checks import load_judge  # imports torch: only ever after fork

        return Models(engine, load_judge(job.checks))
    except SoftTimeLimitExceeded:
        return Failure(
            f"loading model {job.model!r} or the job's checks took longer than "
            f"PIXELMILL_TASK_SOFT_TIME_LIMIT ({ctx.settings.task_soft_time_limit} s), "
            "which must cover a worker's first load"
        )
    except Exception:
        what = f"model {job.model!r}" if engine is None else "the job's checker/scorer models"
        return Failure(f"loading {what} failed:\n" + traceback.format_exc(limit=5))


def claim_items(ctx: Context, chunk: Chunk) -> list[ClaimedItem]:
    settings = ctx.settings
    with ctx.ledger.session() as session:
        return transitions.claim(
            session,
            chunk.job,
            chunk.items,
            node=ctx.node,
            busy=ctx.uploads.busy(),
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        )


def screen_prompts(ctx: Context, items: list[ClaimedItem]) -> list[ClaimedItem]:
    """The worker's prompt floor (PIXELMILL_POLICY_PROMPT_LISTS): every claimed prompt is checked again here,
    so a job written by an old or hostile producer, or with its filter switched off, cannot skip it. The
    items it refuses become `blocked` with `"policy": "worker"` in their reason; the rest go on."""
    if ctx.prompt_floor is None:
        return items
    refused = {item.id: found for item in items if (found := ctx.prompt_floor.check(item.prompt)) is not None}
    if refused:
        with ctx.ledger.session() as session:
            for item_id, found in refused.items():
                transitions.block(session, item_id, {**found.as_dict(), "policy": "worker"}, node=ctx.node)
        log.warning("prompts refused by the worker's policy", extra={"items": len(refused)})
    return [item for item in items if item.id not in refused]


@dataclass(frozen=True)
class Recording:
    """Step 6, called on the recorder thread with every store finished: one transaction records the
    successes and failures; items with attempts left are published again."""

    ctx: Context
    job: JobSpec
    items: Sequence[ClaimedItem]
    failures: Mapping[int, Failure]
    skipped: int
    blocked: list[int]  # refused by the worker's prompt check (already recorded)

    def __call__(self, stores: Mapping[int, Future[Finish]]) -> ChunkOutcome:
        logs.TRACE_ID.set(self.job.trace)  # the recorder thread's log lines: the trace of the job's request
        settings = self.ctx.settings
        errors = dict(self.failures)
        finished: dict[int, Finish] = {}
        for item_id, future in stores.items():
            try:
                finished[item_id] = future.result()
            except Exception as exc:
                errors[item_id] = Failure(
                    "storing the image failed:\n" + "".join(traceback.format_exception(exc, limit=5)),
                    infra=faults.is_infra(exc),
                )
        # A locked or briefly unreachable ledger: the whole transaction is tried again within the lease.
        # Failed items with attempts left go back to pending: the scheduler dispatches them again.
        outcome = within_lease(lambda: self._record(finished, errors), settings)
        self.count(outcome, finished)
        for item_id in outcome.retried + outcome.failed:
            log.warning(
                "item failed",
                extra={
                    "job": self.job.id,
                    "item": item_id,
                    "retry": item_id in outcome.retried,
                    "error": errors[item_id].error.strip().splitlines()[-1][:300],
                },
            )
        log.info(
            "chunk finished",
            extra={
                "job": self.job.id,
                "succeeded": len(outcome.succeeded),
                "blocked": len(outcome.blocked),
                "retried": len(outcome.retried),
                "failed": len(outcome.failed),
                "skipped": outcome.skipped,
            },
        )
        return outcome

    def count(self, outcome: ChunkOutcome, finished: Mapping[int, Finish]) -> None:
        """The chunk's metrics: outcomes, and per recorded image its stages, scores and item latency."""
        recorded, succeeded = set(outcome.succeeded) | set(outcome.blocked), set(outcome.succeeded)
        images = [(item_id, f.image) for item_id, f in finished.items() if item_id in recorded and f.image is not None]
        metrics.recorded(
            self.job.model,
            self.job.tenant,
            {
                "succeeded": len(outcome.succeeded),
                "blocked": len(outcome.blocked),
                "retried": len(outcome.retried),
                "failed": len(outcome.failed),
            },
            [image.timings for _, image in images],
            [image.scores for item_id, image in images if item_id in succeeded],
            [item.created for item in self.items if item.id in recorded],
            utcnow(),
        )

    def _record(self, finished: Mapping[int, Finish], errors: Mapping[int, Failure]) -> ChunkOutcome:
        ctx, settings = self.ctx, self.ctx.settings
        outcome = ChunkOutcome(skipped=self.skipped, blocked=list(self.blocked))
        with ctx.ledger.session() as session:
            for item_id, finish in finished.items():
                transitions.finish(session, item_id, finish)
                (outcome.blocked if finish.blocked else outcome.succeeded).append(item_id)
            for item in self.items:
                if item.id not in errors:
                    continue
                failure = errors[item.id]
                if failure.infra and ctx.back_off(session, item.id, failure.error):
                    outcome.retried.append(item.id)  # dispatched by the scheduler once its delay is over
                elif transitions.fail(
                    session,
                    item.id,
                    failure.error,
                    node=ctx.node,
                    infra=failure.infra,
                    max_attempts=settings.max_attempts,
                    final=failure.final,
                ):
                    outcome.retried.append(item.id)
                else:
                    outcome.failed.append(item.id)
        return outcome


def _completed(outcome: ChunkOutcome) -> Future[ChunkOutcome]:
    future: Future[ChunkOutcome] = Future()
    future.set_result(outcome)
    return future
