"""Progress of jobs, read straight from the ledger."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pixelmill.ledger import Item, Job, State, utcnow


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


def job_status(session: Session, job_id: int) -> JobStatus:
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id}; `pixelmill jobs` lists them")
    counts = {state: 0 for state in State}
    for state, count in session.execute(
            select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)):
        counts[state] = count
    first_start, last_finish = session.execute(
        select(func.min(Item.started_at), func.max(Item.finished_at))
        .where(Item.job_id == job_id, Item.state == State.succeeded)).one()
    blocked_by = Counter(
        f"{reason.get('stage', '?')}:{reason.get('category', '?')}" if reason else "unknown"
        for reason in session.scalars(select(Item.block_reason).where(Item.job_id == job_id,
                                                                      Item.state == State.blocked)))
    rate = eta = None
    done = counts[State.succeeded]
    remaining = counts[State.pending] + counts[State.queued] + counts[State.running]
    if done and first_start is not None:
        end: datetime = utcnow() if remaining else last_finish
        elapsed = (end - first_start).total_seconds()
        if elapsed > 0:
            rate = done / elapsed
            eta = remaining / rate
    return JobStatus(
        job=job.id, name=job.name, created=job.created.isoformat(timespec="seconds"), model=job.model,
        total=sum(counts.values()), skipped=int(job.counts.get("skipped", 0)),
        images_per_s=round(rate, 3) if rate else None, eta_s=round(eta, 1) if eta is not None else None,
        blocked_by=dict(sorted(blocked_by.items())),
        **{state.value: counts[state] for state in State})


def list_jobs(session: Session, limit: int = 50) -> list[JobStatus]:
    ids = session.scalars(select(Job.id).order_by(Job.id.desc()).limit(limit)).all()
    return [job_status(session, job_id) for job_id in ids]
