"""Commands for what happens after submission: cancel, retry and list a job's items, export its manifest,
look at its images (contact sheet), compare nightly runs (drift). Registered by importing this module at the
end of `pixelmill/cli/__init__.py`; every command reads an existing ledger and never creates one."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from contract.settings import get_settings
from pixelmill.cli import _read_ledger, app, err, fail, out

log = logging.getLogger(__name__)

# `submit --wait` exit codes: the job finished with every item succeeded or blocked / some failed /
# cancelled or still unfinished at --timeout / the finished run drifted (--fail-on-drift).
EXIT_OK, EXIT_FAILED, EXIT_CANCELLED, EXIT_DRIFT = 0, 3, 4, 5


@contextlib.contextmanager
def _written(output: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A file written under a temporary name and renamed when complete: a reader never sees half of it, and a
    failure leaves nothing behind."""
    partial = output.with_name(f".{output.name}.partial")
    try:
        with open(partial, "wb") if binary else open(partial, "w", encoding="utf-8", newline="") as stream:
            yield stream
        partial.replace(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    finally:
        if partial.exists():
            partial.unlink()


@app.command()
def cancel(
    job: Annotated[int, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Cancel a job: its pending, queued and running items become `cancelled` (running ones are discarded:
    their images are not recorded). Finished items stay as they are."""
    from producer.jobs import JobError
    from producer.jobs import cancel as do_cancel

    try:
        with _read_ledger().session() as session:
            result = do_cancel(session, job)
    except JobError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        out.print(
            f"job {job}: cancelled {result.cancelled} items ({result.pending} pending, {result.queued} "
            f"queued, {result.running} running, discarded)",
            highlight=False,
        )


@app.command()
def retry(
    job: Annotated[int, typer.Argument(help="Job id.")],
    failed: Annotated[bool, typer.Option("--failed/--no-failed", help="Retry failed items.")] = True,
    blocked_by: Annotated[
        Optional[str],
        typer.Option(
            "--blocked-by",
            help="Also retry items blocked by the `image` checker (same seed: useful after "
            "changing the checker settings) or the `prompt` filter (only those PIXELMILL_PROMPT_BLOCKLISTS "
            "now lets through).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Queue a job's failed (and, with --blocked-by, blocked) items again: attempts from 0, same seeds and keys."""
    from kombu.exceptions import OperationalError

    from contract.queue import make_celery
    from producer.jobs import JobError, count_items
    from producer.jobs import retry as do_retry
    from producer.options import blocklists as blocklists_of

    if blocked_by is not None and blocked_by not in ("image", "prompt"):
        fail(f"--blocked-by must be image or prompt, got {blocked_by!r}")
    if not failed and blocked_by is None:
        fail("nothing to retry: --no-failed without --blocked-by")
    settings = get_settings()
    ledger = _read_ledger()
    blocklists = list(blocklists_of(settings))
    try:
        celery = make_celery(settings)
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
        with ledger.session() as session:
            before = count_items(session, job) if blocked_by else {}
            count = do_retry(
                session,
                celery,
                job,
                failed=failed,
                blocked_by=blocked_by,
                batch_size=settings.batch_size,
                blocklists=blocklists,
            )
    except JobError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"cannot reach the broker (PIXELMILL_BROKER_URL); nothing was retried: {exc}")
    if as_json:
        print(json.dumps({"job": job, "requeued": count}))
        return
    out.print(f"job {job}: {count} items queued again", highlight=False)
    if blocked_by == "prompt":
        with ledger.session(readonly=True) as session:
            from producer.jobs import count_items as counts_now

            still = counts_now(session, job).get("blocked", 0)
        if still and before.get("blocked", 0):
            out.print(
                f"{still} items stay blocked (the prompt filter still refuses them, or they were "
                "blocked by the image checker)",
                highlight=False,
            )


@app.command()
def items(
    job: Annotated[int, typer.Argument(help="Job id.")],
    state: Annotated[
        Optional[str],
        typer.Option(
            help="Only items in this state (pending, queued, running, succeeded, blocked, failed, cancelled)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int, typer.Option(help="At most N rows in the table (0: all; --json prints all).")] = 200,
) -> None:
    """A job's items: key, state, attempts and the last line of the last error."""
    from contract.schema import State
    from producer.jobs import JobError, list_items

    wanted = None
    if state is not None:
        try:
            wanted = State(state)
        except ValueError:
            fail(f"--state must be one of {', '.join(s.value for s in State)}, got {state!r}")
    try:
        with _read_ledger().session(readonly=True) as session:
            rows = list_items(session, job, wanted)
            if as_json:
                for row in rows:
                    sys.stdout.write(json.dumps(row.as_dict()) + "\n")
                return
            table = Table("item", "key", "state", "attempts", "error / reason", box=box.SIMPLE_HEAD, pad_edge=False)
            shown = total = 0
            for row in rows:
                total += 1
                if limit and shown >= limit:
                    continue
                shown += 1
                table.add_row(
                    str(row.id),
                    escape(f"{row.key}#{row.variant}"),
                    row.state,
                    str(row.attempts),
                    escape(row.error or row.reason or ""),
                )
    except JobError as exc:
        fail(str(exc))
    out.print(table)
    out.print(
        f"{total} items" + (f" (first {shown} shown; --limit 0 for all)" if shown < total else ""), highlight=False
    )


@app.command()
def manifest(
    job: Annotated[Optional[int], typer.Option(help="One row per item of this job.")] = None,
    catalogue: Annotated[
        Optional[str],
        typer.Option(help="One row per current entry of this catalogue (retired entries included, marked)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="csv, jsonl or parquet (pip install 'pixelmill[parquet]').")
    ] = "csv",
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="File to write (default: stdout; parquet needs a file).")
    ] = None,
    urls: Annotated[
        bool, typer.Option("--urls", help="Fill the url column: presigned on S3, file URIs locally.")
    ] = False,
    expires: Annotated[
        Optional[int], typer.Option(help="Seconds presigned URLs stay valid (default: PIXELMILL_S3_PRESIGN_EXPIRES).")
    ] = None,
) -> None:
    """Export results for a shop system: key → object, URL, sha256, size, scores, safety, provenance, error."""
    from contract.storage import open_storage
    from producer.manifest import FORMATS, WRITERS, ManifestError, iter_manifest, parquet_schema

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if (job is None) == (catalogue is None):
        fail("give exactly one of --job N or --catalogue NAME")
    if fmt == "parquet":
        if output is None:
            fail("--format parquet writes a file: add -o FILE")
        try:
            parquet_schema()
        except ManifestError as exc:
            fail(str(exc))
    if expires is not None and not urls:
        fail("--expires applies to --urls only")
    settings = get_settings()
    ledger = _read_ledger()
    storage = open_storage(settings) if urls else None
    try:
        with ledger.session(readonly=True) as session:
            rows = iter_manifest(
                session,
                job=job,
                catalogue=catalogue,
                storage=storage,
                urls=urls,
                expires=expires or settings.s3_presign_expires,
            )
            first = next(rows, None)  # errors (no such job) before any file is opened

            def chained() -> Any:
                if first is not None:
                    yield first
                yield from rows

            writer: Any = WRITERS[fmt]
            if output is None:
                count = writer(chained(), sys.stdout)
            else:
                with _written(output, binary=fmt == "parquet") as stream:
                    count = writer(chained(), stream)
    except ManifestError as exc:
        fail(str(exc))
    if output is not None:
        err.print(f"{count} rows written to {output}", highlight=False)


@app.command()
def catalogues(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False) -> None:
    """The named catalogues (submit --catalogue): runs, current and retired entries, the last run and its changes."""
    from producer.catalogue_runs import list_catalogues

    with _read_ledger().session(readonly=True) as session:
        found = list_catalogues(session)
    if as_json:
        print(json.dumps([c.as_dict() for c in found]))
        return
    if not found:
        out.print("no catalogues yet (submit --catalogue NAME makes one)", highlight=False)
        return
    table = Table("catalogue", "runs", "current", "retired", "last run", "its changes", box=box.SIMPLE_HEAD)
    for c in found:
        table.add_row(
            escape(c.name),
            str(c.runs),
            str(c.current),
            str(c.retired),
            f"job {c.last_job} · {c.last_run:%Y-%m-%d %H:%M}",
            ", ".join(f"{n} {change}" for change, n in c.last_changes.items()),
        )
    out.print(table)


# --- worker readiness, used by `worker` and `submit` ---------------------------------------------------------


def load_failure(hostname: str, queue: str, *, since: datetime) -> str | None:
    """The error a worker node recorded since `since` when its model failed to load, or None."""
    from celery.utils.nodenames import default_nodename, host_format
    from sqlalchemy import select

    from contract.schema import Worker

    node = host_format(default_nodename(hostname))
    ledger = _read_ledger()
    try:
        with ledger.session(readonly=True) as session:
            row = session.execute(
                select(Worker.state, Worker.error, Worker.last_seen).where(Worker.node == node, Worker.queue == queue)
            ).one_or_none()
    finally:
        ledger.close()
    if row is None or row.state != "failed" or row.last_seen < since:
        return None
    return str(row.error or "the model failed to load")


def unserved_warning(ledger: Any, model: str, *, timeout: float = 1.0) -> str | None:
    """A warning when no live worker serves `model`'s queue: the ledger's heartbeats show none ready or still
    loading it (`producer.status.no_worker_line`), and none answers Celery's `active_queues` within `timeout` s.
    Workers may start later: a warning, not a refusal."""
    from contract.queue import make_celery, queue_for
    from contract.schema import utcnow
    from producer.status import no_worker_line

    settings = get_settings()
    queue = queue_for(model)
    with ledger.session(readonly=True) as session:
        if no_worker_line(session, model, since=utcnow(), stale_after=settings.worker_stale_after) is None:
            return None
    try:
        replies = make_celery(settings).control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001 (an answer we cannot get is no answer)
        replies = {}
    if any(q.get("name") == queue for queues in replies.values() for q in queues or []):
        return None
    return (
        f"no live worker serves this job's model queue {queue}; its items wait until one does: "
        f"pixelmill worker --model {model}"
    )


def wait_for(
    ledger: Any, job: int, *, timeout: float | None, interval: float = 2.0, report_every: float = 30.0
) -> tuple[int, Any]:
    """Block until the job has nothing left to do (or `timeout` s pass), showing progress (`watch_job`: a bar on
    a terminal, a line every `report_every` s in a pipe); the `submit --wait` exit code and the last status."""
    from pixelmill.cli import watch_job

    status = watch_job(ledger, job, interval, timeout, report_every=report_every)
    if not status.finished or status.cancelled:
        return EXIT_CANCELLED, status
    return (EXIT_FAILED if status.failed else EXIT_OK), status


class UnservedCheck:
    """`unserved_warning` in a thread started with the submit: its broadcast waits up to a second for replies,
    which the submit's own work then hides instead of adding."""

    def __init__(self, ledger: Any, model: str) -> None:
        self.ledger, self.model = ledger, model
        self.warning: str | None = None
        self._thread = threading.Thread(target=self._run, name="unserved-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.warning = unserved_warning(self.ledger, self.model)
        except Exception:  # noqa: BLE001 (a warning we cannot work out is no warning)
            log.debug("unserved check failed", exc_info=True)

    def result(self, timeout: float | None = None) -> str | None:
        self._thread.join(timeout)
        return self.warning


def after_submit(ledger: Any, check: UnservedCheck, *, queued: bool) -> None:
    """Record the absolute data directory in the ledger, and warn (stderr) when nobody serves the model."""
    from contract.ledger import record_meta

    with ledger.session() as session:
        record_meta(session, "data_dir", str(get_settings().data_path))
    warning = check.result() if queued else None  # nothing queued: nothing waits for a worker (nor for its answer)
    if warning:
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)


def wait_and_report(
    ledger: Any,
    job: int,
    *,
    timeout: float | None,
    fail_on_drift: bool,
    interval: float = 2.0,
    report_every: float = 30.0,
) -> int:
    """`submit --wait`: wait (with progress), print a one-line outcome on stderr, and return the exit code."""
    code, status = wait_for(ledger, job, timeout=timeout, interval=interval, report_every=report_every)
    outcome = (
        f"job {job}: {status.succeeded} succeeded, {status.blocked} blocked, {status.failed} failed, "
        f"{status.cancelled} cancelled"
    )
    if not status.finished:
        outcome += f", {status.remaining} unfinished after --timeout {timeout:g} s"
        if status.no_worker:
            outcome += f" ({status.no_worker})"
    err.print(outcome, highlight=False, markup=False, soft_wrap=True)
    if code == EXIT_OK and fail_on_drift:
        from producer.drift import drift_report

        settings = get_settings()
        with ledger.session() as session:
            report = drift_report(
                session,
                None,
                job,
                score_drop=settings.drift_score_drop,
                rate_rise=settings.drift_rate_rise,
                runs=settings.drift_runs,
            )
        if report is not None and report.flagged:
            err.print(f"drift: {'; '.join(report.reasons)}", highlight=False, markup=False, soft_wrap=True)
            return EXIT_DRIFT
    return code


@app.command()
def sheet(
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")],
    job: Annotated[Optional[int], typer.Option(help="The images of this job.")] = None,
    catalogue: Annotated[Optional[str], typer.Option(help="The current images of this catalogue.")] = None,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Link to the objects' URLs instead of embedding thumbnails (large jobs; presigned URLs expire).",
        ),
    ] = False,
    expires: Annotated[
        Optional[int],
        typer.Option(help="With --link on S3: seconds the URLs stay valid (default: PIXELMILL_S3_PRESIGN_EXPIRES)."),
    ] = None,
) -> None:
    """One self-contained HTML contact sheet: thumbnails, key, prompt, change, scores; blocked, failed and
    low-score images marked; sortable by score, 500 tiles per page, a summary with score histograms. A
    catalogue's sheet filters by the latest run's change and opens on the current entries (retired greyed out)."""
    from contract.storage import open_storage
    from producer.manifest import ManifestError
    from producer.sheet import write_sheet

    if (job is None) == (catalogue is None):
        fail("give exactly one of --job N or --catalogue NAME")
    settings = get_settings()
    ledger = _read_ledger()
    title = f"job {job}" if job is not None else f"catalogue {catalogue}"
    try:
        with ledger.session(readonly=True) as session, _written(output) as stream:
            if job is not None:
                from contract.schema import Job

                found = session.get(Job, job)
                if found is not None:
                    title = f"job {job} · {found.name}"
            count = write_sheet(
                session,
                stream,
                title=title,
                job=job,
                catalogue=catalogue,
                storage=open_storage(settings),
                link=link,
                expires=expires or settings.s3_presign_expires,
            )
    except ManifestError as exc:
        fail(str(exc))
    err.print(f"{count} tiles written to {output}", highlight=False)


@app.command()
def drift(
    catalogue: Annotated[str, typer.Option(help="Catalogue name (submit --catalogue).")],
    runs: Annotated[
        Optional[int], typer.Option(help="How many recent finished runs to show (default: PIXELMILL_DRIFT_RUNS).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, oldest run first.")] = False,
) -> None:
    """The last N runs of a catalogue side by side; a run whose median score fell, or whose blocked or failed
    rate rose, beyond PIXELMILL_DRIFT_SCORE_DROP / PIXELMILL_DRIFT_RATE_RISE against the median of the runs
    before it is flagged."""
    from producer.drift import DRIFT_SCORES, compare, finished_runs

    settings = get_settings()
    count = runs or settings.drift_runs
    with _read_ledger().session() as session:  # writes the run_stats cache
        shown = finished_runs(session, catalogue, limit=count + settings.drift_runs)
    if not shown:
        from producer.catalogue_runs import catalogue_names, unknown_catalogue

        with _read_ledger().session(readonly=True) as session:
            if catalogue not in catalogue_names(session):
                fail(unknown_catalogue(session, catalogue))
        fail(f"catalogue {catalogue!r} has no finished run; `pixelmill jobs` lists the jobs")
    verdicts = []
    for index, run in enumerate(shown):
        earlier = shown[max(0, index - settings.drift_runs) : index]
        reasons, _ = compare(run, earlier, score_drop=settings.drift_score_drop, rate_rise=settings.drift_rate_rise)
        verdicts.append((run, reasons))
    verdicts = verdicts[-count:]
    if as_json:
        print(
            json.dumps([{**run.as_dict(), "flagged": bool(reasons), "reasons": reasons} for run, reasons in verdicts])
        )
        return
    table = Table(
        "",
        *[f"job {run.job}\n{run.created[:16]}" for run, _ in verdicts],
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"catalogue {escape(catalogue)}: last {len(verdicts)} runs",
    )

    def cell(value: str, bad: bool) -> str:
        return f"[bold red]{value}[/]" if bad else value

    table.add_row("items", *[str(run.items) for run, _ in verdicts])
    names = sorted({name for run, _ in verdicts for name in run.scores})
    for name in names:
        table.add_row(
            f"{name} median",
            *[
                cell(
                    f"{run.scores[name]['median']:.4g}" if name in run.scores else "-",
                    any(r.startswith(f"median {name} ") for r in reasons),
                )
                for run, reasons in verdicts
            ],
        )
        if name in DRIFT_SCORES:
            table.add_row(
                "  p10 · p90",
                *[
                    f"{run.scores[name]['p10']:.4g} · {run.scores[name]['p90']:.4g}" if name in run.scores else "-"
                    for run, _ in verdicts
                ],
            )
    table.add_row(
        "blocked",
        *[
            cell(f"{run.blocked_rate:.1%}", any(r.startswith("blocked rate") for r in reasons))
            for run, reasons in verdicts
        ],
    )
    table.add_row(
        "failed",
        *[
            cell(f"{run.failed_rate:.1%}", any(r.startswith("failed rate") for r in reasons))
            for run, reasons in verdicts
        ],
    )
    table.add_row("GPU-seconds", *[f"{run.gpu_seconds:.1f}" for run, _ in verdicts])
    table.add_row("drift", *["[bold red]FLAGGED[/]" if reasons else "ok" for _, reasons in verdicts])
    out.print(table)
    for run, reasons in verdicts:
        for reason in reasons:
            out.print(f"job {run.job}: {escape(reason)}", highlight=False)
