"""The scheduler's figures (issue 23), recorded in docs/benchmarks.md "Fair share".

    PYTHONPATH=. python bench/fair_share.py cost [--pending 1000000] [--tenants 50] [--passes 50] [--sqlite]
    PYTHONPATH=. python bench/fair_share.py ratio [--seconds 300] [--weights 3,1]
    PYTHONPATH=. python bench/fair_share.py small-behind-big [--big 20000] [--small 20] [--workers 2] [--servers]
        [--priority]
    PYTHONPATH=. python bench/fair_share.py ratio-live [--seconds 300] [--weights 3,1] [--items 3000] [--servers]
    PYTHONPATH=. python bench/fair_share.py cancel [--big 20000] [--workers 2]
    PYTHONPATH=. python bench/fair_share.py kills [--items 1000] [--kills 3] [--seconds 600] [--grace 600]

- `cost`: PENDING items across TENANTS tenants (one job each) in a ledger on PostgreSQL (started on loopback with
  tests/servers.py; `--sqlite` for the embedded ledger), two live workers per model recorded in `workers`. Times
  `Scheduler.run_pass` with the publish replaced by a no-op (ledger time only, the mark included) over PASSES
  passes, each draining the window it filled, per chunk chosen (a chunk: max(batch size, items per message) items,
  32 by default); the sweep of the counters runs at the first pass only (then once per reconcile interval), its
  time is given per pass apart; and the backlog query (`scheduling.backlog`).
- `ratio`: the fair-share choice alone on two saturating tenants for SECONDS of simulated time at one chunk per
  simulated second per GPU: the throughput ratio the weights give.
- `small-behind-big`: the real thing, with `pixelmill worker` processes (each a scheduler candidate) and the tiny
  model: tenant `default` submits BIG items, the workers start, then tenant `b` submits SMALL; records when b's first
  image arrives, when its last does, how much of the big job is still pending then, and the deepest the model's
  queue got. `--servers`: PostgreSQL + redis-server (started here) instead of the embedded defaults.
  `--priority`: one tenant, its BIG items `--priority bulk`, then SMALL `--priority interactive`.
- `ratio-live`: tenants `default` and `b` with the weights, ITEMS each (both stay backlogged), WORKERS workers;
  once both have images, the items each finished over SECONDS (and per minute), from the ledger's `finished_at`.
- `cancel` (PostgreSQL + redis-server): BIG items on WORKERS workers; once they are busy, `pixelmill cancel`; then
  the job's items whose `started_at` is after the CLI returned, and its messages in redis-server (the queue's list
  and the `unacked` hash of messages workers hold) right after and one chunk's time later.
- `kills` (PostgreSQL + redis-server): ITEMS items on WORKERS workers; KILLS times, evenly within SECONDS, SIGKILL
  the process group of the worker whose parent holds the scheduler lease, time until another holds it, and start
  a fresh worker; then wait (GRACE at most) for the job to finish and check every item succeeded once, with one
  image row and one stored object whose sha256 matches, and nothing else under the job's prefix.

Every scenario with workers uses the tests' installation (tests/conftest.py `Env`: the tiny model at 64x64, 4
steps, 4-item messages, the tests' fast timings: reconcile interval 1 s, item lease 40 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _fill(ledger: Any, pending: int, tenants: int, workers: int) -> None:
    """PENDING items over TENANTS tenants, one job each, with `ledger.bulk_insert` (COPY on PostgreSQL)."""
    from contract import tenants as tenant_ops
    from contract import transitions
    from contract.params import GenerationParams
    from contract.schema import Job, Tenant, Worker, utcnow
    from contract.transitions import NewItem

    params = GenerationParams(64, 64, 2, 1.0)
    per = pending // tenants
    for t in range(tenants):
        with ledger.session() as session:
            name = "default" if t == 0 else f"t{t}"
            if t:
                tenant_ops.add_tenant(session, name)
            tenant_id = session.query(Tenant.id).filter(Tenant.name == name).scalar()
            job = Job(tenant_id=tenant_id, name=name, model="m", params={}, counts={})
            session.add(job)
            session.flush()
            for start in range(0, per, 50_000):
                end = min(per, start + 50_000)
                items = [NewItem(f"K{i}", 0, f"p{i}", "", params, i, f"{t}-{i}") for i in range(start, end)]
                transitions.add_items(session, job.id, items)
    with ledger.session() as session:
        for w in range(workers):
            session.add(Worker(node=f"w{w}", queue="q", model="m", state="ready", last_seen=utcnow()))
    if ledger.engine.dialect.name == "postgresql":  # as autovacuum leaves a table: statistics, visibility map
        with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")


def _timed(scheduling: Any, scheduler: Any) -> dict[str, float]:
    """Wrap the pass's steps to add up their wall time: the lease, the counters' sweep, reading the backlog, choosing
    (one read of every chunk) and sending (the mark)."""
    totals = dict.fromkeys(("lease", "sweep", "read_backlog", "choose", "mark", "chunks"), 0.0)

    def wrap(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                totals[key] += time.perf_counter() - t0

        setattr(owner, name, timed)

    wrap(scheduling, "read_lease", "lease")  # the pass's first read: the lease, and whether tallies wait
    wrap(scheduling, "take_lease", "lease")
    wrap(scheduling, "_read_backlog", "read_backlog")
    wrap(scheduler, "_choose", "choose")
    wrap(scheduler, "sweep", "sweep")  # the counters' check: a holder's first pass, then once per reconcile interval
    send = scheduler._send

    def counted(model: str, items: Any, *rest: Any) -> int:
        t0 = time.perf_counter()
        sent = int(send(model, items, *rest))
        totals["mark"] += time.perf_counter() - t0
        totals["chunks"] += sent
        return sent

    scheduler._send = counted
    return totals


def cost(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import update

    from contract import scheduling
    from contract.ledger import Ledger
    from contract.queue import plan_chunks
    from contract.schema import Item, State
    from contract.settings import Settings

    scheduling.publish_items = lambda _app, items, _m, b, p=None: plan_chunks(items, max(b, p or b))  # type: ignore[attr-defined,assignment]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pg = None
        if args.sqlite:
            settings = Settings(data_dir=tmp / "data")
        else:
            from servers import Postgres

            pg = Postgres(tmp / "pg").start()
            settings = Settings(data_dir=tmp / "data", database_url=pg.url)
        try:
            ledger = Ledger(settings, migrate=args.sqlite)
            if not args.sqlite:
                from contract.ledger import upgrade

                upgrade(ledger.engine)
            started = time.perf_counter()
            _fill(ledger, args.pending, args.tenants, args.workers)
            fill_s = time.perf_counter() - started
            scheduler = scheduling.Scheduler(settings, ledger, app=None)
            phases = _timed(scheduling, scheduler)
            per_chunk, backlog_ms = [], []
            for _ in range(args.passes):
                t0 = time.perf_counter()
                report = scheduler.run_pass()
                elapsed = time.perf_counter() - t0
                chunks = report.messages
                if chunks:
                    per_chunk.append(elapsed * 1000 / chunks)
                with ledger.session() as session:  # the workers took the window
                    session.execute(update(Item).where(Item.state == State.queued).values(state=State.succeeded))
                t0 = time.perf_counter()
                with ledger.session(readonly=True) as session:
                    rows = scheduling.backlog(session)
                backlog_ms.append((time.perf_counter() - t0) * 1000)
            ledger.close()
        finally:
            if pg is not None:
                pg.stop()
    chunks_sent = phases.pop("chunks")
    return {
        "phases_ms_per_pass": {k: round(v * 1000 / args.passes, 3) for k, v in phases.items() if k != "chunks"},
        "chunks_per_pass": round(chunks_sent / args.passes, 1),
        "live_workers": args.workers,
        "database": "sqlite" if args.sqlite else "postgresql",
        "pending": args.pending,
        "tenants": args.tenants,
        "fill_s": round(fill_s, 1),
        "passes": args.passes,
        "ms_per_chunk_median": round(statistics.median(per_chunk), 3),
        "ms_per_chunk_max": round(max(per_chunk), 3),
        "backlog_ms_median": round(statistics.median(backlog_ms), 2),
        "backlog_ms_max": round(max(backlog_ms), 2),
        "backlog_rows": len(rows),
    }


def ratio(args: argparse.Namespace) -> dict[str, Any]:
    from contract.fairshare import FairShare, JobBacklog, TenantShare

    weights = [int(w) for w in args.weights.split(",")]
    tenants = {t: TenantShare(t, weight=w) for t, w in enumerate(weights, 1)}
    jobs = [JobBacklog(t, t) for t in tenants]
    fair, served = FairShare(), Counter[int]()
    gpus, size = 8, 4
    for _ in range(args.seconds * gpus):
        for pick in fair.choose(tenants, jobs, chunks=1, chunk_size=size, take=lambda _j, n: n):
            served[pick.tenant] += pick.items
    first, second = served[1], served[2]
    return {"weights": weights, "served": dict(served), "ratio": round(first / second, 4)}


def _installation(tmp: Path, servers: bool, stack: Any) -> Any:
    """A data dir with the tiny model and judges, as the tests build them (conftest.Env), on the embedded defaults
    or on PostgreSQL + redis-server started here."""
    from conftest import Env
    from worker.engine.tiny import build_tiny_pipeline
    from worker.tiny_image_checks import build_tiny_judges

    build_tiny_judges(tmp / "models" / "judges", seed=0)
    build_tiny_pipeline(tmp / "models" / "tiny", seed=0)
    backend: dict[str, str] = {}
    if servers:
        from servers import Postgres, RedisServer

        pg = stack.enter_context(Postgres(tmp / "pg"))
        redis = stack.enter_context(RedisServer(tmp / "redis"))
        backend = {"PIXELMILL_DATABASE_URL": pg.url, "PIXELMILL_BROKER_URL": redis.url}
    (tmp / "data").mkdir()
    env = Env(tmp / "data", tmp / "models" / "tiny", backend, name="bench")
    stack.callback(env.close)
    if servers:
        env.cli("db", "upgrade")
    return env


def _states(ledger: Any, job: int) -> Counter[str]:
    from sqlalchemy import func, select

    from contract.schema import Item

    with ledger.session(readonly=True) as session:
        rows = session.execute(select(Item.state, func.count()).where(Item.job_id == job).group_by(Item.state))
        return Counter({state.value: n for state, n in rows})


def _chunk_seconds(ledger: Any, job: int) -> float:
    """A chunk's time on one worker: the median, over the job's succeeded items, from claim to record (the items
    of one message are claimed together and recorded together)."""
    from sqlalchemy import select

    from contract.schema import Item, State

    with ledger.session(readonly=True) as session:
        rows = session.execute(
            select(Item.started_at, Item.finished_at).where(Item.job_id == job, Item.state == State.succeeded)
        ).all()
    spans = [(done - start).total_seconds() for start, done in rows if start and done]
    return statistics.median(spans) if spans else 0.0


OPTIONS = ("--template", "studio photo of {title}", "--key", "sku", "--size", "64x64", "--steps", "4", "--json")


def _submit(env: Any, catalogue: Path, *args: str, tenant: str | None = None) -> int:
    """`pixelmill [--tenant T] submit CATALOGUE ...` as a user types it: the job id."""
    head = ("--tenant", tenant) if tenant else ()
    return int(json.loads(env.cli(*head, "submit", str(catalogue), *OPTIONS, *args).stdout)["job"])


def _start_workers(env: Any, n: int, first: int = 0) -> dict[int, Any]:
    """N `pixelmill worker` processes (each a scheduler candidate), by pid."""
    return {w.pid: w for w in (env.start_worker("--hostname", f"bench{i}@%h") for i in range(first, first + n))}


def small_behind_big(args: argparse.Namespace) -> dict[str, Any]:
    """Tenant A's BIG items, then tenant b's SMALL; with --priority, one tenant's `bulk` job, then its
    `interactive` one."""
    import contextlib

    from conftest import write_catalogue
    from contract.queue import make_celery, queue_depth

    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = _installation(tmp, args.servers, stack)
        started = time.perf_counter()
        big_args = ("--priority", "bulk") if args.priority else ()
        steps = ("--steps", str(args.steps))  # after OPTIONS' 4: the last one counts
        big = _submit(env, write_catalogue(tmp / "big.csv", args.big), *big_args, *steps)
        big_submit_s = time.perf_counter() - started
        env.cli("tenants", "add", "b")
        _start_workers(env, args.workers)
        ledger, app = env.ledger(), make_celery(env.settings())
        while _states(ledger, big)["succeeded"] < 4 * args.workers:  # every worker is up and busy with A
            time.sleep(0.2)
        catalogue = write_catalogue(tmp / "small.csv", args.small, start=1_000_000)
        asked = time.perf_counter()
        if args.priority:
            small = _submit(env, catalogue, "--priority", "interactive", *steps)
        else:
            small = _submit(env, catalogue, *steps, tenant="b")
        submitted = time.perf_counter()  # the job is committed: from here the scheduler may send it
        big_pending_at_submit = _states(ledger, big)["pending"]
        first = None
        deepest = 0
        while True:
            states = _states(ledger, small)
            if first is None and states["succeeded"]:
                first = time.perf_counter() - submitted
            deepest = max(deepest, queue_depth(app, env.queue))
            if states["succeeded"] + states["failed"] + states["blocked"] >= args.small:
                break
            time.sleep(0.1)
        done = time.perf_counter() - submitted
        big_states = _states(ledger, big)
        chunk_s = _chunk_seconds(ledger, big)
        ledger.close()
    return {
        "backend": "postgresql+redis-server" if args.servers else "embedded",
        "workers": args.workers,
        "big": args.big,
        "small": args.small,
        "same_tenant_bulk_then_interactive": args.priority,
        "steps": args.steps,
        "big_submit_s": round(big_submit_s, 2),
        "small_submit_cli_s": round(submitted - asked, 2),
        "chunk_s_median": round(chunk_s, 2),
        "small_first_image_s": round(first or 0.0, 2),
        "small_first_image_in_chunks": round((first or 0.0) / chunk_s, 2) if chunk_s else None,
        "small_all_done_s": round(done, 2),
        "small_states": dict(states),
        "big_items_taken_meanwhile": big_pending_at_submit - big_states["pending"],
        "big_pending_fraction_then": round(big_states["pending"] / args.big, 4),
        "big_states_then": dict(big_states),
        "deepest_queue_messages": deepest,
    }


def _finished_between(ledger: Any, job: int, start: Any, end: Any) -> int:
    from sqlalchemy import func, select

    from contract.schema import Item, State

    with ledger.session(readonly=True) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Item.job_id == job,
                    Item.state == State.succeeded,
                    Item.finished_at >= start,
                    Item.finished_at < end,
                )
            )
            or 0
        )


def ratio_live(args: argparse.Namespace) -> dict[str, Any]:
    """Two tenants with weights W0:W1, both backlogged throughout: items each finished over SECONDS, on workers."""
    import contextlib

    from conftest import write_catalogue
    from contract.schema import utcnow

    weights = [int(w) for w in args.weights.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = _installation(tmp, args.servers, stack)
        env.cli("tenants", "add", "b")
        env.cli("tenants", "set", "default", "--weight", str(weights[0]))
        env.cli("tenants", "set", "b", "--weight", str(weights[1]))
        jobs = {
            "default": _submit(env, write_catalogue(tmp / "a.csv", args.items)),
            "b": _submit(env, write_catalogue(tmp / "b.csv", args.items, start=1_000_000), tenant="b"),
        }
        _start_workers(env, args.workers)
        ledger = env.ledger()
        while min(_states(ledger, job)["succeeded"] for job in jobs.values()) < 4:  # warmed up, both served
            time.sleep(0.5)
        start, minutes = utcnow(), []
        for _ in range(max(1, args.seconds // 60)):
            t0 = utcnow()
            time.sleep(args.seconds / max(1, args.seconds // 60))
            minutes.append({t: _finished_between(ledger, job, t0, utcnow()) for t, job in jobs.items()})
        end = utcnow()
        served = {t: _finished_between(ledger, job, start, end) for t, job in jobs.items()}
        left = {t: _states(ledger, job)["pending"] for t, job in jobs.items()}
        ledger.close()
    return {
        "backend": "postgresql+redis-server" if args.servers else "embedded",
        "workers": args.workers,
        "weights": weights,
        "seconds": round((end - start).total_seconds(), 1),
        "succeeded_in_window": served,
        "ratio": round(served["default"] / served["b"], 3) if served["b"] else None,
        "per_interval": minutes,
        "pending_at_end": left,
    }


def _broker_messages_of(env: Any, job: int) -> dict[str, int]:
    """Messages of `job` in redis-server: waiting in the model's queue and held unacknowledged by workers."""
    import redis

    client = redis.Redis.from_url(env.backend["PIXELMILL_BROKER_URL"])
    mark = f"[job {job}:"
    waiting: list[Any] = [m for key in client.keys(f"{env.queue}*") for m in client.lrange(key, 0, -1)]
    unacked: list[Any] = list(client.hvals("unacked")) if client.exists("unacked") else []
    count = {
        "waiting": sum(mark in m.decode(errors="replace") for m in waiting),
        "unacked": sum(mark in m.decode(errors="replace") for m in unacked),
        "waiting_all_jobs": len(waiting),
        "unacked_all_jobs": len(unacked),
    }
    client.close()
    return count


