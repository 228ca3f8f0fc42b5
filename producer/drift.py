"""Drift between nightly runs of a catalogue: each finished run's score distributions, blocked and failed
rates and GPU-seconds, compared with the trailing median of the runs before it.

Run statistics are computed on demand (`pixelmill drift`, `submit --wait --fail-on-drift`, the front door's
events) once a run has nothing left to do, and cached in `run_stats`: a finished run does not change (but for
`review approve` and `retry`, which `refresh=True` accounts for).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contract.schema import ACTIVE, Image, Item, Job, RunStats, State, detached
from contract.tenants import owned_job
from producer.status import percentile

# Scores where higher is better: a drop of the median is drift. (exposure and the clipped fractions are
# two-sided or lower-is-better: shown, not flagged.)
DRIFT_SCORES = ("clip_score", "aesthetic", "sharpness", "white_background")


@dataclass
class Run:
    """One finished run of a catalogue, as `run_stats` caches it."""

    job: int
    name: str
    created: str
    items: int
    succeeded: int
    blocked: int
    failed: int
    cancelled: int
    gpu_seconds: float
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # score -> n, median, p10, p90

    @property
    def blocked_rate(self) -> float:
        return self.blocked / self.items if self.items else 0.0

    @property
    def failed_rate(self) -> float:
        return self.failed / self.items if self.items else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blocked_rate": round(self.blocked_rate, 4), "failed_rate": round(self.failed_rate, 4)}


@dataclass
class DriftReport:
    """Whether run `job` of `catalogue` drifted from the median of the runs before it (`baseline`)."""

    catalogue: str
    job: int
    run: Run
    earlier: list[Run]
    flagged: bool
    reasons: list[str]  # one line per threshold crossed
    baseline: dict[str, float]  # "<score>" medians and "blocked_rate" / "failed_rate" of the earlier runs

    def as_dict(self) -> dict[str, Any]:
        plain = {name: getattr(self, name) for name in ("catalogue", "job", "flagged", "reasons", "baseline")}
        return {**plain, "run": self.run.as_dict(), "earlier": [r.as_dict() for r in self.earlier]}


def run_stats(session: Session, job_id: int, *, refresh: bool = False) -> Run | None:
    """The statistics of a finished job (cached in `run_stats`); None while it still has items to do."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    cached = None if refresh else session.get(RunStats, job_id)
    if cached is not None:
        return _from_row(job, cached)
    counts = {
        State(s): n
        for s, n in session.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state))
    }
    if any(counts.get(s, 0) for s in ACTIVE):
        return None
    values: dict[str, list[float]] = {}
    gpu = 0.0
    for scores, timings in session.execute(
        select(Image.scores, Image.timings)
        .join(Item, Item.id == Image.item_id)
        .where(Item.job_id == job_id, Item.state == State.succeeded)
        .execution_options(yield_per=2000)
    ):
        for name, value in (scores or {}).items():
            values.setdefault(name, []).append(float(value))
        timings = timings or {}
        gpu += float(timings.get("total", 0.0)) / max(int(timings.get("batch", 1) or 1), 1)
    distributions = {
        name: {"n": len(v), "median": percentile(v, 50), "p10": percentile(v, 10), "p90": percentile(v, 90)}
        for name, v in sorted(values.items())
    }
    row = session.get(RunStats, job_id) or RunStats(job_id=job_id)
    row.catalogue = getattr(job, "catalogue", None)
    row.items = sum(counts.values())
    row.succeeded, row.blocked = counts.get(State.succeeded, 0), counts.get(State.blocked, 0)
    row.failed, row.cancelled = counts.get(State.failed, 0), counts.get(State.cancelled, 0)
    row.gpu_seconds, row.scores = round(gpu, 3), distributions
    session.add(row)
    session.flush()
    return _from_row(job, row)


def _from_row(job: Job, row: RunStats) -> Run:
    created = job.created.isoformat(timespec="seconds")
    return detached(Run, row, job=job.id, name=job.name, created=created, scores=dict(row.scores or {}))


def compare(
    run: Run, earlier: Sequence[Run], *, score_drop: float, rate_rise: float
) -> tuple[list[str], dict[str, float]]:
    """Reasons `run` drifted from the median of `earlier` (none without earlier runs), and that baseline."""
    if not earlier:
        return [], {}
    baseline: dict[str, float] = {
        "blocked_rate": statistics.median(r.blocked_rate for r in earlier),
        "failed_rate": statistics.median(r.failed_rate for r in earlier),
    }
    reasons = []
    for name in DRIFT_SCORES:
        before = [r.scores[name]["median"] for r in earlier if name in r.scores]
        if not before or name not in run.scores:
            continue
        base = baseline[name] = statistics.median(before)
        now = run.scores[name]["median"]
        if base and (base - now) / abs(base) > score_drop:
            reasons.append(
                f"median {name} {now:.4g} is {(base - now) / abs(base):.0%} below the earlier runs' "
                f"{base:.4g} (PIXELMILL_DRIFT_SCORE_DROP={score_drop:g})"
            )
    for rate in ("blocked_rate", "failed_rate"):
        now, base = getattr(run, rate), baseline[rate]
        if now - base > rate_rise:
            reasons.append(
                f"{rate.replace('_', ' ')} {now:.1%} is {(now - base) * 100:.1f} points above the "
                f"earlier runs' {base:.1%} (PIXELMILL_DRIFT_RATE_RISE={rate_rise:g})"
            )
    return reasons, {k: round(v, 4) for k, v in baseline.items()}


def finished_runs(
    session: Session, tenant_id: int, catalogue: str, *, before: int | None = None, limit: int = 7
) -> list[Run]:
    """Up to `limit` most recent finished runs of the tenant's catalogue (oldest first), before job `before` if
    given."""
    query = select(Job.id).where(Job.tenant_id == tenant_id, Job.catalogue == catalogue).order_by(Job.id.desc())
    if before is not None:
        query = query.where(Job.id < before)
    runs: list[Run] = []
    for job_id in session.scalars(query):
        stats = run_stats(session, job_id)
        if stats is not None and stats.items:
            runs.append(stats)
            if len(runs) >= limit:
                break
    return runs[::-1]


def drift_report(
    session: Session,
    tenant_id: int,
    catalogue: str | None,
    job: int | None = None,
    *,
    score_drop: float = 0.1,
    rate_rise: float = 0.05,
    runs: int = 7,
) -> DriftReport | None:
    """Did the tenant's run `job` (default: the catalogue's latest finished run) drift from up to `runs` earlier
    runs? None when there is no such finished run of the tenant's (or the job is not a run of a catalogue). Needs
    a writable session: statistics computed here are cached in `run_stats`."""
    if job is not None:
        found = owned_job(session, tenant_id, job)
        if found is None or (catalogue is None and found.catalogue is None):
            return None
        catalogue = catalogue or found.catalogue
    if catalogue is None:
        return None
    if job is None:
        latest = finished_runs(session, tenant_id, catalogue, limit=1)
        if not latest:
            return None
        job = latest[0].job
    run = run_stats(session, job)
    if run is None:
        return None
    earlier = finished_runs(session, tenant_id, catalogue, before=job, limit=runs)
    reasons, baseline = compare(run, earlier, score_drop=score_drop, rate_rise=rate_rise)
    return DriftReport(
        catalogue=catalogue,
        job=job,
        run=run,
        earlier=earlier,
        flagged=bool(reasons),
        reasons=reasons,
        baseline=baseline,
    )
