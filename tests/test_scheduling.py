"""The scheduler (issue 23): the fair-share choice on synthetic backlogs (contract/fairshare.py), and one scheduler
pass at a time on a real SQLite ledger (contract/scheduling.py) with the publish recorded instead of sent: the
window per model queue, fair share between a big and a small tenant, priority, quotas, pause, cancel, the lease,
and migration 0013 over an existing ledger."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from conftest import Env, finished, write_catalogue
from contract import scheduling, transitions
from contract.fairshare import FairShare, JobBacklog, TenantShare
from contract.ledger import Ledger, upgrade
from contract.params import GenerationParams
from contract.queue import Chunk, QueuedItem, plan_chunks
from contract.schema import Item, Job, SchedulerLease, State, Tenant, Worker, utcnow
from contract.settings import Settings
from contract.tenants import DEFAULT_TENANT_ID, add_tenant, configure_share
from contract.transitions import NewItem
from producer.jobs import cancel, pause

PARAMS = GenerationParams(width=64, height=64, steps=2, guidance=1.0)
CHUNK = 4  # batch size 4, 4 items per message: one GPU batch per message


# --- the pure choice ---------------------------------------------------------------------------------------


def endless(_job: int, n: int) -> int:
    return n  # every job always has n more items


def run(fair: FairShare, tenants: dict[int, TenantShare], jobs: list[JobBacklog], picks: int) -> Counter[int]:
    served: Counter[int] = Counter()
    for _ in range(picks):
        for pick in fair.choose(tenants, jobs, chunks=1, chunk_size=CHUNK, take=endless):
            served[pick.tenant] += pick.items
    return served


def test_weights_three_to_one_give_three_to_one_of_the_chunks() -> None:
    tenants = {1: TenantShare(1, weight=3), 2: TenantShare(2, weight=1)}
    served = run(FairShare(), tenants, [JobBacklog(10, 1), JobBacklog(20, 2)], 400)
    assert 2.7 <= served[1] / served[2] <= 3.3, served
    assert served[1] + served[2] == 400 * CHUNK


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(1, 8), min_size=2, max_size=5),
    picks=st.integers(1, 300),
    size=st.integers(1, 32),
)
def test_backlogged_tenants_never_drift_more_than_a_chunk_from_their_weights(
    weights: list[int], picks: int, size: int
) -> None:
    """Stride scheduling's bound: items served over weight differ by at most one chunk between any two tenants
    that stay backlogged, however long they run."""
    tenants = {t: TenantShare(t, weight=w) for t, w in enumerate(weights, 1)}
    jobs = [JobBacklog(t * 10, t) for t in tenants]
    fair, served = FairShare(), Counter[int]()
    for _ in range(picks):
        for pick in fair.choose(tenants, jobs, chunks=1, chunk_size=size, take=endless):
            served[pick.tenant] += pick.items
    normalised = [served[t] / w for t, w in enumerate(weights, 1)]
    assert max(normalised) - min(normalised) <= size + 1e-9


def test_a_tenant_that_arrives_late_is_served_at_once_without_credit_for_its_absence() -> None:
    fair = FairShare()
    tenants = {1: TenantShare(1), 2: TenantShare(2)}
    run(fair, tenants, [JobBacklog(10, 1)], 500)  # A alone for a long time
    order = [
        p.tenant
        for _ in range(6)
        for p in fair.choose(tenants, [JobBacklog(10, 1), JobBacklog(20, 2)], chunks=1, chunk_size=CHUNK, take=endless)
    ]
    assert order[0] == 2 and Counter(order) == {1: 3, 2: 3}  # first, then turn about: no catching up on A


def test_priority_within_a_tenant_then_the_oldest_job() -> None:
    jobs = [JobBacklog(1, 1, "bulk"), JobBacklog(2, 1, "normal"), JobBacklog(3, 1, "interactive"), JobBacklog(4, 1)]
    left = {1: 4, 2: 4, 3: 4, 4: 4}

    def take(job: int, n: int) -> int:
        got = min(n, left[job])
        left[job] -= got
        return got

    picks = FairShare().choose({1: TenantShare(1)}, jobs, chunks=10, chunk_size=CHUNK, take=take)
    assert [p.job for p in picks] == [3, 2, 4, 1]


def test_a_quota_caps_a_tenants_items_in_flight_and_the_others_go_on() -> None:
    tenants = {1: TenantShare(1, weight=10, in_flight=6, max_in_flight=8), 2: TenantShare(2)}
    picks = FairShare().choose(tenants, [JobBacklog(1, 1), JobBacklog(2, 2)], chunks=5, chunk_size=CHUNK, take=endless)
    assert sum(p.items for p in picks if p.tenant == 1) == 2  # 8 - 6
    assert sum(p.items for p in picks if p.tenant == 2) == 4 * CHUNK


# --- one pass on a ledger ----------------------------------------------------------------------------------


class Sent:
    """Records what the scheduler publishes (instead of a broker)."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def __call__(
        self, _app: Any, items: list[QueuedItem], model: str, batch: int, per: int | None = None
    ) -> list[Chunk]:
        chunks = plan_chunks(items, max(batch, per or batch))
        self.chunks += chunks
        return chunks


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """Both ledgers: on PostgreSQL the scheduler reads its chunks and marks them with statements of its own."""
    url = None
    if request.param == "postgresql":
        test_servers = request.getfixturevalue("test_servers")
        url = test_servers.get("postgres").create_database(test_servers.next_name("sched"))
    ledger = Ledger(Settings(data_dir=tmp_path, database_url=url), migrate=url is None)
    if url is not None:
        upgrade(ledger.engine)
    yield ledger
    ledger.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    recorder = Sent()
    monkeypatch.setattr(scheduling, "publish_items", recorder)
    return recorder


