"""The item state machine (contract/transitions.py), each legal and illegal move, on a real SQLite ledger;
the upload/record hand-off of worker/uploads.py with plain threads; and the import boundaries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from contract import transitions
from contract.checks import Safety
from contract.ledger import Ledger
from contract.params import GenerationParams
from contract.schema import Candidate, Image, Item, Job, State, utcnow
from contract.settings import Settings
from contract.tenants import DEFAULT_TENANT_ID
from contract.transitions import CandidateRecord, Finish, ImageRecord, NewItem, TransitionError
from worker.uploads import Uploads

NODE = "w1@host"
PARAMS = GenerationParams(width=64, height=64, steps=2, guidance=1.0)
LEASE = 60


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(Settings(data_dir=tmp_path))
    yield ledger
    ledger.close()


def new_job(ledger: Ledger, n: int, *, blocked: int = 0, model: str = "m") -> list[int]:
    items = [
        NewItem(
            key=f"K{i}",
            variant=0,
            prompt=f"p{i}",
            negative="",
            params=PARAMS,
            seed=i,
            content_hash=f"{model}-{i}",
            blocked={"stage": "prompt", "category": "x", "term": "y"} if i < blocked else None,
        )
        for i in range(n)
    ]
    with ledger.session() as session:
        job = Job(tenant_id=DEFAULT_TENANT_ID, name="t", model=model, params={}, counts={})
        session.add(job)
        session.flush()
        return transitions.add_items(session, job.id, items)


def states(ledger: Ledger, ids: list[int]) -> list[State]:
    with ledger.session(readonly=True) as session:
        rows = {i.id: i.state for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
    return [rows[i] for i in ids]


def item(ledger: Ledger, item_id: int) -> Item:
    with ledger.session(readonly=True) as session:
        row = session.get(Item, item_id)
        assert row is not None
        return row


def job_of(ledger: Ledger, item_id: int) -> int:
    return item(ledger, item_id).job_id


def claim(ledger: Ledger, ids: list[int], **kw: object) -> list[int]:
    args: dict[str, object] = {"node": NODE, "lease_seconds": LEASE, "max_attempts": 3, **kw}
    with ledger.session() as session:
        return [c.id for c in transitions.claim(session, job_of(ledger, ids[0]), ids, **args)]  # type: ignore[arg-type]


def finish(ledger: Ledger, item_id: int, *, blocked: bool = False) -> None:
    safety = Safety(checker="c", blocked=blocked, flagged=("concept_1",) if blocked else (), scores={"concept_1": 1.0})
    image = ImageRecord(
        storage_key=f"jobs/1/K{item_id}/0.png",
        sha256="0" * 64,
        width=64,
        height=64,
        bytes=10,
        format="png",
        engine_id="e",
        timings={"total": 1.0},
        scores={"sharpness": 2.0},
        safety=safety,
        candidate=0,
        visibility="quarantine" if blocked else "public",
    )
    rows = (
        CandidateRecord(
            candidate=0, seed=1, outcome="blocked" if blocked else "kept", scores={}, safety=safety, engine_id="e"
        ),
    )
    reason = {"stage": "image", "category": "nsfw"} if blocked else None
    with ledger.session() as session:
        transitions.finish(session, item_id, Finish(image=image, candidates=rows, blocked=reason))


def fail(ledger: Ledger, item_id: int, *, node: str = NODE, max_attempts: int = 3) -> bool:
    with ledger.session() as session:
        return transitions.fail(session, item_id, "boom", node=node, max_attempts=max_attempts)


def set_item(ledger: Ledger, ids: list[int], **values: object) -> None:
    with ledger.session() as session:
        session.execute(update(Item).where(Item.id.in_(ids)).values(**values))


def test_new_items_are_pending_or_blocked_by_the_prompt_filter(ledger: Ledger) -> None:
    ids = new_job(ledger, 3, blocked=1)
    assert states(ledger, ids) == [State.blocked, State.pending, State.pending]
    blocked = item(ledger, ids[0])
    assert blocked.finished_at is not None and blocked.block_reason == {"stage": "prompt", "category": "x", "term": "y"}
    assert item(ledger, ids[1]).params == PARAMS.to_json() and item(ledger, ids[1]).attempts == 0


def test_mark_queued_moves_only_pending_items(ledger: Ledger) -> None:
    ids = new_job(ledger, 3, blocked=1)
    assert claim(ledger, [ids[2]]) == [ids[2]]
    with ledger.session() as session:
        transitions.mark_queued(session, ids)
    assert states(ledger, ids) == [State.blocked, State.queued, State.running]


def test_claim_takes_unfinished_items_with_a_lease(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    before = utcnow()
    with ledger.session() as session:
        claimed = transitions.claim(
            session, job_of(ledger, ids[0]), ids, node=NODE, lease_seconds=LEASE, max_attempts=3
        )
    assert [c.id for c in claimed] == ids and claimed[0].params == PARAMS and claimed[0].key == "K0"
    row = item(ledger, ids[0])
    assert row.state == State.running and row.attempts == 1 and row.worker == f"{NODE}:{os.getpid()}"
    assert row.lease_expires is not None and row.lease_expires >= before + timedelta(seconds=LEASE - 1)


def test_claim_skips_finished_items_and_other_jobs(ledger: Ledger) -> None:
    ids = new_job(ledger, 3)
    other = new_job(ledger, 1)
    claim(ledger, ids[:2])
    finish(ledger, ids[0])
    finish(ledger, ids[1], blocked=True)
    with ledger.session() as session:  # the other job's item named in this job's chunk is not taken
        assert [
            c.id
            for c in transitions.claim(
                session, job_of(ledger, ids[0]), ids + other, node=NODE, lease_seconds=LEASE, max_attempts=3
            )
        ] == [ids[2]]
    assert states(ledger, other) == [State.pending]


def test_claim_skips_an_item_a_live_holder_leases(ledger: Ledger) -> None:
    ids = new_job(ledger, 1)
    lease = utcnow() + timedelta(seconds=LEASE)
    set_item(ledger, ids, state=State.running, lease_expires=lease, worker="other@node:1", attempts=1)
    assert claim(ledger, ids) == []  # a holder on another node is alive until its lease runs out
    set_item(ledger, ids, worker=f"{NODE}:{os.getppid()}")  # a live process of this node
    assert claim(ledger, ids) == []
    assert item(ledger, ids[0]).attempts == 1


def test_claim_reclaims_from_a_dead_or_finished_holder_of_this_node(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease = utcnow() + timedelta(seconds=LEASE)
    set_item(ledger, ids[:1], state=State.running, lease_expires=lease, worker=f"{NODE}:{dead.pid}", attempts=1)
    set_item(ledger, ids[1:], state=State.running, lease_expires=lease, worker=f"{NODE}:{os.getpid()}", attempts=1)
    assert claim(ledger, ids) == ids
    assert [item(ledger, i).attempts for i in ids] == [2, 2]


def test_claim_leaves_busy_items_to_their_upload(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    claim(ledger, ids)
    assert claim(ledger, ids, busy={ids[0]}) == [ids[1]]


def test_claim_fails_an_item_whose_attempts_are_used_up(ledger: Ledger) -> None:
    ids = new_job(ledger, 1)
    set_item(ledger, ids, state=State.queued, attempts=3, error="earlier error")
    assert claim(ledger, ids) == []
    row = item(ledger, ids[0])
    assert row.state == State.failed and row.finished_at is not None
    assert row.error == "gave up after 3 attempts; last error: earlier error"


def test_renew_lease_extends_only_this_holders_running_items(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    claim(ledger, ids)
    set_item(ledger, [ids[1]], worker="other@node:1")
    soon = utcnow() + timedelta(seconds=1)
    set_item(ledger, ids, lease_expires=soon)
    with ledger.session() as session:
        transitions.renew_lease(session, ids, node=NODE, lease_seconds=LEASE)
    first, second = item(ledger, ids[0]), item(ledger, ids[1])
    assert first.lease_expires is not None and first.lease_expires > soon + timedelta(seconds=LEASE - 5)
    assert second.lease_expires is not None and second.lease_expires <= soon


def test_finish_is_idempotent_and_never_reopens_a_finished_item(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    claim(ledger, ids)
    finish(ledger, ids[0])
    finish(ledger, ids[0])  # a duplicate finish (redelivered chunk) adds nothing
    finish(ledger, ids[0], blocked=True)  # nor turns it blocked
    finish(ledger, ids[1], blocked=True)
    assert states(ledger, ids) == [State.succeeded, State.blocked]
    with ledger.session(readonly=True) as session:
        assert len(session.scalars(select(Image).where(Image.item_id == ids[0])).all()) == 1
        assert len(session.scalars(select(Candidate).where(Candidate.item_id == ids[0])).all()) == 1
        image = session.scalars(select(Image).where(Image.item_id == ids[1])).one()
        assert image.visibility == "quarantine" and image.safety is not None and image.safety["blocked"] is True
    row = item(ledger, ids[0])
    assert row.lease_expires is None and row.error is None and row.finished_at is not None
    assert item(ledger, ids[1]).block_reason == {"stage": "image", "category": "nsfw"}


def test_fail_requeues_until_the_attempts_are_used_up(ledger: Ledger) -> None:
    ids = new_job(ledger, 1)
    claim(ledger, ids)
    assert fail(ledger, ids[0], max_attempts=2) is True
    row = item(ledger, ids[0])
    assert row.state == State.pending and row.error == "boom" and row.lease_expires is None  # back to the backlog
    claim(ledger, ids)
    assert fail(ledger, ids[0], max_attempts=2) is False
    assert states(ledger, ids) == [State.failed] and item(ledger, ids[0]).attempts == 2


def test_fail_from_a_process_that_no_longer_holds_the_item_changes_nothing(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    claim(ledger, ids)
    assert fail(ledger, ids[0], node="someone@else") is False  # another holder claimed it since
    finish(ledger, ids[1])
    assert fail(ledger, ids[1]) is False  # finished: a late failure report is ignored
    assert states(ledger, ids) == [State.running, State.succeeded]


def test_requeue_lost_puts_expired_leases_and_lost_messages_back_in_the_backlog(ledger: Ledger) -> None:
    ids = new_job(ledger, 6, model="m")
    past, future = utcnow() - timedelta(seconds=5), utcnow() + timedelta(seconds=LEASE)
    old = utcnow() - timedelta(seconds=100)
    set_item(ledger, [ids[0]], state=State.running, lease_expires=past, worker="gone@x:1", attempts=1)
    set_item(ledger, [ids[1]], state=State.running, lease_expires=past, worker="gone@x:1", attempts=3)
    set_item(ledger, [ids[2]], state=State.running, lease_expires=future, worker="alive@x:1", attempts=1)
    set_item(ledger, [ids[3]], created=old)  # pending: the backlog, not lost work (the scheduler's, not ours)
    set_item(ledger, [ids[4]], state=State.queued, queued_at=old)  # its message is gone (queue empty)
    set_item(ledger, [ids[5]], state=State.queued, queued_at=utcnow())  # just queued: left alone
    with ledger.session() as session:
        recovery = transitions.requeue_lost(
            session, max_attempts=3, requeue_after=10, queued_timeout=3600, empty_models=["m"]
        )
    assert states(ledger, ids) == [
        State.pending,
        State.failed,
        State.running,
        State.pending,
        State.pending,
        State.queued,
    ]
    assert recovery.failed == 1 and recovery.requeued == {"m": 2}  # ids[0] and ids[4]; ids[3] stayed as it was
    assert "worker lost on attempt 1" in (item(ledger, ids[0]).error or "")
    assert "gave up" in (item(ledger, ids[1]).error or "")
    set_item(ledger, [ids[4]], state=State.queued, queued_at=old)
    with ledger.session() as session:  # a queue that still holds messages keeps its queued items
        again = transitions.requeue_lost(
            session, max_attempts=3, requeue_after=10, queued_timeout=3600, empty_models=[]
        )
    assert again.requeued == {} and states(ledger, [ids[4]]) == [State.queued]


def test_approve_publishes_only_blocked_items(ledger: Ledger) -> None:
    ids = new_job(ledger, 2)
    claim(ledger, ids)
    finish(ledger, ids[0], blocked=True)
    finish(ledger, ids[1])
    with ledger.session() as session:
        for item_id in ids:
            row = session.get(Item, item_id)
            image = session.scalars(select(Image).where(Image.item_id == item_id)).one()
            assert row is not None
            if item_id == ids[1]:
                with pytest.raises(TransitionError, match="succeeded, not blocked"):
                    transitions.approve(session, row, image, public_key="k", sha256="1" * 64, size=3, by="a")
                continue
            transitions.approve(session, row, image, public_key="jobs/1/K/0.png", sha256="1" * 64, size=3, by="alice")
    row = item(ledger, ids[0])
    assert row.state == State.succeeded and (row.block_reason or {}).get("approved_by") == "alice"


def test_scores_of_succeeded_items_are_indexed_once_and_status_reads_them(ledger: Ledger) -> None:
    """`image_scores` holds the numeric scores of exactly the succeeded items (finish, approve), once each;
    status percentiles from its index equal `percentile` over the images' own JSON."""
    from contract.schema import ImageScore
    from producer.status import percentile, score_distributions

    ids = new_job(ledger, 4)
    claim(ledger, ids)
    finish(ledger, ids[0])
    finish(ledger, ids[0])  # a duplicate finish adds no score row
    finish(ledger, ids[1], blocked=True)  # blocked: no score until approved
    finish(ledger, ids[2])
    with ledger.session() as session:
        session.execute(update(Image).where(Image.item_id == ids[2]).values(scores={"sharpness": 7.5}))
        session.execute(update(ImageScore).where(ImageScore.item_id == ids[2]).values(value=7.5))
    with ledger.session(readonly=True) as session:
        scored = session.execute(select(ImageScore.item_id, ImageScore.name)).all()
        assert sorted(scored) == [(ids[0], "sharpness"), (ids[2], "sharpness")]
    with ledger.session() as session:
        row = session.get(Item, ids[1])
        image = session.scalars(select(Image).where(Image.item_id == ids[1])).one()
        assert row is not None
        transitions.approve(session, row, image, public_key="jobs/1/K/0.png", sha256="1" * 64, size=3, by="alice")
    with ledger.session(readonly=True) as session:
        job = job_of(ledger, ids[0])
        values = sorted(
            float(scores["sharpness"])
            for scores in session.scalars(
                select(Image.scores).join(Item).where(Item.job_id == job, Item.state == State.succeeded)
            )
        )
        assert len(values) == 3
        expected = {
            "n": 3,
            "median": percentile(values, 50),
            "p10": percentile(values, 10),
            "p90": percentile(values, 90),
        }
        assert score_distributions(session, job) == {"sharpness": expected}


