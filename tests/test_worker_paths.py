"""The worker's chunk processing and the reconciler, run in this process against the real ledger, the
embedded Redis, local storage and the tiny model (no worker process, so each path is driven precisely)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update

from conftest import Env, write_catalogue
from contract.identity import resolve_model
from contract.queue import Chunk, make_celery, queue_depth, queue_for
from contract.schema import Image, Item, Job, State, utcnow
from contract.storage import open_storage
from contract.transitions import reclaimable
from worker.chunk import ChunkOutcome, Context, run_chunk
from worker.reconciler import reconcile


@pytest.fixture
def ctx(env: Env) -> Iterator[Context]:
    settings = env.settings(max_attempts=2)
    context = Context(
        settings=settings,
        ledger=env.ledger(),
        storage=open_storage(settings),
        app=make_celery(settings),
        node="test@host",
    )
    yield context
    context.close()


def run(ctx: Context, chunk: Chunk) -> ChunkOutcome:
    """Process a chunk and wait until its objects are stored and its outcome recorded."""
    return run_chunk(ctx, chunk).result(timeout=120)


def submitted(env: Env, tmp_path: Path, rows: int) -> tuple[int, list[int]]:
    job = env.submit(write_catalogue(tmp_path / "c.csv", rows))["job"]
    with env.ledger().session() as session:
        ids = session.scalars(select(Item.id).where(Item.job_id == job).order_by(Item.id)).all()
    return job, list(ids)


def drain(ctx: Context) -> None:
    with ctx.app.connection_for_write() as conn:
        conn.default_channel.queue_purge(depth_queue(ctx))


def dispatch(ctx: Context) -> int:
    """One scheduler pass (contract/scheduling.py) through the test's broker: the items it sent."""
    from contract.scheduling import Scheduler

    return Scheduler(ctx.settings, ctx.ledger, ctx.app, holder="tests").run_pass().items  # one lease holder


def depth_queue(ctx: Context) -> str:
    return queue_for(resolve_model(ctx.settings.default_model))


def depth(ctx: Context) -> int:
    return queue_depth(ctx.app, depth_queue(ctx))


def items(ctx: Context, ids: list[int]) -> dict[int, Item]:
    with ctx.ledger.session() as session:
        return {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}


def test_one_failing_item_does_not_fail_its_neighbours(env: Env, ctx: Context, tmp_path: Path) -> None:
    ctx.settings = ctx.settings.model_copy(update={"infra_retry_budget": 0})  # storage errors count at once
    job, ids = submitted(env, tmp_path, 4)
    drain(ctx)
    # A regular file where SKU-002's directory must go: its write fails, the others' do not.
    blocker = env.data_dir / "images" / "jobs" / str(job) / "SKU-002"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")

    outcome = run(ctx, Chunk(job, tuple(ids)))
    assert len(outcome.succeeded) == 3 and outcome.retried == [ids[2]] and not outcome.failed
    rows = items(ctx, ids)
    assert rows[ids[2]].state == State.pending and rows[ids[2]].attempts == 1  # back in the backlog
    assert "storing the image failed" in (rows[ids[2]].error or "")
    assert all(rows[i].state == State.succeeded for i in ids if i != ids[2])
    assert depth(ctx) == 0  # no message from the worker: the scheduler sends the retry in its turn

    outcome = run(ctx, Chunk(job, tuple(ids)))  # second and last attempt (max_attempts=2)
    assert outcome.failed == [ids[2]] and outcome.skipped == 3
    rows = items(ctx, ids)
    assert rows[ids[2]].state == State.failed and rows[ids[2]].attempts == 2
    assert depth(ctx) == 0

    outcome = run(ctx, Chunk(job, tuple(ids)))
    assert outcome.skipped == 4 and not outcome.succeeded
    with ctx.ledger.session() as session:
        assert len(session.scalars(select(Image).join(Item).where(Item.job_id == job)).all()) == 3


