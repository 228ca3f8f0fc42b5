"""Following jobs: `pixelmill status` (one job's counts, rate and ETA; `--watch` a progress bar) and `pixelmill
jobs` (the newest jobs in a table), and `watch_job`, the progress `submit --wait` and the demo show too: a bar on
a terminal, a plain `progress_line` now and then in a pipe."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from contract.settings import get_settings
from pixelmill.cli.common import caller_tenant, err, fail, out, read_ledger


def status(
    job: Annotated[int, typer.Argument(help="Job id.")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Show a progress bar until the job ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 1.0,
) -> None:
    """Counts per state, images/s and ETA for one job."""
    from producer.status import UnknownJob, job_status  # SQLAlchemy: loaded by the commands that read the ledger

    if not interval > 0:
        raise typer.BadParameter(f"must be greater than 0, got {interval:g}", param_hint="'--interval'")

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    try:
        with ledger.session(readonly=True) as session:
            current = job_status(session, job, tenant_id=tenant.id, stale_after=get_settings().worker_stale_after)
    except UnknownJob as exc:
        fail(str(exc))
    if watch and not current.finished:
        current = watch_job(ledger, job, interval, tenant_id=tenant.id)
    if as_json:
        print(json.dumps(current.as_dict()))
    else:
        out.print(status_detail(current))


def backlog(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Every tenant's (the operator's view).")] = False,
) -> None:
    """Pending items per model, tenant and priority: the ledger's backlog, which the scheduler sends to the
    workers a few chunks at a time (what an autoscaler should read, not the broker's queue length)."""
    from contract.scheduling import backlog as read_backlog  # SQLAlchemy

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    with ledger.session(readonly=True) as session:
        rows = read_backlog(session, tenant_id=None if all_tenants else tenant.id)
    if as_json:
        print(json.dumps([r.as_dict() for r in rows]))
        return
    table = Table("model", "tenant", "priority", "pending")
    for r in rows:
        table.add_row(r.model, r.tenant, r.priority, str(r.pending))
    out.print(table if rows else "no pending items")


def jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    limit: Annotated[int, typer.Option(help="Most recent N jobs.", min=1)] = 50,
) -> None:
    """List jobs, newest first."""
    from producer.status import list_jobs  # SQLAlchemy

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    with ledger.session(readonly=True) as session:
        rows = list_jobs(session, limit, tenant_id=tenant.id, stale_after=get_settings().worker_stale_after)
    if as_json:
        print(json.dumps([r.as_dict() for r in rows]))
    else:
        out.print(status_table(rows))
        for line in no_worker_lines(rows):
            out.print(line, style="yellow", highlight=False, markup=False)


def watch_job(
    ledger: Any,
    job: int,
    interval: float = 1.0,
    timeout: float | None = None,
    alive: Any = None,
    *,
    tenant_id: int,
    report_every: float = 30.0,
) -> Any:
    """Follow the job until it has nothing left to do (or `timeout` s pass, or `alive()` turns false): a
    progress bar on a terminal; in a pipe or a file, one plain `progress_line` now and every `report_every` s."""
    import producer.status  # SQLAlchemy; read as `producer.status.job_status` at each poll (tests replace it)

    started = time.monotonic()
    view = WatchView(err, job) if err.is_terminal else None
    reported: float | None = None
    try:
        while True:
            with ledger.session(readonly=True) as session:
                current = producer.status.job_status(
                    session, job, tenant_id=tenant_id, stale_after=get_settings().worker_stale_after
                )
            if view is not None:
                view.update(current)
            elif not current.finished and (reported is None or time.monotonic() - reported >= report_every):
                err.print(progress_line(current), highlight=False, markup=False, soft_wrap=True)
                reported = time.monotonic()
            if current.finished:
                return current
            if timeout is not None and time.monotonic() - started > timeout:
                return current
            if alive is not None and not alive():
                return current
            time.sleep(interval)
    finally:
        if view is not None:
            view.stop()


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds // 3600:.0f}h{seconds % 3600 / 60:02.0f}m"


def progress_line(s: Any) -> str:
    """One plain line of progress, e.g. `job 3: 120/400 done, 2 failed, 1.8 images/s, ETA 2m`."""
    parts = [f"job {s.job}: {s.done}/{s.total} done", f"{s.failed} failed"]
    if s.images_per_s:
        parts.append(f"{s.images_per_s:.1f} images/s")
    if s.eta_s:
        parts.append(f"ETA {duration(s.eta_s)}")
    return ", ".join(parts) + (f"; {s.no_worker}" if s.no_worker else "")


