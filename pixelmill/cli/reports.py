"""Looking at results: `pixelmill manifest` (a job's or catalogue's results for a shop system), `pixelmill
sheet` (an HTML contact sheet), `pixelmill catalogues` (the named catalogues) and `pixelmill drift` (a
catalogue's nightly runs side by side). Each reads an existing ledger and never creates one."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from contract.settings import get_settings
from contract.storage import open_storage
from pixelmill.cli.common import caller_tenant, err, fail, out, photo_reader, read_ledger

# producer.manifest, producer.sheet, producer.drift and producer.catalogue_runs pull in SQLAlchemy: imported by
# each command, so `pixelmill --help` starts without it.


@contextlib.contextmanager
def written(output: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
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
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    storage = open_storage(settings) if urls else None
    try:
        with ledger.session(readonly=True) as session:
            lifetime = expires or settings.s3_presign_expires
            rows = iter_manifest(
                session, tenant_id=tenant.id, job=job, catalogue=catalogue, storage=storage, urls=urls, expires=lifetime
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
                with written(output, binary=fmt == "parquet") as stream:
                    count = writer(chained(), stream)
    except ManifestError as exc:
        fail(str(exc))
    if output is not None:
        err.print(f"{count} rows written to {output}", highlight=False)


def catalogues(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False) -> None:
    """The named catalogues (submit --catalogue): runs, current and retired entries, the last run and its changes."""
    from producer.catalogue_runs import list_catalogues

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    with ledger.session(readonly=True) as session:
        found = list_catalogues(session, tenant.id)
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
    from contract.tenants import owned_job
    from producer.manifest import ManifestError
    from producer.sheet import write_sheet

    if (job is None) == (catalogue is None):
        fail("give exactly one of --job N or --catalogue NAME")
    settings = get_settings()
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    title = f"job {job}" if job is not None else f"catalogue {catalogue}"
    try:
        with ledger.session(readonly=True) as session, written(output) as stream:
            if job is not None:
                found = owned_job(session, tenant.id, job)
                if found is not None:
                    title = f"job {job} · {found.name}"
            count = write_sheet(
                session,
                stream,
                title=title,
                tenant_id=tenant.id,
                job=job,
                catalogue=catalogue,
                storage=open_storage(settings),
                link=link,
                expires=expires or settings.s3_presign_expires,
                read_input=photo_reader(settings),
            )
    except ManifestError as exc:
        fail(str(exc))
    err.print(f"{count} tiles written to {output}", highlight=False)


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
    from producer.drift import compare, finished_runs

    settings = get_settings()
    count = runs or settings.drift_runs
    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    with ledger.session() as session:  # writes the run_stats cache
        shown = finished_runs(session, tenant.id, catalogue, limit=count + settings.drift_runs)
    if not shown:
        no_finished_run(catalogue, tenant.id)
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
    out.print(drift_table(catalogue, verdicts))
    for run, reasons in verdicts:
        for reason in reasons:
            out.print(f"job {run.job}: {escape(reason)}", highlight=False)


def no_finished_run(catalogue: str, tenant_id: int) -> NoReturn:
    """Exit 2: no such catalogue of the tenant's (with the closest name), or one without a finished run."""
    from producer.catalogue_runs import catalogue_names, unknown_catalogue

    with read_ledger().session(readonly=True) as session:
        if catalogue not in catalogue_names(session, tenant_id):
            fail(unknown_catalogue(session, tenant_id, catalogue))
    fail(f"catalogue {catalogue!r} has no finished run; `pixelmill jobs` lists the jobs")


def drift_table(catalogue: str, verdicts: list[tuple[Any, list[str]]]) -> Table:
    """One column per run, one row per measure; what drifted in bold red."""
    from producer.drift import DRIFT_SCORES

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
    return table