def cancel_live(args: argparse.Namespace) -> dict[str, Any]:
    """Cancel a BIG-item job while workers run it: items started after `cancel` returned, and its messages in
    the broker one chunk's time later."""
    import contextlib

    from sqlalchemy import func, select

    from conftest import write_catalogue
    from contract.schema import Item, utcnow

    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = _installation(tmp, True, stack)
        job = _submit(env, write_catalogue(tmp / "big.csv", args.big))
        _start_workers(env, args.workers)
        ledger = env.ledger()
        while _states(ledger, job)["succeeded"] < 4 * args.workers:
            time.sleep(0.2)
        before = _broker_messages_of(env, job)
        asked = utcnow()
        out = json.loads(env.cli("cancel", str(job), "--json").stdout)
        returned = utcnow()
        chunk_s = _chunk_seconds(ledger, job)
        right_after = _broker_messages_of(env, job)
        time.sleep(chunk_s)
        later = _broker_messages_of(env, job)
        time.sleep(chunk_s)
        with ledger.session(readonly=True) as session:
            started_after = session.scalar(select(func.count()).where(Item.job_id == job, Item.started_at > returned))
            last_start = session.scalar(select(func.max(Item.started_at)).where(Item.job_id == job))
        states = _states(ledger, job)
        ledger.close()
    return {
        "backend": "postgresql+redis-server",
        "workers": args.workers,
        "big": args.big,
        "cancel_cli_s": round((returned - asked).total_seconds(), 2),
        "cancel_output": out,
        "chunk_s_median": round(chunk_s, 2),
        "items_started_after_cancel_returned": started_after,
        "last_start_minus_cancel_return_s": round((last_start - returned).total_seconds(), 3) if last_start else None,
        "broker_before_cancel": before,
        "broker_right_after": right_after,
        "broker_one_chunk_later": later,
        "states_two_chunks_later": dict(states),
    }


