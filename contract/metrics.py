"""Prometheus metrics of every long-running process (docs/operations.md, "Metrics, dashboard, alerts and
autoscaling"): what the processes count as they go. What the ledger says (backlog, live workers, deliveries) is
read at scrape time by contract/ledger_metrics.py, which also serves the endpoint.

Names are `pixelmill_*` (never `celery_*`: celery-exporter may run beside it), in base units, and labels are
bounded: model, tenant, outcome, stage, priority, route; never a job, item or request id. Every metric has
labels, so no value is created at import: `enable_multiprocess` can still switch the value class of a prefork
worker's parent before anything is counted, and the child writes to the same directory after the fork.

The hooks below are what the processes call; each costs a few microseconds per item (bench/metrics_cost.py).
`pixelmill_items_total` counts each outcome once, in a long-running process: a worker as it records a chunk
(`recorded`); outcomes made elsewhere, possibly by a short command nobody scrapes (a cancel, a claim's give-up,
the reconciler), are tallied in the ledger by their transition and counted by the scheduler's leader (`tallied`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import ParamSpec

from prometheus_client import Counter, Gauge, Histogram, values

log = logging.getLogger(__name__)

# Seconds: a stage of one image (milliseconds on the tiny model to minutes on a big one) and the time an item
# waits or lives (seconds to a day).
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# Scores: CLIP similarity (0–1 or 0–100 scaled), aesthetic (1–10), technical scores (0–1).
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40, 100)
# The stages a chunk records per image (worker/store.py's timings): batch stages are the batch's seconds divided
# by its size, so every stage's count is the number of images made. `load` is one model load.
STAGES = ("generate", "judge", "encode", "store")

ITEM_OUTCOMES = ("succeeded", "blocked", "failed", "retried", "cancelled")
ITEMS = Counter(
    "pixelmill_items",
    "Item attempts that ended, by outcome: succeeded, blocked, failed (for good), retried (back to pending), "
    "cancelled (`pixelmill cancel`, POST /v1/jobs/{id}/cancel).",
    ["outcome", "model", "tenant"],
)
IMAGES = Counter("pixelmill_images_generated", "Images stored (the kept candidate of each item).", ["model", "tenant"])
QUEUE_WAIT = Histogram(
    "pixelmill_queue_wait_seconds",
    "From an item's submission to a worker claiming it (each claim).",
    ["model"],
    buckets=WAIT_BUCKETS,
)
STAGE = Histogram(
    "pixelmill_stage_seconds",
    "Seconds per image of each stage: generate and judge (the batch's time over its size), encode, store; "
    "load: one model load.",
    ["stage", "model"],  # five stages × the models served
    buckets=STAGE_BUCKETS,
)
LATENCY = Histogram(
    "pixelmill_item_latency_seconds",
    "From an item's submission to its image being recorded (succeeded or blocked).",
    ["model", "tenant"],  # tenants are operator-made: bounded
    buckets=WAIT_BUCKETS,
)
SCORES = Histogram(
    "pixelmill_image_score", "Scores of kept images, by score name.", ["score", "model"], buckets=SCORE_BUCKETS
)
ENGINE = Gauge(
    "pixelmill_engine_info",
    "Live worker processes running their model with this engine.",
    ["model", "engine"],
    multiprocess_mode="livesum",  # live processes only, summed: no pid label
)
INTAKE = Counter(
    "pixelmill_intake_requests", "v1 requests taken off the intake queues, by outcome.", ["outcome", "tenant"]
)
INTAKE_SECONDS = Histogram(
    "pixelmill_intake_request_seconds",
    "Seconds to validate and write one v1 request.",
    ["outcome"],
    buckets=STAGE_BUCKETS,
)
HTTP = Counter(
    "pixelmill_http_requests", "HTTP API requests by route template and status code.", ["route", "method", "code"]
)
HTTP_SECONDS = Histogram(
    "pixelmill_http_request_seconds",
    "HTTP API request seconds by route template.",
    ["route", "method"],
    buckets=STAGE_BUCKETS,
)
DELIVERIES = Counter(
    "pixelmill_event_deliveries",
    "Event delivery attempts: delivered, retrying or dead (dead-lettered).",
    ["kind", "outcome"],
)
DISPATCHED = Counter("pixelmill_scheduler_dispatched_items", "Items the scheduler sent to a model queue.", ["model"])
SCHEDULER_PASS = Histogram(
    "pixelmill_scheduler_pass_seconds",
    "Seconds of one scheduler pass; leader: whether this process held the lease.",
    ["leader"],
    buckets=STAGE_BUCKETS,
)

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

P = ParamSpec("P")


def never_raises(hook: Callable[P, None]) -> Callable[P, None]:
    """A hook's failure (a full disk under the multiprocess directory, a bug) is logged, never raised into the
    chunk, request or pass that called it: counting must not cost an item."""

    @functools.wraps(hook)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            log.exception("recording metrics failed", extra={"hook": hook.__name__})

    return guarded


def enable_multiprocess(directory: str | Path) -> Path:
    """Count into `directory` (its earlier counter files removed first) from now on, in this process and in the
    processes it forks: the worker's parent calls it before its prefork child exists; the parent's endpoint reads
    every process's files. Only prometheus-client's own `*.db` files are removed, so a mistyped setting pointing
    at a directory that holds anything else costs nothing."""
    path = Path(directory)
    if path.exists():
        for entry in path.glob("*.db"):  # a previous run's files would be summed into this one's
            if entry.is_file() and entry.name.split("_", 1)[0] in ("counter", "gauge", "histogram", "summary"):
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_VARIABLE] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VARIABLE) or None


def process_exited(pid: int | None = None) -> None:
    """A worker child's last act: its live-only gauges (the engine it ran) stop counting."""
    if (directory := multiprocess_dir()) is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), directory)  # type: ignore[no-untyped-call]