def scheduler(ledger: Ledger, tmp_path: Path, **overrides: Any) -> scheduling.Scheduler:
    values: dict[str, Any] = {"batch_size": CHUNK, "items_per_message": CHUNK, "scheduler_window": 2, **overrides}
    return scheduling.Scheduler(Settings(data_dir=tmp_path, **values), ledger, app=None)


def new_job(
    ledger: Ledger, n: int, *, tenant: int = DEFAULT_TENANT_ID, model: str = "m", priority: str = "normal"
) -> int:
    with ledger.session() as session:
        job = Job(tenant_id=tenant, name="t", model=model, params={}, counts={}, priority=priority)
        session.add(job)
        session.flush()
        items = [NewItem(f"K{i}", 0, f"p{i}", "", PARAMS, i, f"{job.id}-{i}") for i in range(n)]
        transitions.add_items(session, job.id, items)
        return job.id


def live_workers(ledger: Ledger, n: int, model: str = "m") -> None:
    with ledger.session() as session:
        for i in range(n):
            session.add(Worker(node=f"w{i}", queue="q", model=model, state="ready", last_seen=utcnow()))


def tenant(ledger: Ledger, name: str) -> int:
    with ledger.session() as session:
        add_tenant(session, name)
        found = session.scalar(select(Tenant.id).where(Tenant.name == name))
        assert found is not None
        return found


def counts(ledger: Ledger, job: int) -> Counter[State]:
    with ledger.session(readonly=True) as session:
        return Counter(session.scalars(select(Item.state).where(Item.job_id == job)))


def work_off_queued(ledger: Ledger) -> int:
    """The workers: every queued item succeeds (as far as the scheduler can tell, it left the window)."""
    with ledger.session() as session:
        result = session.execute(
            update(Item).where(Item.state == State.queued).values(state=State.succeeded, finished_at=utcnow())
        )
        return int(getattr(result, "rowcount", 0))


def test_the_window_is_a_few_chunks_per_live_worker_less_one_counted_in_the_ledger(
    ledger: Ledger, tmp_path: Path, sent: Sent
) -> None:
    job = new_job(ledger, 100)
    pass_ = scheduler(ledger, tmp_path)
    assert pass_.run_pass().items == CHUNK  # no live worker: one chunk
    assert pass_.run_pass().items == 0  # still queued: the window is full
    live_workers(ledger, 3)
    report = pass_.run_pass()
    # 2 per worker less one (so that a newly arrived tenant's chunk waits behind fewer messages than there are
    # workers), 1 already there
    assert report.leader and report.items == 4 * CHUNK and report.messages == 4
    assert counts(ledger, job)[State.queued] == 5 * CHUNK
    assert {c.items for c in sent.chunks} == {tuple(range(min(c.items), min(c.items) + CHUNK)) for c in sent.chunks}
    assert pass_.run_pass().items == 0