def test_every_state_change_goes_through_the_transitions_module() -> None:
    """No `Item.state` assignment or `update(Item)` anywhere else in the code (migrations and tests aside)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("pixelmill", "producer", "worker"):
        for path in (root / package).rglob("*.py"):
            if path.name == "transitions.py":
                continue
            text = path.read_text()
            assigns_state = re.search(r"\.state\b(\s*,\s*[\w.]+)*\s*=(?!=)", text) is not None
            if "update(Item)" in text or "insert(Item)" in text or assigns_state:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


# --- the upload/record hand-off ---------------------------------------------------------------------------------


def test_record_runs_once_every_store_is_done_and_items_stay_busy_until_then() -> None:
    uploads = Uploads(2)
    gate = threading.Event()
    slot = uploads.begin()
    stores: dict[int, Future[str | bool]] = {
        1: uploads.store(lambda: gate.wait(5) and "a"),
        2: uploads.store(lambda: "b"),
    }
    seen: list[dict[int, str | bool]] = []

    def record(done: Mapping[int, Future[str | bool]]) -> int:
        seen.append({k: f.result() for k, f in done.items()})
        return len(done)

    recorded = uploads.finish(slot, [1, 2], stores, record)
    time.sleep(0.1)
    assert not recorded.done() and uploads.busy() == {1, 2}  # store 1 still running: nothing recorded
    gate.set()
    assert recorded.result(timeout=5) == 2 and seen == [{1: "a", 2: "b"}]
    assert uploads.busy() == set()
    slot.release()  # after `finish` the recorder owns the slot: releasing again is a no-op
    uploads.close(timeout=5)


def test_a_failed_store_still_reaches_the_recorder() -> None:
    uploads = Uploads(1)
    slot = uploads.begin()

    def broken() -> str:
        raise OSError("disk full")

    stores = {7: uploads.store(broken)}
    outcome = uploads.finish(slot, [7], stores, lambda done: [type(f.exception()).__name__ for f in done.values()])
    assert outcome.result(timeout=5) == ["OSError"]
    uploads.close(timeout=5)


def test_slots_bound_how_far_generation_runs_ahead_of_storage() -> None:
    uploads = Uploads(1, ahead=2)
    gate = threading.Event()
    first, second = uploads.begin(), uploads.begin()
    futures = [
        uploads.finish(s, [i], {i: uploads.store(gate.wait, 5)}, lambda d: None) for i, s in enumerate((first, second))
    ]
    third: list[object] = []
    waiter = threading.Thread(target=lambda: third.append(uploads.begin()))
    waiter.start()
    waiter.join(0.2)
    assert third == []  # both slots held by chunks still storing
    gate.set()
    waiter.join(5)
    assert len(third) == 1 and all(f.result(timeout=5) is None for f in futures)
    with pytest.raises(RuntimeError, match="already released"):
        slot = uploads.begin()
        slot.release()
        uploads.finish(slot, [9], {}, lambda d: None)
    uploads.close(timeout=5)


# --- import boundaries ------------------------------------------------------------------------------------------


def test_cancel_takes_every_active_item_and_a_late_finish_records_nothing(ledger: Ledger) -> None:
    ids = new_job(ledger, 5, blocked=1)  # blocked, then 4 pending
    claim(ledger, ids[1:3])  # 2 running
    finish(ledger, ids[2])  # 1 succeeded
    with ledger.session() as session:
        transitions.mark_queued(session, [ids[3]])
    with ledger.session() as session:
        left = transitions.cancel(session, job_of(ledger, ids[0]))
    assert left == {State.pending: 1, State.queued: 1, State.running: 1}
    assert states(ledger, ids) == [State.blocked, State.cancelled, State.succeeded, State.cancelled, State.cancelled]
    finish(ledger, ids[1])  # the worker that held it finishes late: nothing is recorded
    assert not fail(ledger, ids[1])  # nor is it re-queued by a late failure
    assert claim(ledger, ids) == []  # a message naming cancelled items claims nothing
    assert item(ledger, ids[1]).state == State.cancelled
    with ledger.session(readonly=True) as session:
        assert session.scalars(select(Image.item_id).where(Image.item_id.in_(ids))).all() == [ids[2]]


def test_retry_resets_failed_and_chosen_blocked_items_keeping_their_seeds(ledger: Ledger) -> None:
    ids = new_job(ledger, 5, blocked=2)  # 2 prompt-blocked, 3 pending
    claim(ledger, ids[2:])
    set_item(ledger, [ids[2]], state=State.failed, attempts=3, error="boom", finished_at=utcnow())
    finish(ledger, ids[3], blocked=True)  # image-blocked, with a quarantined image row
    finish(ledger, ids[4])
    job = job_of(ledger, ids[0])
    with ledger.session() as session:
        queued = transitions.retry(session, job)
    assert [q.item for q in queued] == [ids[2]]
    row = item(ledger, ids[2])
    assert (row.state, row.attempts, row.error, row.finished_at, row.seed) == (State.pending, 0, None, None, 2)
    with ledger.session() as session:
        queued = transitions.retry(session, job, failed=False, blocked_by="image")
    assert [q.item for q in queued] == [ids[3]] and item(ledger, ids[3]).block_reason is None
    with ledger.session(readonly=True) as session:  # the new attempt records its own image
        assert session.scalars(select(Image).where(Image.item_id == ids[3])).all() == []
    with ledger.session() as session:  # the prompt filter still refuses ids[0]
        queued = transitions.retry(session, job, failed=False, blocked_by="prompt", refused={ids[0]})
    assert [q.item for q in queued] == [ids[1]]
    assert states(ledger, ids) == [State.blocked, State.pending, State.pending, State.pending, State.succeeded]
    with pytest.raises(TransitionError, match="blocked_by"):
        with ledger.session() as session:
            transitions.retry(session, job, blocked_by="everything")


def test_infrastructure_failures_give_their_attempt_back_until_the_budget(ledger: Ledger) -> None:
    """back_off: running → pending, attempt given back, not_before ahead; the claim skips the item until then.
    Past the budget (counted from the first failure of the streak) back_off refuses and `fail(infra=True)`
    counts the attempt but keeps the streak; an item failure ends it; finishing clears both columns."""
    ids = new_job(ledger, 1)
    backoff: dict[str, Any] = {"node": NODE, "budget": 600.0, "base": 2.0, "cap": 300.0}
    for _ in range(5):  # more than max_attempts=3, none counted
        assert claim(ledger, ids) == ids
        with ledger.session() as session:
            assert transitions.back_off(session, ids[0], "storage down", **backoff)
        row = item(ledger, ids[0])
        assert row.state == State.pending and row.attempts == 0 and row.not_before and row.not_before > utcnow()
        assert claim(ledger, ids) == []  # backing off: a duplicate message claims nothing
        with ledger.session() as session:
            session.execute(update(Item).values(not_before=utcnow() - timedelta(seconds=1)))
    with ledger.session() as session:  # the streak began 11 minutes ago: over the 10-minute budget
        session.execute(update(Item).values(infra_since=utcnow() - timedelta(minutes=11)))
    assert claim(ledger, ids) == ids
    with ledger.session() as session:
        assert not transitions.back_off(session, ids[0], "storage down", **backoff)
        assert transitions.fail(session, ids[0], "storage down", node=NODE, max_attempts=3, infra=True)
    row = item(ledger, ids[0])
    assert row.attempts == 1 and row.infra_since is not None and row.not_before is None
    assert claim(ledger, ids) == ids
    with ledger.session() as session:
        assert transitions.fail(session, ids[0], "generation raised", node=NODE, max_attempts=3)
    assert item(ledger, ids[0]).infra_since is None and item(ledger, ids[0]).attempts == 2
    assert claim(ledger, ids) == ids
    with ledger.session() as session:
        assert transitions.back_off(session, ids[0], "db locked", **{**backoff, "budget": 0.0}) is False


def pending_counter(ledger: Ledger, job_id: int) -> tuple[int, int]:
    """(jobs.pending, the items actually pending): the counter the transitions keep, and the truth."""
    with ledger.session(readonly=True) as session:
        counter = session.scalar(select(Job.pending).where(Job.id == job_id))
        actual = len(session.scalars(select(Item.id).where(Item.job_id == job_id, Item.state == State.pending)).all())
    return int(counter or 0), actual


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(["mark", "claim", "fail", "back_off", "lose", "finish", "retry", "cancel"]), max_size=12)
)
def test_the_pending_counter_follows_every_transition(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    """Whatever sequence of transitions the items go through, `jobs.pending` equals the pending items (the backlog
    that `pixelmill backlog` sums)."""
    ledger = Ledger(Settings(data_dir=tmp_path_factory.mktemp("counter")))
    try:
        ids = new_job(ledger, 6, blocked=1)
        job_id = job_of(ledger, ids[0])
        live = ids[1:]
        assert pending_counter(ledger, job_id) == (5, 5)
        for step in steps:
            if step == "finish":  # its own transaction, as the recorder's
                finish(ledger, live[3])
            with ledger.session() as session:
                if step == "mark":
                    transitions.mark_queued(session, live[:3])
                elif step == "claim":
                    transitions.claim(session, job_id, live[1:4], node=NODE, lease_seconds=LEASE, max_attempts=3)
                elif step == "fail":
                    transitions.fail(session, live[1], "boom", node=NODE, max_attempts=3)
                elif step == "back_off":
                    transitions.back_off(session, live[2], "down", node=NODE, budget=600, base=2, cap=300)
                elif step == "lose":
                    session.execute(update(Item).where(Item.id.in_(live)).values(lease_expires=utcnow()))
                    session.execute(
                        update(Item)
                        .where(Item.id.in_(live), Item.state == State.queued)
                        .values(queued_at=utcnow() - timedelta(hours=1))
                    )
                    transitions.requeue_lost(
                        session, max_attempts=3, requeue_after=1, queued_timeout=60, empty_models=["m"]
                    )
                elif step == "retry":
                    transitions.retry(session, job_id)
                elif step == "cancel":
                    transitions.cancel(session, job_id)
            counter, actual = pending_counter(ledger, job_id)
            assert counter == actual, (step, steps)
    finally:
        ledger.close()