@never_raises
def model_loaded(model: str, engine: str, seconds: float) -> None:
    ENGINE.labels(model, engine).set(1)
    STAGE.labels("load", model).observe(seconds)


@never_raises
def claimed(model: str, created: Iterable[datetime | None], now: datetime) -> None:
    """Queue wait of the items a worker just claimed (`created`: their submission times)."""
    wait = QUEUE_WAIT.labels(model)
    for when in created:
        if when is not None:
            wait.observe(max(0.0, (now - when).total_seconds()))


@never_raises
def recorded(
    model: str,
    tenant: str,
    outcomes: Mapping[str, int],
    timings: Iterable[Mapping[str, float]],
    scores: Iterable[Mapping[str, float]],
    created: Iterable[datetime | None],
    now: datetime,
) -> None:
    """What one chunk's recording did: item counts by outcome, and per stored image its stage seconds
    (worker/store.py's `timings`), its scores and its item's latency (`created`: each recorded item's submission)."""
    for outcome in {*ITEM_OUTCOMES, *outcomes}:  # every outcome's series exists, at 0 until it happens:
        ITEMS.labels(outcome, model, tenant).inc(outcomes.get(outcome, 0))  # rate() and alerts see a 0, not nothing
    stages = {stage: STAGE.labels(stage, model) for stage in STAGES}
    images = 0
    for timing in timings:
        images += 1
        batch = max(1.0, float(timing.get("batch", 1)))
        generate = timing.get("total", timing.get("generate"))
        if generate is not None:
            stages["generate"].observe(generate / batch)
        if "judge" in timing:
            stages["judge"].observe(timing["judge"] / batch)
        for stage in ("encode", "store"):
            if stage in timing:
                stages[stage].observe(timing[stage])
    if images:
        IMAGES.labels(model, tenant).inc(images)
    for named in scores:
        for name, value in named.items():
            if isinstance(value, int | float):
                SCORES.labels(name, model).observe(float(value))
    latency = LATENCY.labels(model, tenant)
    for when in created:
        if when is not None:
            latency.observe(max(0.0, (now - when).total_seconds()))


@never_raises
def tallied(counted: Mapping[tuple[str, str, str], int]) -> None:
    """Outcomes the ledger tallied ({(outcome, model, tenant): items}): made outside a worker's recording of its
    chunk, counted by the scheduler's leader (contract/scheduling.py `count_tallies`)."""
    for (outcome, model, tenant), n in counted.items():
        ITEMS.labels(outcome, model, tenant).inc(n)


@never_raises
def intake_done(outcome: str, tenant: str, started: float) -> None:
    INTAKE.labels(outcome, tenant).inc()
    INTAKE_SECONDS.labels(outcome).observe(time.perf_counter() - started)


@never_raises
def http_done(route: str, method: str, code: int, seconds: float) -> None:
    HTTP.labels(route, method, str(code)).inc()
    HTTP_SECONDS.labels(route, method).observe(seconds)


@never_raises
def delivery_done(kind: str, outcome: str) -> None:
    DELIVERIES.labels(kind, outcome).inc()


@never_raises
def scheduler_pass(leader: bool, by_model: Mapping[str, int], seconds: float) -> None:
    SCHEDULER_PASS.labels("true" if leader else "false").observe(seconds)
    for model, n in by_model.items():
        DISPATCHED.labels(model).inc(n)