def test_a_small_tenant_is_served_while_a_big_ones_backlog_waits(ledger: Ledger, tmp_path: Path, sent: Sent) -> None:
    """Tenant A submits 2,000 items, then tenant B 20: B's are all sent while more than 90 % of A's wait."""
    a, b = DEFAULT_TENANT_ID, tenant(ledger, "b")
    big = new_job(ledger, 2000, tenant=a)
    live_workers(ledger, 2)
    pass_ = scheduler(ledger, tmp_path)
    pass_.run_pass()
    work_off_queued(ledger)
    small = new_job(ledger, 20, tenant=b)
    passes = 0
    while counts(ledger, small)[State.pending]:
        pass_.run_pass()
        work_off_queued(ledger)
        passes += 1
    assert passes <= 3  # 20 items: 5 chunks, about half of each window of 3 (2 × 2 workers - 1)
    assert counts(ledger, big)[State.pending] > 0.9 * 2000
    with ledger.session(readonly=True) as session:  # the counters the marks kept (several jobs in one UPDATE)
        assert {r.tenant: r.pending for r in scheduling.backlog(session)} == {
            "default": counts(ledger, big)[State.pending]
        }
    first_of_b = next(i for i, c in enumerate(sent.chunks) if c.job == small)
    assert first_of_b <= len([c for c in sent.chunks if c.job == big]) + 2  # B's first chunk in its first window


def test_interactive_overtakes_bulk_of_the_same_tenant(ledger: Ledger, tmp_path: Path, sent: Sent) -> None:
    bulk = new_job(ledger, 400, priority="bulk")
    live_workers(ledger, 1)
    pass_ = scheduler(ledger, tmp_path, scheduler_window=3)  # one worker: 3 - 1 = 2 messages
    pass_.run_pass()
    work_off_queued(ledger)
    urgent = new_job(ledger, 8, priority="interactive")
    pass_.run_pass()
    assert [c.job for c in sent.chunks[-2:]] == [urgent, urgent]
    assert counts(ledger, bulk)[State.pending] == 400 - 2 * CHUNK


def test_weights_and_quotas_from_the_tenants_table(ledger: Ledger, tmp_path: Path, sent: Sent) -> None:
    a, b = DEFAULT_TENANT_ID, tenant(ledger, "b")
    with ledger.session() as session:
        configure_share(session, "default", weight=3)
    jobs = {new_job(ledger, 2000, tenant=a): a, new_job(ledger, 2000, tenant=b): b}
    live_workers(ledger, 2)
    pass_ = scheduler(ledger, tmp_path)
    for _ in range(100):
        pass_.run_pass()
        work_off_queued(ledger)
    served = Counter[int]()
    for chunk in sent.chunks:
        served[jobs[chunk.job]] += len(chunk.items)
    assert 2.7 <= served[a] / served[b] <= 3.3, served
    with ledger.session() as session:
        configure_share(session, "b", max_in_flight=6)
    for _ in range(5):
        pass_.run_pass()
    with ledger.session(readonly=True) as session:
        flying = session.scalars(
            select(Item.id).join(Job).where(Job.tenant_id == b, Item.state.in_([State.queued, State.running]))
        ).all()
    assert 0 < len(flying) <= 6


def test_a_quota_holds_across_the_models_of_one_pass(ledger: Ledger, tmp_path: Path, sent: Sent) -> None:
    with ledger.session() as session:
        configure_share(session, "default", max_in_flight=6)
    new_job(ledger, 100, model="m")
    new_job(ledger, 100, model="n")
    live_workers(ledger, 4, model="m")
    with ledger.session() as session:
        for i in range(4):
            session.add(Worker(node=f"v{i}", queue="q2", model="n", state="ready", last_seen=utcnow()))
    assert scheduler(ledger, tmp_path).run_pass().items == 6