def _holder_pid(ledger: Any) -> int | None:
    """The pid in the scheduler lease's holder (host:pid:nonce), while the lease is valid."""
    from contract import scheduling
    from contract.schema import SchedulerLease, utcnow

    with ledger.session(readonly=True) as session:
        row = session.get(SchedulerLease, scheduling.LEASE)
        return int(row.holder.rsplit(":", 2)[1]) if row is not None and row.expires > utcnow() else None


def _exactly_once(env: Any, ledger: Any, job: int) -> dict[str, Any]:
    """Every item succeeded, with one image row (unique per item) and one stored object whose bytes match it, and
    nothing else stored under the job's prefix."""
    import hashlib

    from sqlalchemy import select

    from contract.schema import Image, Item

    with ledger.session(readonly=True) as session:
        items = session.execute(select(Item.id, Item.state, Item.attempts).where(Item.job_id == job)).all()
        images = session.execute(
            select(Image.item_id, Image.storage_key, Image.sha256).join(Item).where(Item.job_id == job)
        ).all()
    storage = env.storage()
    keys = sorted(storage.keys(f"jobs/{job}/"))
    bad = [key for _, key, digest in images if hashlib.sha256(storage.get(key)).hexdigest() != digest]
    per_item = Counter(item for item, _, _ in images)
    return {
        "items": len(items),
        "states": dict(Counter(state.value for _, state, _ in items)),
        "attempts": dict(Counter(attempts for _, _, attempts in items)),
        "image_rows": len(images),
        "items_with_one_image": sum(1 for n in per_item.values() if n == 1),
        "stored_objects": len(keys),
        "objects_matching_image_rows": len(set(keys) & {key for _, key, _ in images}) - len(bad),
        "stray_objects": len(set(keys) - {key for _, key, _ in images}),
        "exactly_once": len(items) == len(images) == len(keys) == len(per_item)
        and all(state.value == "succeeded" for _, state, _ in items)
        and not bad
        and set(keys) == {key for _, key, _ in images},
    }


