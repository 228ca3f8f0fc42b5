"""Progress of jobs, read straight from the ledger."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contract.checks import Checks
from contract.queue import queue_for
from contract.schema import ImageScore, Item, Job, State, Worker, utcnow
from contract.tenants import owned_job


@dataclass
class JobStatus:
    job: int
    name: str
    created: str
    model: str
    total: int
    pending: int
    queued: int
    running: int
    succeeded: int
    blocked: int
    failed: int
    skipped: int  # items of the catalogue that were already done when it was submitted
    images_per_s: float | None
    eta_s: float | None
    blocked_by: dict[str, int] = field(default_factory=dict)  # "<stage>:<category>" -> items
    # score -> {"n", "median", "p10", "p90"} over the job's succeeded images
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    image_checker: str | None = None  # the job's checker; "none" when it ran unchecked on purpose
    gate: str | None = None  # e.g. "clip_score>=28 (reroll, up to 3 candidates)"
    cancelled: int = 0  # `pixelmill cancel`
    # Unfinished job whose model's queue no ready worker has served lately: says so, and how to serve it.
    no_worker: str | None = None
    catalogue: str | None = None  # the named catalogue this job is a run of (`submit --catalogue`)

    @property
    def done(self) -> int:
        return self.succeeded + self.blocked + self.failed + self.cancelled

    @property
    def remaining(self) -> int:
        return self.pending + self.queued + self.running

    @property
    def finished(self) -> bool:
        return self.remaining == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished}


class UnknownJob(LookupError):
    pass


def job_status(session: Session, job_id: int, *, tenant_id: int, stale_after: float = 90.0) -> JobStatus:
    """One job of the tenant's, its progress (another tenant's job: UnknownJob, as a missing one); `stale_after`:
    seconds after a worker's last heartbeat it no longer counts as serving its queue (PIXELMILL_WORKER_STALE_AFTER)."""
    job = owned_job(session, tenant_id, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id}; `pixelmill jobs` lists them")
    counts = {state: 0 for state in State}
    for state, count in session.execute(
        select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)
    ):
        counts[state] = count
    first_start, last_finish = session.execute(
        select(func.min(Item.started_at), func.max(Item.finished_at)).where(
            Item.job_id == job_id, Item.state == State.succeeded
        )
    ).one()
    blocked_by = Counter(
        f"{reason.get('stage', '?')}:{reason.get('category', '?')}" if reason else "unknown"
        for reason in session.scalars(
            select(Item.block_reason).where(Item.job_id == job_id, Item.state == State.blocked)
        )
    )
    checks = Checks.from_json(job.params.get("checks"))
    gate = (
        f"{','.join(map(str, checks.gate))} ({checks.gate_mode.replace('_', '-')}, "
        f"{'up to ' if checks.gate_mode == 'reroll' else ''}{checks.gate_n} candidates)"
        if checks.gate or checks.gate_n > 1
        else None
    )
    rate = eta = None
    done = counts[State.succeeded]
    remaining = counts[State.pending] + counts[State.queued] + counts[State.running]
    if done and first_start is not None:
        end: datetime = utcnow() if remaining or last_finish is None else last_finish
        elapsed = (end - first_start).total_seconds()
        if elapsed > 0:
            rate = done / elapsed
            eta = remaining / rate
    return JobStatus(
        job=job.id,
        name=job.name,
        created=job.created.isoformat(timespec="seconds"),
        model=job.model,
        total=sum(counts.values()),
        skipped=int(job.counts.get("skipped", 0)),
        images_per_s=round(rate, 3) if rate else None,
        eta_s=round(eta, 1) if eta is not None else None,
        blocked_by=dict(sorted(blocked_by.items())),
        scores=score_distributions(session, job_id),
        image_checker=checks.image_checker,
        gate=gate,
        catalogue=job.catalogue,
        no_worker=no_worker_line(session, job.model, since=job.created, stale_after=stale_after) if remaining else None,
        **{state.value: counts[state] for state in State},
    )


def list_jobs(session: Session, limit: int = 50, *, tenant_id: int, stale_after: float = 90.0) -> list[JobStatus]:
    """The tenant's newest `limit` jobs, newest first."""
    ids = session.scalars(select(Job.id).where(Job.tenant_id == tenant_id).order_by(Job.id.desc()).limit(limit)).all()
    return [job_status(session, job_id, tenant_id=tenant_id, stale_after=stale_after) for job_id in ids]


LOAD_GRACE = 600.0  # seconds a live worker may spend loading a model (an engine build, a cold disk) unremarked


def no_worker_line(session: Session, model: str, *, since: datetime, stale_after: float) -> str | None:
    """None while a worker that loaded `model` has sent a heartbeat within `stale_after` s, or a live one has
    been loading it for at most LOAD_GRACE s; otherwise how long its queue has gone unserved (since `since`, the
    job's creation, if no worker ever served it) and the command that would serve it."""
    queue = queue_for(model)
    now = utcnow()
    rows = session.execute(
        select(Worker.state, Worker.last_seen, Worker.error, Worker.started).where(Worker.queue == queue)
    ).all()
    ready = [r.last_seen for r in rows if r.state == "ready"]
    if ready and (now - max(ready)).total_seconds() <= stale_after:
        return None
    loading = [r.started for r in rows if r.state == "loading" and (now - r.last_seen).total_seconds() <= stale_after]
    if loading:  # a live worker still loading the model serves the queue soon: no warning for a while
        waited = (now - min(loading)).total_seconds()
        if waited <= LOAD_GRACE:
            return None
        return (
            f"a worker has been loading this model for {waited:.0f} s and serves no item of queue {queue} yet; "
            "check its log (pixelmill worker --loglevel INFO)"
        )
    last = max([*ready, since]) if ready else since
    failed = [r.error for r in rows if r.state == "failed" and r.error]
    why = f"; a worker failed to load it: {failed[-1]}" if failed else ""
    return (
        f"no worker has served this model's queue {queue} for {(now - last).total_seconds():.0f} s{why}; "
        f"start one: pixelmill worker --model {model}"
    )


def score_distributions(session: Session, job_id: int) -> dict[str, dict[str, float]]:
    """Median, p10 and p90 of every score over the job's succeeded images.

    Read from the (job_id, name, value) index of `image_scores` (filled as items succeed): a count per name,
    then the two values around each percentile's position by OFFSET. A 100k-image job costs a few index
    walks and no JSON decoding."""
    counts = session.execute(
        select(ImageScore.name, func.count()).where(ImageScore.job_id == job_id).group_by(ImageScore.name)
    ).all()
    out: dict[str, dict[str, float]] = {}
    for name, n in sorted(counts):
        summary: dict[str, float] = {"n": n}
        for label, q in (("median", 50), ("p10", 10), ("p90", 90)):
            pos = (n - 1) * q / 100
            around = session.scalars(
                select(ImageScore.value)
                .where(ImageScore.job_id == job_id, ImageScore.name == name)
                .order_by(ImageScore.value)
                .offset(int(pos))
                .limit(2)
            ).all()
            low, upper = around[0], around[-1]
            summary[label] = round(low + (upper - low) * (pos - int(pos)), 4)  # as `percentile` interpolates
        out[name] = summary
    return out


def percentile(values: list[float], q: float, *, ordered: bool = False) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy on the producer.
    `ordered`: the values are already sorted."""
    ordered_values = values if ordered else sorted(values)
    pos = (len(ordered_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered_values) - 1)
    return round(ordered_values[low] + (ordered_values[high] - ordered_values[low]) * (pos - low), 4)