def test_paused_jobs_and_tenants_wait_and_cancelled_jobs_are_never_sent(
    ledger: Ledger, tmp_path: Path, sent: Sent
) -> None:
    b = tenant(ledger, "b")
    paused, other, cancelled = new_job(ledger, 40), new_job(ledger, 40, tenant=b), new_job(ledger, 40)
    live_workers(ledger, 4)
    with ledger.session() as session:
        pause(session, paused, tenant_id=DEFAULT_TENANT_ID)
        configure_share(session, "b", paused=True)
        cancel(session, cancelled, tenant_id=DEFAULT_TENANT_ID)
    pass_ = scheduler(ledger, tmp_path)
    assert pass_.run_pass().items == 0 and sent.chunks == []
    with ledger.session() as session:
        pause(session, paused, tenant_id=DEFAULT_TENANT_ID, paused=False)
    assert pass_.run_pass().items == 7 * CHUNK and {c.job for c in sent.chunks} == {paused}  # 2 × 4 workers - 1
    assert counts(ledger, other) == {State.pending: 40} and counts(ledger, cancelled) == {State.cancelled: 40}


def test_a_cancelled_jobs_sent_chunks_claim_nothing_and_its_backlog_is_gone(
    ledger: Ledger, tmp_path: Path, sent: Sent
) -> None:
    big, other = new_job(ledger, 2000), new_job(ledger, 40)
    live_workers(ledger, 1)
    pass_ = scheduler(ledger, tmp_path)
    pass_.run_pass()
    out = [c for c in sent.chunks if c.job == big]
    assert out
    with ledger.session() as session:
        assert cancel(session, big, tenant_id=DEFAULT_TENANT_ID).cancelled == 2000
    with ledger.session() as session:  # the messages already in the broker: a worker claims none of their items
        for chunk in out:
            assert transitions.claim(session, big, chunk.items, node="w@x", lease_seconds=60, max_attempts=3) == []
    before = len(sent.chunks)
    pass_.run_pass()
    assert {c.job for c in sent.chunks[before:]} == {other}  # the window refills with other work only
    with ledger.session(readonly=True) as session:
        assert [r.as_dict()["pending"] for r in scheduling.backlog(session)] == [40 - CHUNK * len(sent.chunks[before:])]


def test_items_claimed_before_the_mark_stay_running_and_backing_off_ones_wait(
    ledger: Ledger, tmp_path: Path, sent: Sent
) -> None:
    job = new_job(ledger, 8)
    with ledger.session() as session:
        ids = list(session.scalars(select(Item.id).where(Item.job_id == job).order_by(Item.id)))
        session.execute(update(Item).where(Item.id == ids[0]).values(not_before=utcnow() + timedelta(hours=1)))
    pass_ = scheduler(ledger, tmp_path)
    pass_.run_pass()
    assert sent.chunks[0].items == tuple(ids[1:5])  # the item backing off is not sent before its time
    with ledger.session() as session:  # a worker claims a chunk between its publish and its mark
        transitions.claim(session, job, ids[5:9], node="w@x", lease_seconds=60, max_attempts=3)
        transitions.mark_queued(session, ids[5:9])
    assert counts(ledger, job)[State.running] == 3


def set_counter(ledger: Ledger, job: int, pending: int) -> None:
    """A counter gone wrong (a bug, a hand edit): the items say otherwise."""
    with ledger.session() as session:
        session.execute(update(Job).where(Job.id == job).values(pending=pending))


def test_a_counter_at_zero_strands_nothing_the_sweep_recounts_it(ledger: Ledger, tmp_path: Path, sent: Sent) -> None:
    """Passes choose jobs by their `pending` counters; a job whose counter says 0 while it has pending items is
    found by the sweep (a holder's first pass, then once per reconcile interval), recounted and dispatched."""
    first, second = new_job(ledger, 40), new_job(ledger, 40)
    set_counter(ledger, first, 0)
    live_workers(ledger, 1)
    pass_ = scheduler(ledger, tmp_path, scheduler_window=3)  # one worker: 3 - 1 = 2 messages
    report = pass_.run_pass()
    assert report.swept and {c.job for c in sent.chunks} == {first}  # recounted at once: the oldest job first
    with ledger.session(readonly=True) as session:
        assert session.scalar(select(Job.pending).where(Job.id == first)) == 40 - 2 * CHUNK
    work_off_queued(ledger)
    set_counter(ledger, second, 0)
    set_counter(ledger, first, 0)
    before = len(sent.chunks)
    report = pass_.run_pass()  # between sweeps the counters are believed: nothing to send
    assert not report.swept and report.items == 0 and len(sent.chunks) == before
    pass_.swept_at = time.monotonic() - 31  # a reconcile interval later (30 s by default)
    report = pass_.run_pass()
    assert report.swept and report.items == 2 * CHUNK
    with ledger.session(readonly=True) as session:
        assert {r.tenant: r.pending for r in scheduling.backlog(session)} == {"default": 80 - 4 * CHUNK}
    assert sum(counts(ledger, job)[State.pending] for job in (first, second)) == 80 - 4 * CHUNK