class WithNote(Progress):
    """A progress display with an optional line of its own below the bar (the no-worker line)."""

    note: str | None = None

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        if self.note:
            yield Text(self.note, style="yellow")


class WatchView:
    """The terminal's view of `watch_job`: one line that fits 80 columns (the bar takes what the job number,
    counts and rate leave), and below it, in full and wrapped, the no-worker line when there is one."""

    def __init__(self, console: Console, job: int) -> None:
        self.bar = WithNote(
            TextColumn("job {task.fields[job]}"),
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10, max_width=40)),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("", total=None, job=job, detail="")

    def update(self, current: Any) -> None:
        rate = (
            f"{current.images_per_s:.2f} img/s"
            if current.images_per_s
            else ("no worker" if current.no_worker else "starting")
        )
        eta = f" ETA {duration(current.eta_s)}" if current.eta_s else ""
        self.bar.note = current.no_worker
        self.bar.update(
            self.task,
            total=current.total,
            completed=current.done,
            detail=f"{rate}{eta} · {current.running} run · {current.failed} fail",
        )
        if not self.bar.live.is_started:
            self.bar.start()  # after the first update: no empty `0/?` frame

    def stop(self) -> None:
        self.bar.stop()


def status_table(rows: list[Any]) -> Table:
    """`jobs`: the name keeps what it needs at 80 columns (up to 40 characters); the catalogue is cut with an
    ellipsis rather than the name; blocked, cancelled and skipped columns appear only when a job has some;
    no-worker lines come after the table (`no_worker_lines`), in full."""

    def longest(values: list[str], cap: int) -> int:
        return min(cap, max([len(v) for v in values] + [4]))

    optional = {
        "block": any(s.blocked for s in rows),
        "cancel": any(s.cancelled for s in rows),
        "skip": any(s.skipped for s in rows),
    }
    numbers = ["total", "wait", "run", "ok", *(["block"] if optional["block"] else []), "fail"]
    numbers += [c for c in ("cancel", "skip") if optional[c]]
    table = Table(
        "job",
        Column("name", no_wrap=True, overflow="ellipsis", min_width=longest([s.name for s in rows], 40)),
        Column(
            "catalogue",
            no_wrap=True,
            overflow="ellipsis",
            min_width=longest([s.catalogue or "-" for s in rows], 12),
        ),
        *(Column(n, justify="right", no_wrap=True) for n in numbers),
        Column("img/s", justify="right", no_wrap=True),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for s in rows:
        values = {
            "total": s.total,
            "wait": s.pending + s.queued,
            "run": s.running,
            "ok": s.succeeded,
            "block": s.blocked,
            "fail": s.failed,
            "cancel": s.cancelled,
            "skip": s.skipped,
        }
        table.add_row(
            str(s.job),
            escape(s.name),
            escape(s.catalogue or "-"),
            *(str(values[n]) for n in numbers),
            f"{s.images_per_s:.2f}" if s.images_per_s else "-",
        )
    return table


def no_worker_lines(rows: list[Any]) -> list[str]:
    return [f"job {s.job}: {s.no_worker}" for s in rows if s.no_worker]


def status_detail(s: Any) -> Table:
    table = Table(show_header=False, box=box.SIMPLE, pad_edge=False)
    eta = f"{s.eta_s:.0f} s" if s.eta_s and not s.finished else "-"
    rate = f"{s.images_per_s:.2f}" if s.images_per_s else "-"
    for key, value in [
        ("job", f"{s.job} ({s.name})"),
        ("catalogue", s.catalogue or "-"),
        ("model", s.model),
        ("created", s.created),
        ("total", s.total),
        ("pending", s.pending),
        ("queued", s.queued),
        ("running", s.running),
        ("succeeded", s.succeeded),
        (
            "blocked",
            f"{s.blocked}" + (f" ({', '.join(f'{k} {v}' for k, v in s.blocked_by.items())})" if s.blocked_by else ""),
        ),
        ("failed", s.failed),
        ("cancelled", s.cancelled),
        *((("workers", s.no_worker),) if s.no_worker else ()),
        ("image checker", "none (unchecked, as configured)" if s.image_checker == "none" else s.image_checker or "-"),
        ("quality gate", s.gate or "-"),
        *(
            (f"  {name}", f"median {d['median']:.4g} · p10 {d['p10']:.4g} · p90 {d['p90']:.4g} (n={d['n']})")
            for name, d in s.scores.items()
        ),
        ("skipped at submit", s.skipped),
        ("images/s", rate),
        ("ETA", eta),
        ("finished", "yes" if s.finished else "no"),
    ]:
        table.add_row(key, str(value))
    return table