def kills_live(args: argparse.Namespace) -> dict[str, Any]:
    """ITEMS items on WORKERS workers; KILLS times, evenly over SECONDS, SIGKILL the scheduler lease's holder (its
    whole process group) and start a fresh worker in its place; then run to the end and check exactly-once."""
    import contextlib

    from conftest import finished, job_counts, write_catalogue

    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = _installation(tmp, True, stack)
        # The tests' 1 s reconcile interval: passes every 0.25 s make the lease 0.75 s (contract.scheduling's
        # lease_seconds), so lease + one pass fits the interval; at 0.5 s the two-pass floor would make it 1 s.
        env.vars["PIXELMILL_SCHEDULER_INTERVAL"] = "0.25"
        job = _submit(env, write_catalogue(tmp / "k.csv", args.items))
        workers = _start_workers(env, args.workers)
        ledger, began, kills, spawned = env.ledger(), time.monotonic(), [], args.workers
        for k in range(args.kills):
            time.sleep(max(0.0, began + args.seconds * (k + 1) / (args.kills + 1) - time.monotonic()))
            while (victim := _holder_pid(ledger)) not in workers:
                time.sleep(0.1)
            succeeded = _states(ledger, job)["succeeded"]
            env.kill(workers.pop(victim))
            killed = time.monotonic()
            while (now := _holder_pid(ledger)) is None or now == victim:
                time.sleep(0.05)
            took = time.monotonic() - killed
            kills.append({"at_s": round(killed - began, 1), "takeover_s": round(took, 2), "succeeded_then": succeeded})
            workers.update(_start_workers(env, 1, spawned))
            spawned += 1
        while not finished(job_counts(ledger, job)) and time.monotonic() - began < args.seconds + args.grace:
            time.sleep(2)
        total_s = time.monotonic() - began
        result = _exactly_once(env, ledger, job)
        ledger.close()
    settings = env.settings()
    return {
        "backend": "postgresql+redis-server",
        "workers": args.workers,
        "items": args.items,
        "run_s": round(total_s, 1),
        "reconcile_interval_s": settings.reconcile_interval,
        "scheduler_interval_s": float(env.vars["PIXELMILL_SCHEDULER_INTERVAL"]),  # the workers' (Env.settings: not)
        "kills": kills,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--pending", type=int, default=1_000_000)
    c.add_argument("--tenants", type=int, default=50)
    c.add_argument("--passes", type=int, default=50)
    c.add_argument("--sqlite", action="store_true")
    c.add_argument("--workers", type=int, default=2, help="live workers recorded for the model (window: 2 each)")
    r = sub.add_parser("ratio")
    r.add_argument("--seconds", type=int, default=300)
    r.add_argument("--weights", default="3,1")
    s = sub.add_parser("small-behind-big")
    s.add_argument("--big", type=int, default=20_000)
    s.add_argument("--small", type=int, default=20)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--servers", action="store_true")
    s.add_argument("--priority", action="store_true", help="one tenant: a bulk job, then an interactive one")
    s.add_argument(
        "--steps",
        type=int,
        default=4,
        help="denoising steps: more make a chunk longer beside the fixed latencies (a 0.5 s scheduler pass, a claim), "
        "as a GPU chunk is",
    )
    rl = sub.add_parser("ratio-live")
    rl.add_argument("--seconds", type=int, default=300)
    rl.add_argument("--weights", default="3,1")
    rl.add_argument("--items", type=int, default=3000, help="per tenant: enough to stay backlogged")
    rl.add_argument("--workers", type=int, default=2)
    rl.add_argument("--servers", action="store_true")
    cl = sub.add_parser("cancel")
    cl.add_argument("--big", type=int, default=20_000)
    cl.add_argument("--workers", type=int, default=2)
    kl = sub.add_parser("kills")
    kl.add_argument("--items", type=int, default=1000)
    kl.add_argument("--workers", type=int, default=2)
    kl.add_argument("--kills", type=int, default=3)
    kl.add_argument("--seconds", type=int, default=600, help="the kills fall evenly within these seconds")
    kl.add_argument("--grace", type=int, default=600, help="then at most this long for the job to finish")
    args = parser.parse_args()
    os.environ.setdefault("PIXELMILL_IMAGE_CHECKER", "none")
    modes = {"cost": cost, "ratio": ratio, "small-behind-big": small_behind_big, "ratio-live": ratio_live}
    modes.update({"cancel": cancel_live, "kills": kills_live})
    result = modes[args.mode](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