def test_a_counter_too_high_costs_a_second_read_not_the_window(ledger: Ledger, tmp_path: Path, sent: Sent) -> None:
    """A job with fewer ready items than its counter (items backing off, or a counter gone wrong) gets what it has
    and the rest of the window goes to the next jobs in the same pass."""
    short, other = new_job(ledger, 6), new_job(ledger, 40)
    set_counter(ledger, short, 1000)
    live_workers(ledger, 2)
    pass_ = scheduler(ledger, tmp_path)
    pass_.swept_at = time.monotonic()  # no sweep: the counter stays wrong for this pass
    report = pass_.run_pass()
    assert report.items == 6 + CHUNK and report.messages == 3  # the window (2 × 2 - 1): the short job's 6 items are 2
    assert [c.job for c in sent.chunks].count(other) == 1 and counts(ledger, short) == {State.queued: 6}


def test_one_scheduler_holds_the_lease_and_another_takes_over_when_it_expires(ledger: Ledger, tmp_path: Path) -> None:
    first, second = scheduling.holder_id(), scheduling.holder_id()
    assert scheduling.take_lease(ledger, first, 5)
    assert not scheduling.take_lease(ledger, second, 5)
    assert scheduling.take_lease(ledger, first, 5)  # renewed by its holder
    with ledger.session() as session:  # the holder is SIGKILLed: its lease runs out
        session.execute(update(SchedulerLease).values(expires=utcnow() - timedelta(seconds=1)))
    assert scheduling.take_lease(ledger, second, 5)
    assert not scheduling.take_lease(ledger, first, 5)
    scheduling.release_lease(ledger, second)  # a clean stop hands it over at once
    assert scheduling.take_lease(ledger, first, 5)
    lease = scheduling.lease_seconds  # a killed holder's lease runs out, then the next pass takes it: both within
    assert lease(Settings(data_dir=tmp_path, reconcile_interval=3, worker_stale_after=9)) == 2.5  # one interval
    assert lease(Settings(data_dir=tmp_path, reconcile_interval=1, scheduler_interval=0.2)) == 0.8
    assert lease(Settings(data_dir=tmp_path)) == 10  # PIXELMILL_SCHEDULER_LEASE under the 30 s default
    assert lease(Settings(data_dir=tmp_path, reconcile_interval=1)) == 1  # never under two 0.5 s passes


def test_the_backlog_per_model_tenant_and_priority(ledger: Ledger) -> None:
    b = tenant(ledger, "b")
    new_job(ledger, 5)
    new_job(ledger, 3, priority="bulk")
    new_job(ledger, 2, tenant=b, model="n", priority="interactive")
    with ledger.session(readonly=True) as session:
        rows = [r.as_dict() for r in scheduling.backlog(session)]
        only_b = scheduling.backlog(session, tenant_id=b)
    assert rows == [
        {"model": "m", "tenant": "default", "priority": "bulk", "pending": 3},
        {"model": "m", "tenant": "default", "priority": "normal", "pending": 5},
        {"model": "n", "tenant": "b", "priority": "interactive", "pending": 2},
    ]
    assert [r.pending for r in only_b] == [2]


def test_migration_0013_upgrades_an_existing_ledger(tmp_path: Path) -> None:
    settings_ = Settings(data_dir=tmp_path)
    ledger = Ledger(settings_, migrate=False)
    upgrade(ledger.engine, "0012")
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO jobs (name, created, model, params, counts, tenant_id) "
            "VALUES ('old', '2026-01-01 00:00:00', 'm', '{}', '{}', 1)"
        )
        for key, state in (("a", "pending"), ("b", "pending"), ("c", "queued"), ("d", "succeeded")):
            conn.exec_driver_sql(
                "INSERT INTO items (job_id, item_key, variant, prompt, negative, params, seed, content_hash, state, "
                f"attempts, created) VALUES (1, '{key}', 0, 'p', '', '{{}}', 1, '{key}', '{state}', 0, "
                "'2026-01-01 00:00:00')"
            )
    upgrade(ledger.engine)
    ledger.close()
    with sqlite3.connect(tmp_path / "pixelmill.db") as conn:
        assert conn.execute("SELECT priority, paused, pending FROM jobs").fetchall() == [("normal", 0, 2)]
        assert conn.execute("SELECT weight, max_in_flight, paused FROM tenants").fetchall() == [(1, None, 0)]
        indexes = {r[1] for r in conn.execute("PRAGMA index_list('items')")}
    assert "ix_items_job_id_state_id" in indexes and "ix_items_job_id_state" not in indexes