def test_a_soft_time_limit_before_generation_still_records_the_claimed_items(
    env: Env, ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's soft limit can strike anywhere in the task, on a loaded machine even before generation starts:
    the claimed items are failed (attempts bound them) instead of sitting `running` until their lease expires."""
    import worker.chunk

    def too_late(ctx: Context, items: list[object]) -> list[object]:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(worker.chunk, "screen_prompts", too_late)
    job, ids = submitted(env, tmp_path, 2)
    drain(ctx)
    outcome = run(ctx, Chunk(job, tuple(ids)))
    assert sorted(outcome.retried) == ids and not outcome.succeeded
    rows = items(ctx, ids)
    assert all(r.state == State.pending and r.attempts == 1 for r in rows.values())  # back in the backlog
    assert all("PIXELMILL_TASK_SOFT_TIME_LIMIT" in (r.error or "") for r in rows.values())

    outcome = run(ctx, Chunk(job, tuple(ids)))  # the last attempt (max_attempts=2)
    assert sorted(outcome.failed) == ids
    assert all(r.state == State.failed and r.lease_expires is None for r in items(ctx, ids).values())


def test_a_storage_failure_backs_off_without_using_an_attempt(env: Env, ctx: Context, tmp_path: Path) -> None:
    """Infrastructure failures (here: a file where the item's directory must go, errno ENOTDIR/EEXIST) give
    their attempt back and wait `pending` for `not_before`; the scheduler sends them once it has passed."""
    from datetime import timedelta

    from contract.schema import utcnow

    job, ids = submitted(env, tmp_path, 1)
    blocker = env.data_dir / "images" / "jobs" / str(job) / "SKU-000"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    for _ in range(4):  # more failures than max_attempts=2: none counts
        outcome = run(ctx, Chunk(job, (ids[0],)))
        assert outcome.retried == [ids[0]] and not outcome.failed
        row = items(ctx, ids)[ids[0]]
        assert row.state == State.pending and row.attempts == 0 and row.not_before is not None
        assert "infrastructure failure" in (row.error or "") and row.infra_since is not None
        assert dispatch(ctx) == 0 and depth(ctx) == 0  # not sent again at once: it backs off
        assert run(ctx, Chunk(job, (ids[0],))).skipped == 1  # a duplicate message before not_before: skipped
        with ctx.ledger.session() as session:
            session.get(Item, ids[0]).not_before = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
        assert dispatch(ctx) == 1 and depth(ctx) == 1
        drain(ctx)
    blocker.unlink()
    assert run(ctx, Chunk(job, (ids[0],))).succeeded == [ids[0]]
    row = items(ctx, ids)[ids[0]]
    assert row.attempts == 1 and row.infra_since is None and row.not_before is None


def test_a_chunk_for_another_model_is_refused(env: Env, ctx: Context, tmp_path: Path) -> None:
    """A worker serves only its own model: a chunk of a job for another model (on its queue by mistake or
    malice) is never loaded; the error names both models and the items go back to the backlog, from which the
    scheduler sends them to their own model's queue."""
    job, ids = submitted(env, tmp_path, 2)
    other = str(tmp_path / "someone-elses-model")
    with ctx.ledger.session() as session:
        session.execute(update(Job).where(Job.id == job).values(model=other))
    outcome = run(ctx, Chunk(job, tuple(ids)))
    assert sorted(outcome.retried) == sorted(ids)
    rows = items(ctx, ids)
    for row in rows.values():
        assert (
            "serves model" in (row.error or "") and other in (row.error or "") and str(env.model) in (row.error or "")
        )
    from contract.queue import queue_depth, queue_for

    assert {r.state for r in rows.values()} == {State.pending} and dispatch(ctx) == 2
    assert queue_depth(ctx.app, queue_for(other)) == 1 and depth(ctx) == 0


def test_a_model_that_will_not_load_uses_up_attempts(env: Env, ctx: Context, tmp_path: Path) -> None:
    job, ids = submitted(env, tmp_path, 2)
    ctx.settings = ctx.settings.model_copy(update={"model": str(tmp_path / "no-such-model")})
    with ctx.ledger.session() as session:
        session.execute(update(Job).where(Job.id == job).values(model=str(tmp_path / "no-such-model")))
    for _ in range(2):
        run(ctx, Chunk(job, tuple(ids)))
    rows = items(ctx, ids)
    assert {r.state for r in rows.values()} == {State.failed}
    assert all("loading model" in (r.error or "") for r in rows.values())


def test_reconciler_requeues_expired_leases_and_gives_up_after_max_attempts(
    env: Env, ctx: Context, tmp_path: Path
) -> None:
    job, ids = submitted(env, tmp_path, 3)
    past = utcnow() - timedelta(seconds=5)
    with ctx.ledger.session() as session:
        session.execute(
            update(Item)
            .where(Item.id.in_(ids[:2]))
            .values(state=State.running, lease_expires=past, worker="gone@elsewhere:1", attempts=1)
        )
        session.execute(update(Item).where(Item.id == ids[1]).values(attempts=2))  # = max_attempts
        session.execute(
            update(Item)
            .where(Item.id == ids[2])
            .values(
                state=State.running,
                lease_expires=utcnow() + timedelta(minutes=5),
                worker="alive@elsewhere:1",
                attempts=1,
            )
        )
    report = reconcile(ctx.ledger, ctx.app, ctx.settings)
    assert (report.requeued, report.failed) == (1, 1)
    rows = items(ctx, ids)
    assert rows[ids[0]].state == State.pending and "worker lost" in (rows[ids[0]].error or "")
    assert rows[ids[1]].state == State.failed
    assert rows[ids[2]].state == State.running  # its lease is still good
    assert depth(ctx) == 0 and dispatch(ctx) == 1 and depth(ctx) == 1  # the scheduler sends it again


def test_reconciler_reclaims_items_of_a_dead_process_on_this_node(env: Env, ctx: Context, tmp_path: Path) -> None:
    job, ids = submitted(env, tmp_path, 2)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    lease = utcnow() + timedelta(minutes=5)
    with ctx.ledger.session() as session:
        session.execute(
            update(Item)
            .where(Item.id == ids[0])
            .values(state=State.running, lease_expires=lease, worker=f"{ctx.node}:{dead_pid}", attempts=1)
        )
        session.execute(
            update(Item)
            .where(Item.id == ids[1])
            .values(state=State.running, lease_expires=lease, worker=f"other@host:{dead_pid}", attempts=1)
        )
    assert reclaimable(f"{ctx.node}:{dead_pid}", ctx.node)
    assert not reclaimable(f"{ctx.node}:{os.getppid()}", ctx.node)
    report = reconcile(ctx.ledger, ctx.app, ctx.settings, node=ctx.node)
    assert report.requeued == 1
    rows = items(ctx, ids)
    assert rows[ids[0]].state == State.pending
    assert rows[ids[1]].state == State.running  # another node's item: only its lease can free it


def test_submit_publishes_nothing_and_lost_messages_go_back_to_the_backlog(
    env: Env, ctx: Context, tmp_path: Path
) -> None:
    job, ids = submitted(env, tmp_path, 3)
    assert depth(ctx) == 0 and {r.state for r in items(ctx, ids).values()} == {State.pending}
    assert dispatch(ctx) == 3 and depth(ctx) == 1  # no live worker: one message (batch size 4)
    assert {r.state for r in items(ctx, ids).values()} == {State.queued}
    long_ago = utcnow() - timedelta(seconds=ctx.settings.requeue_after + 5)
    with ctx.ledger.session() as session:
        session.execute(update(Item).where(Item.id.in_(ids)).values(queued_at=long_ago))
        session.execute(update(Item).where(Item.id == ids[2]).values(state=State.pending, created=long_ago))
    # The message is still in the queue: queued items are on their way; a pending one is backlog, not lost.
    assert reconcile(ctx.ledger, ctx.app, ctx.settings).requeued == 0
    assert dispatch(ctx) == 0  # the window (one message) is full

    drain(ctx)  # the broker lost everything
    report = reconcile(ctx.ledger, ctx.app, ctx.settings)
    assert report.requeued == 2 and {r.state for r in items(ctx, ids).values()} == {State.pending}
    assert dispatch(ctx) == 3 and depth(ctx) == 1
    # The message sent again completes the job.
    outcome = run(ctx, Chunk(job, tuple(ids)))
    assert sorted(outcome.succeeded) == ids


def test_an_object_stored_by_an_earlier_attempt_is_what_the_ledger_records(
    env: Env, ctx: Context, tmp_path: Path
) -> None:
    """A worker that stored an image and died before recording it (or a finisher on another GPU) leaves an
    object behind; the next attempt keeps that object and records its sha256, so ledger and storage agree."""
    import hashlib

    from PIL import Image as PILImage

    from contract.identity import object_key
    from worker.encode import encode

    job, ids = submitted(env, tmp_path, 2)
    drain(ctx)
    key = object_key(job, "SKU-000", 0, "png")
    earlier = encode(PILImage.new("RGB", (64, 64), (1, 2, 3)), "png", {"attempt": "earlier"})
    assert ctx.storage.create(key, earlier, "image/png")

    outcome = run(ctx, Chunk(job, tuple(ids)))
    assert sorted(outcome.succeeded) == ids
    with ctx.ledger.session() as session:
        image = session.scalars(select(Image).where(Image.item_id == ids[0])).one()
    assert ctx.storage.get(key) == earlier
    assert (image.sha256, image.bytes) == (hashlib.sha256(earlier).hexdigest(), len(earlier))
