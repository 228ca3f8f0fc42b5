"""The scheduler's figures (issue 23), recorded in docs/benchmarks.md "Fair share".

    PYTHONPATH=. python bench/fair_share.py cost [--pending 1000000] [--tenants 50] [--passes 50] [--sqlite]
    PYTHONPATH=. python bench/fair_share.py ratio [--seconds 300] [--weights 3,1]
    PYTHONPATH=. python bench/fair_share.py small-behind-big [--big 20000] [--small 20] [--workers 2] [--servers]

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

The 3:1 run over five minutes of saturated GPUs and the three SIGKILLs of the scheduler's holder over ten minutes
are not scripted yet: see docs/benchmarks.md.
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

    wrap(scheduling, "take_lease", "lease")
    wrap(scheduling, "_read_backlog", "read_backlog")
    wrap(scheduler, "_choose", "choose")
    wrap(scheduler, "sweep", "sweep")  # the counters' check: a holder's first pass, then once per reconcile interval
    send = scheduler._send

    def counted(model: str, items: Any) -> int:
        t0 = time.perf_counter()
        sent = int(send(model, items))
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


def small_behind_big(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib

    from conftest import write_catalogue
    from contract.queue import make_celery, queue_depth

    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        env = _installation(tmp, args.servers, stack)
        started = time.perf_counter()
        big = env.submit(write_catalogue(tmp / "big.csv", args.big))["job"]
        big_submit_s = time.perf_counter() - started
        env.cli("tenants", "add", "b")
        for w in range(args.workers):
            env.start_worker("--hostname", f"bench{w}@%h")
        ledger, app = env.ledger(), make_celery(env.settings())
        while _states(ledger, big)["succeeded"] < 4 * args.workers:  # every worker is up and busy with A
            time.sleep(0.2)
        catalogue = write_catalogue(tmp / "small.csv", args.small)
        options = ("--template", "studio photo of {title}", "--key", "sku", "--size", "64x64", "--steps", "4")
        asked = time.perf_counter()
        small = json.loads(env.cli("--tenant", "b", "submit", str(catalogue), *options, "--json").stdout)["job"]
        submitted = time.perf_counter()  # the job is committed: from here the scheduler may send it
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
        "big_submit_s": round(big_submit_s, 2),
        "small_submit_cli_s": round(submitted - asked, 2),
        "chunk_s_median": round(chunk_s, 2),
        "small_first_image_s": round(first or 0.0, 2),
        "small_first_image_in_chunks": round((first or 0.0) / chunk_s, 2) if chunk_s else None,
        "small_all_done_s": round(done, 2),
        "big_pending_fraction_then": round(big_states["pending"] / args.big, 4),
        "big_states_then": dict(big_states),
        "deepest_queue_messages": deepest,
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
    args = parser.parse_args()
    os.environ.setdefault("PIXELMILL_IMAGE_CHECKER", "none")
    result = {"cost": cost, "ratio": ratio, "small-behind-big": small_behind_big}[args.mode](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