# --- end to end: a worker parent runs the scheduler --------------------------------------------------------


@pytest.mark.e2e
def test_a_small_tenants_job_finishes_while_a_big_ones_waits_end_to_end(env: Env, tmp_path: Path) -> None:
    """One worker (whose parent holds the scheduler lease): tenant default submits 400 items, then tenant b 8.
    All of b's succeed while default's job gets at most five chunks more (most of it still pending), and the broker
    never holds more than the window (1 message for one live worker, the default)."""
    from contract.queue import make_celery, queue_depth

    big = env.submit(write_catalogue(tmp_path / "big.csv", 400))["job"]
    env.cli("tenants", "add", "b")
    env.start_worker()
    app = make_celery(env.settings())
    env.wait_for(big, lambda c: c["succeeded"] >= 8, timeout=240)
    small_csv = write_catalogue(tmp_path / "small.csv", 8)
    args = ("--template", "studio photo of {title}", "--key", "sku", "--size", "64x64", "--steps", "4", "--json")
    small = json.loads(env.cli("--tenant", "b", "submit", str(small_csv), *args).stdout)["job"]
    ledger = env.ledger()
    # The big job went on while the CLI started (seconds on a loaded machine): what counts is what it gets after b
    # arrived. b has 2 chunks; the big job may finish the chunk running and the one in the window, then the fair
    # share alternates: at most 2 + 2 chunks of it, and one more for a pass that saw b's job a moment late.
    pending_at_submit = counts(ledger, big)[State.pending]
    deepest = 0
    deadline = time.monotonic() + 240
    try:
        while counts(ledger, small)[State.succeeded] < 8:
            assert time.monotonic() < deadline, counts(ledger, small)
            deepest = max(deepest, queue_depth(app, env.queue))
            time.sleep(0.2)
        left = counts(ledger, big)
        assert pending_at_submit - left[State.pending] <= 5 * 4, (pending_at_submit, left)
        assert left[State.pending] > 0.8 * 400, left
    finally:
        ledger.close()
    assert deepest <= 1


@pytest.mark.e2e
@pytest.mark.minute(1)
def test_sigkill_of_the_scheduler_holder_hands_the_lease_over_and_loses_nothing(env: Env, tmp_path: Path) -> None:
    """Two workers, both scheduler candidates: SIGKILL the one holding the lease; the other takes it within the
    lease (min(PIXELMILL_SCHEDULER_LEASE, PIXELMILL_RECONCILE_INTERVAL) = 1 s here, plus a pass), and every item
    still succeeds exactly once, with one stored object each."""
    from test_end_to_end import assert_exactly_once

    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 24))["job"]
    workers = {w.pid: w for w in (env.start_worker("--hostname", f"w{i}@%h") for i in range(2))}
    ledger = env.ledger()

    def holder() -> tuple[str, datetime] | None:
        with ledger.session(readonly=True) as session:
            row = session.get(SchedulerLease, scheduling.LEASE)
            return (row.holder, row.expires) if row is not None and row.expires > utcnow() else None

    try:
        deadline = time.monotonic() + 180
        while (held := holder()) is None or int(held[0].rsplit(":", 2)[1]) not in workers:
            assert time.monotonic() < deadline, f"no worker took the scheduler lease: {held}"
            time.sleep(0.2)
        env.wait_for(job, lambda c: c["succeeded"] >= 4, timeout=180)
        victim = int(held[0].rsplit(":", 2)[1])
        env.kill(workers[victim])
        killed = time.monotonic()
        while (now := holder()) is None or int(now[0].rsplit(":", 2)[1]) == victim:
            assert time.monotonic() - killed < 15, f"the lease was not taken over: {now}"
            time.sleep(0.1)
        env.wait_for(job, finished, timeout=240)  # the dead worker's items come back when their lease expires
    finally:
        ledger.close()
    assert_exactly_once(env, job, 24)
