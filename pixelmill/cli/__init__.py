"""The `pixelmill` command. Heavy modules are imported inside each command, so `pixelmill submit` and
`pixelmill status` never load torch."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich import box
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

from contract import logs
from contract.settings import SettingsError, get_settings
from pixelmill.cli import errors
from producer.options import DEFAULTS, HELP

if TYPE_CHECKING:
    from contract.ledger import Ledger

app = typer.Typer(
    help="Batch image generation: submit catalogues, run GPU workers, track jobs.",
    cls=errors.GuardedGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Ledger database.", no_args_is_help=True)
model_app = typer.Typer(help="Models.", no_args_is_help=True)
broker_app = typer.Typer(
    help="The embedded Redis broker (used when PIXELMILL_BROKER_URL is unset).", no_args_is_help=True
)
engine_app = typer.Typer(help="Diffusion engines: TensorRT builds in the engine cache.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(model_app, name="model")
app.add_typer(broker_app, name="broker")
app.add_typer(engine_app, name="engine")

PLAIN_WIDTH = 10_000  # lines in a pipe or a file are never wrapped (a path stays one line)


class PlainWhenPiped(Console):
    """Rich's layout on a terminal; in a pipe or a file, plain lines: no colour (rich's own rule, and `NO_COLOR`)
    and no hard wrap at the terminal's 80 columns, so `pixelmill model tiny-judges DIR > out.env` keeps each
    path on one line. A width set explicitly (a test's Console(width=80)) still wins; COLUMNS counts on a
    terminal only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None:
            self._width = None  # rich took COLUMNS at construction: leave it to `size`, which reads it live

    @property
    def size(self) -> ConsoleDimensions:
        dims = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is not None or self.is_terminal:
            return dims  # type: ignore[no-any-return]
        return ConsoleDimensions(PLAIN_WIDTH, dims.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = PlainWhenPiped()
err = PlainWhenPiped(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _ledger() -> Ledger:
    from contract.ledger import Ledger

    return Ledger(get_settings())


def _existing_ledger() -> Ledger | None:
    """The ledger if it exists at the current schema, else None; creates nothing."""
    from contract.ledger import Ledger, schema_is_current

    settings = get_settings()
    if settings.database_url is None and not (settings.data_path / "pixelmill.db").exists():
        return None
    ledger = Ledger(settings, migrate=False)
    return ledger if schema_is_current(ledger.engine) else None


def no_ledger_message() -> str | None:
    """Why there is no ledger to read (None: there is one), naming the path and the variables to set."""
    settings = get_settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return f"no ledger at {path} (set PIXELMILL_DATA_DIR or PIXELMILL_DATABASE_URL)"
    return None


def _read_ledger() -> Ledger:
    """The existing ledger, for commands that read or act on jobs: never creates one (a cron job run from
    another directory must not silently start an empty ledger). Exits 2 naming the path it looked at."""
    problem = no_ledger_message()
    if problem:
        fail(problem)
    try:
        return _ledger()
    except RuntimeError as exc:  # a server database at an older schema
        fail(str(exc))


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    logs.configure(logging.INFO if verbose else logging.WARNING)
    errors.VERBOSE = verbose


@app.command()
def submit(
    source: Annotated[
        str,
        typer.Argument(
            metavar="CATALOGUE", help="Catalogue .csv or .jsonl (optionally .gz), one product per row, or - for stdin."
        ),
    ],
    # The submit options: defaults and help from their one declaration (producer/options.py).
    template: Annotated[Optional[str], typer.Option(help=HELP["template"])] = DEFAULTS.template,
    negative: Annotated[str, typer.Option(help=HELP["negative"])] = DEFAULTS.negative,
    size: Annotated[str, typer.Option(help=HELP["size"])] = DEFAULTS.size,
    steps: Annotated[int, typer.Option(help=HELP["steps"])] = DEFAULTS.steps,
    guidance: Annotated[float, typer.Option(help=HELP["guidance"])] = DEFAULTS.guidance,
    images_per_item: Annotated[int, typer.Option(help=HELP["images_per_item"])] = DEFAULTS.images_per_item,
    seed: Annotated[int, typer.Option(help=HELP["seed"])] = DEFAULTS.seed,
    model: Annotated[Optional[str], typer.Option(help=HELP["model"])] = DEFAULTS.model,
    key: Annotated[str, typer.Option(help=HELP["key"])] = DEFAULTS.key,
    delimiter: Annotated[str, typer.Option(help=HELP["delimiter"])] = DEFAULTS.delimiter,
    encoding: Annotated[str, typer.Option(help=HELP["encoding"])] = DEFAULTS.encoding,
    column: Annotated[Optional[list[str]], typer.Option(metavar="NAME=COLUMN", help=HELP["columns"])] = None,
    no_row_overrides: Annotated[
        bool, typer.Option("--no-row-overrides", help=HELP["row_overrides"])
    ] = not DEFAULTS.row_overrides,
    name: Annotated[Optional[str], typer.Option(help=HELP["name"])] = DEFAULTS.name,
    catalogue: Annotated[Optional[str], typer.Option(help=HELP["catalogue"])] = DEFAULTS.catalogue,
    request_id: Annotated[Optional[str], typer.Option(help=HELP["request_id"])] = DEFAULTS.request_id,
    max_retire: Annotated[
        Optional[float], typer.Option("--max-retire", metavar="PERCENT", help=HELP["max_retire"])
    ] = DEFAULTS.max_retire,
    allow_retire: Annotated[bool, typer.Option("--allow-retire", help=HELP["allow_retire"])] = DEFAULTS.allow_retire,
    gate: Annotated[Optional[str], typer.Option(help=HELP["gate"])] = DEFAULTS.gate,
    gate_attempts: Annotated[Optional[int], typer.Option(help=HELP["gate_attempts"])] = DEFAULTS.gate_attempts,
    best_of: Annotated[Optional[int], typer.Option(help=HELP["best_of"])] = DEFAULTS.best_of,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and preview; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Block until the job is finished; exit 0 (all succeeded "
            "or blocked), 3 (some failed), 4 (cancelled, or --timeout).",
        ),
    ] = False,
    wait_timeout: Annotated[
        Optional[float], typer.Option("--timeout", help="With --wait: give up after S seconds (exit 4).")
    ] = None,
    fail_on_drift: Annotated[
        bool,
        typer.Option(
            "--fail-on-drift",
            help="With --wait: exit 5 when the finished run drifted from the catalogue's earlier runs.",
        ),
    ] = False,
) -> None:
    """Validate a catalogue and queue its items. Nothing is written if any row is bad."""
    from contract.identity import model_problem
    from producer.catalogue import CatalogueError, UsageError, parse_column_option
    from producer.frontdoor import Options, RequestProblems, make_request
    from producer.submit import preview_request, submit_request

    settings = get_settings()
    if (wait_timeout is not None or fail_on_drift) and not wait:
        fail("--timeout and --fail-on-drift apply to --wait only")
    try:
        pairs = parse_column_option(column or [])
    except UsageError as exc:
        fail(str(exc))
    repeated = [n for i, (n, _) in enumerate(pairs) if n in dict(pairs[:i])]
    if repeated:  # a mapping holds each name once: a repeat is the CLI's to report
        fail(f"--column {repeated[0]}=... is given more than once")
    options = Options(
        template=template,
        negative=negative,
        size=size,
        steps=steps,
        guidance=guidance,
        images_per_item=images_per_item,
        seed=seed,
        model=model,
        key=key,
        delimiter=delimiter,
        encoding=encoding,
        columns=dict(pairs) if column else None,
        row_overrides=not no_row_overrides,
        name=name,
        catalogue=catalogue,
        request_id=request_id,
        gate=gate,
        gate_attempts=gate_attempts,
        best_of=best_of,
        max_retire=max_retire,
        allow_retire=allow_retire,
    )
    try:
        request = make_request(settings, options, source=source if source == "-" else Path(source), flags=True)
    except RequestProblems as exc:
        hint = (  # the CLI's hint only: other doors answer a client, not the operator in this directory
            "; in the environment or in ./.env, where `pixelmill demo` writes its tiny checker's settings "
            "(run later commands from the demo's directory)"
            if settings.image_checker is None
            else ""
        )
        lines = [p + hint if p.startswith("PIXELMILL_IMAGE_CHECKER") else p for p in exc.problems]
        if len(lines) == 1:
            fail(f"{lines[0]}; nothing was submitted")
        fail(f"{len(lines)} problems; nothing was submitted:\n" + "\n".join(lines))
    model_id = request.model
    if Path(model_id).is_file():
        fail(
            f"--model {model_id!r} is a file; a model is a diffusers directory (with model_index.json) "
            "or a hub id like org/name"
        )
    if source != "-" and not Path(source).is_file():
        fail(f"catalogue {source} not found (give a .csv/.jsonl file, optionally .gz, or - for stdin)")
    problem = model_problem(model_id, hub=False)  # as submit_request refuses (every door); a dry run only warns
    if problem is not None:
        problem += _build_hint(model_id)
        if not dry_run:
            fail(problem)
        err.print(f"warning: {problem}", highlight=False, markup=False)
    from kombu.exceptions import OperationalError

    shown = "stdin" if source == "-" else source
    fresh = _FreshInstall(settings) if not dry_run else None
    try:
        try:
            if dry_run:  # reads the ledger if there is one, and writes nothing anywhere
                preview = preview_request(settings, _existing_ledger(), request)
            else:
                from pixelmill.cli.receipts import UnservedCheck

                ledger = fresh.ledger = _ledger()  # type: ignore[union-attr]
                unserved = fresh.unserved = UnservedCheck(ledger, model_id)  # type: ignore[union-attr]
                result = submit_request(settings, ledger, request)
        except CatalogueError as exc:
            fail(f"{len(exc.problems)} problem(s) in {shown}; nothing was submitted:\n{exc}")
        except UsageError as exc:
            fail(str(exc))
        except OSError as exc:  # a missing block list, an unusable data dir: named by the shared handler
            from pixelmill.cli.errors import describe

            fail(describe(exc) or str(exc))
        except OperationalError as exc:  # checked before anything is written
            fail(f"cannot reach the broker (PIXELMILL_BROKER_URL); nothing was submitted: {exc}")
    except BaseException:
        if fresh is not None:
            try:
                fresh.undo()
            except Exception:  # noqa: BLE001 (the submit's own error is the one to report)
                logging.getLogger(__name__).debug("undoing a failed first submit failed", exc_info=True)
        raise
    if dry_run:
        for warning in preview.warnings:
            err.print(f"warning: {warning}", highlight=False, markup=False)
        _print_preview(preview, as_json)
        if preview.refused is not None:  # a nightly script's dry-run gate fails as the real run would
            err.print(f"error: the real run would be refused: {preview.refused}", highlight=False, markup=False)
            raise typer.Exit(2)
        return
    for warning in result.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    from pixelmill.cli.receipts import after_submit, wait_and_report

    after_submit(ledger, unserved, queued=result.items > 0 and not result.existing)
    if as_json:
        print(json.dumps(result.as_dict()))
    elif result.existing:
        out.print(f"job {result.job} ({result.name}) was already submitted with this request id; nothing new written")
    else:
        out.print(
            f"job {result.job} ({result.name}): {_count(result.items, 'item')} queued in "
            f"{_count(result.messages, 'message')}, {result.skipped} skipped (already done), "
            f"{result.blocked} blocked by the prompt filter"
            + (
                f"; catalogue {result.catalogue}: " + ", ".join(f"{n} {c}" for c, n in result.changes.items())
                if result.catalogue
                else ""
            )
        )
    if wait:
        raise typer.Exit(wait_and_report(ledger, result.job, timeout=wait_timeout, fail_on_drift=fail_on_drift))


def _build_hint(model: str) -> str:
    """For a local model path that does not exist: how to get one there (the operator at this terminal; the
    HTTP and intake doors answer a client, who cannot run it)."""
    import shlex

    path = Path(model).expanduser()
    if path.exists() or not model.startswith(("/", ".", "~")):
        return ""
    return (
        f"; to try pixelmill without a model, build the tiny random-weight test model there: "
        f"pixelmill model tiny {shlex.quote(str(path))}"
    )


def _count(n: int, noun: str) -> str:
    """`1 item`, `2 items`: counts in sentences a person reads."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_preview(preview: Any, as_json: bool) -> None:
    """A dry run's report: one JSON object, or the first prompts, the counts and a catalogue's change preview."""
    if as_json:
        print(json.dumps(preview.as_dict()))
        return
    for item in preview.first:
        out.print(f"[dim]{escape(item.key)}#{item.variant}[/] {escape(item.prompt)}", highlight=False)
    out.print(
        f"{preview.rows} rows → {preview.items} items to generate, {preview.skipped} already done, "
        f"{preview.blocked} blocked by the prompt filter (dry run: nothing written)"
    )
    for item in preview.first_blocked:
        out.print(f"[dim]blocked {escape(item.key)}#{item.variant}[/] {item.blocked}", highlight=False)
    if preview.catalogue is not None:
        out.print(
            f"catalogue {escape(preview.catalogue)} ({preview.current} current entries): "
            + ", ".join(f"{n} {c}" for c, n in preview.changes.items()),
            highlight=False,
        )
        for change, keys in preview.first_keys.items():
            if keys:
                more = ", …" if preview.changes[change] > len(keys) else ""
                out.print(f"  {change}: {escape(', '.join(keys))}{more}", highlight=False)


# What a first submit creates in the data dir: the only names `_FreshInstall.undo` ever removes.
_CREATED = frozenset(
    {"pixelmill.db", "pixelmill.db-wal", "pixelmill.db-shm", "pixelmill.db-journal", ".migrate.lock", "broker"}
)


class _FreshInstall:
    """A submit into a data dir without a ledger: if it fails, what it created (the ledger, the embedded broker
    it started, the data dir itself, or the entries new in it) is removed again, so a failed first try leaves
    the directory as it was."""

    def __init__(self, settings: Any) -> None:
        self.path: Path = settings.data_path
        self.existed = self.path.exists()
        self.active = (
            settings.database_url is None
            and not (self.path / "pixelmill.db").exists()
            and (not self.existed or self.path.is_dir())
        )
        self.before = set(os.listdir(self.path)) if self.active and self.path.is_dir() else set()
        self.broker: Any = None
        if self.active and settings.embedded_broker:
            from contract.broker import EmbeddedRedis

            self.broker = EmbeddedRedis(self.path)
        self.broker_was_up = bool(self.existed and self.broker is not None and self.broker.is_running())
        self.ledger: Any = None
        self.unserved: Any = None

    def undo(self) -> None:
        import shutil

        from sqlalchemy import func, select

        from contract.schema import Job

        if not self.active:
            return
        if self.unserved is not None:
            self.unserved.result(timeout=2.0)  # its broadcast may still be using the broker and the ledger
        if self.ledger is not None:
            try:
                with self.ledger.session(readonly=True) as session:
                    if session.scalar(select(func.count()).select_from(Job)):
                        return  # committed before the failure (publishing is the reconciler's then): keep it
            except Exception:  # noqa: BLE001 (locked by another process? unknown is not empty: keep it all)
                return
            self.ledger.close()
        if self.broker is not None and not self.broker_was_up:
            with contextlib.suppress(Exception):
                self.broker.stop()
        if not self.path.is_dir():
            return
        for name in (set(os.listdir(self.path)) & _CREATED) - self.before:  # never what another program put there
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        if not self.existed:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only once empty


@app.command()
def status(
    job: Annotated[int, typer.Argument(help="Job id.")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Show a progress bar until the job ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 1.0,
) -> None:
    """Counts per state, images/s and ETA for one job."""
    from producer.status import UnknownJob, job_status

    if not interval > 0:
        raise typer.BadParameter(f"must be greater than 0, got {interval:g}", param_hint="'--interval'")

    ledger = _read_ledger()
    try:
        with ledger.session(readonly=True) as session:
            current = job_status(session, job, stale_after=get_settings().worker_stale_after)
    except UnknownJob as exc:
        fail(str(exc))
    if watch and not current.finished:
        current = watch_job(ledger, job, interval)
    if as_json:
        print(json.dumps(current.as_dict()))
    else:
        out.print(_status_detail(current))


def watch_job(
    ledger: Any,
    job: int,
    interval: float = 1.0,
    timeout: float | None = None,
    alive: Any = None,
    *,
    report_every: float = 30.0,
) -> Any:
    """Follow the job until it has nothing left to do (or `timeout` s pass, or `alive()` turns false): a
    progress bar on a terminal; in a pipe or a file, one plain `progress_line` now and every `report_every` s."""
    from producer.status import job_status

    started = time.monotonic()
    view = _WatchView(err, job) if err.is_terminal else None
    reported: float | None = None
    try:
        while True:
            with ledger.session(readonly=True) as session:
                current = job_status(session, job, stale_after=get_settings().worker_stale_after)
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


def _duration(seconds: float) -> str:
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
        parts.append(f"ETA {_duration(s.eta_s)}")
    return ", ".join(parts) + (f"; {s.no_worker}" if s.no_worker else "")


class _WatchView:
    """The terminal's view of `watch_job`: one line that fits 80 columns (the bar takes what the job number,
    counts and rate leave), and below it, in full and wrapped, the no-worker line when there is one."""

    def __init__(self, console: Console, job: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Column
        from rich.text import Text

        class WithNote(Progress):
            note: str | None = None

            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                if self.note:
                    yield Text(self.note, style="yellow")

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
        eta = f" ETA {_duration(current.eta_s)}" if current.eta_s else ""
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


def _status_table(rows: list[Any]) -> Table:
    """`jobs`: the name keeps what it needs at 80 columns (up to 40 characters); the catalogue is cut with an
    ellipsis rather than the name; blocked, cancelled and skipped columns appear only when a job has some;
    no-worker lines come after the table (`_no_worker_lines`), in full."""
    from rich.table import Column

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


def _no_worker_lines(rows: list[Any]) -> list[str]:
    return [f"job {s.job}: {s.no_worker}" for s in rows if s.no_worker]


def _status_detail(s: Any) -> Table:
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


@app.command()
def jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    limit: Annotated[int, typer.Option(help="Most recent N jobs.", min=1)] = 50,
) -> None:
    """List jobs, newest first."""
    from producer.status import list_jobs

    with _read_ledger().session(readonly=True) as session:
        rows = list_jobs(session, limit, stale_after=get_settings().worker_stale_after)
    if as_json:
        print(json.dumps([r.as_dict() for r in rows]))
    else:
        out.print(_status_table(rows))
        for line in _no_worker_lines(rows):
            out.print(line, style="yellow", highlight=False, markup=False)


@app.command()
def worker(
    model: Annotated[
        Optional[str],
        typer.Option(
            help="Model this worker loads and whose queue it consumes (default: PIXELMILL_MODEL, else the tiny model)."
        ),
    ] = None,
    gpus: Annotated[
        Optional[str],
        typer.Option(
            help="'all' or indices like 0,1,3: one worker process per "
            "GPU, pinned with CUDA_VISIBLE_DEVICES, named gpu<N>@host."
        ),
    ] = None,
    hostname: Annotated[
        str,
        typer.Option(
            "--hostname",
            "-n",
            help="Celery node name; keep it stable across restarts so a restarted worker reclaims its items.",
        ),
    ] = "pixelmill@%h",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    engine: Annotated[
        Optional[str],
        typer.Option(
            help="auto|torch|tensorrt (default: PIXELMILL_ENGINE, auto): "
            "auto runs TensorRT when the engine cache has a build for "
            "this model and GPU, else torch."
        ),
    ] = None,
) -> None:
    """Run a worker: one prefork process that loads its model once, after the fork."""
    import importlib.util
    import os

    missing = [m for m in ("torch", "diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"a worker needs {', '.join(missing)}: pip install 'pixelmill[worker]' (torch first, for your CUDA)")
    from contract.params import ENGINE_NAMES

    if engine is not None and engine not in ENGINE_NAMES:
        fail(f"--engine must be one of {', '.join(ENGINE_NAMES)}, got {engine!r}")
    # Children (worker.app, and the per-GPU workers of --gpus) read these from the environment.
    for variable, value in (("PIXELMILL_MODEL", model), ("PIXELMILL_ENGINE", engine)):
        if value is not None:
            os.environ[variable] = value
            get_settings.cache_clear()
    settings = get_settings()
    try:  # refuse to start on a ledger at an older schema (the embedded SQLite one migrates itself here)
        _ledger().close()
    except RuntimeError as exc:
        fail(str(exc))
    from worker.provenance import ProvenanceError, check_signing

    try:  # provenance: refuse to start with a C2PA certificate/key that cannot sign (rather than failing items)
        check_signing(settings)
    except ProvenanceError as exc:
        fail(str(exc))
    if gpus is not None:
        from worker.gpus import GpuError, Supervisor, discover_gpus, select_gpus, worker_command

        try:
            selected = select_gpus(gpus, discover_gpus())
        except GpuError as exc:
            fail(str(exc))
        raise typer.Exit(Supervisor(selected, lambda gpu: worker_command(gpu, loglevel=loglevel)).run())

    from contract.identity import model_problem, resolve_model
    from contract.queue import queue_for

    served = resolve_model(settings.default_model)
    problem = model_problem(served)
    if problem:  # a file, a typo, an unknown hub id: say so now rather than serve a queue it cannot run
        fail(f"{problem} (--model / PIXELMILL_MODEL){_build_hint(served)}")
    from worker.app import app as celery_app

    queue = queue_for(served)
    from contract.schema import utcnow

    began = utcnow()
    try:
        celery_app.worker_main(
            [
                "worker",
                f"--loglevel={loglevel}",
                f"--hostname={hostname}",
                "--pool=prefork",
                "--concurrency=1",
                f"--queues={queue}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    else:
        code = 0
    from pixelmill.cli.receipts import load_failure

    failure = load_failure(hostname, queue, since=began)
    if failure:  # the child stopped the worker: it never served the queue
        fail(f"worker stopped: {failure}", 1)
    raise typer.Exit(code)


@app.command()
def ping(
    node: Annotated[
        Optional[str], typer.Option(help="Worker node name (%h: this host's name); default: any worker.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for replies.", min=0.1)] = 5.0,
) -> None:
    """Ask workers to answer through the broker; exits 1 if none does (a container health check)."""
    from celery.utils.nodenames import host_format

    from contract.queue import make_celery

    destination = [host_format(node)] if node else None
    celery_app = make_celery(get_settings())
    errors.check_broker(celery_app)  # an unreachable broker: exit 2 naming it, not minutes of retries
    replies = celery_app.control.ping(destination=destination, timeout=timeout)
    if not replies:
        fail(f"no answer from {destination[0] if destination else 'any worker'} within {timeout:g} s", 1)
    for reply in replies:
        out.print(*reply, highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 5555,
) -> None:
    """Celery's Flower UI on the configured broker; further options go to Flower (e.g. --basic-auth)."""
    import importlib.util

    if importlib.util.find_spec("flower") is None:
        fail("Flower is not installed: pip install 'pixelmill[flower]'")
    from contract.queue import make_celery

    celery_app = make_celery(get_settings(), main="pixelmill.flower")
    celery_app.start(["flower", f"--address={address}", f"--port={port}", *ctx.args])


@app.command()
def review(
    target: Annotated[
        str, typer.Argument(metavar="JOB | approve", help="A job id to list its blocked items, or `approve`.")
    ],
    item: Annotated[
        Optional[int], typer.Argument(metavar="[ITEM]", help="With approve: the item id to publish (as listed).")
    ] = None,
    note: Annotated[
        Optional[str],
        typer.Option(
            help="With approve: why this image is fine (recorded beside "
            "the approver, who is the account running the command)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """`review JOB` lists blocked items with reasons; `review approve ITEM` publishes a false positive."""
    from producer.review import ReviewError, approve, blocked_items

    ledger = _read_ledger()
    try:
        if target == "approve":
            if item is None:
                fail("review approve needs an ITEM id; `pixelmill review JOB` lists them")
            from contract.storage import open_storage
            from producer.review import os_identity

            who = os_identity()
            with ledger.session() as session:
                key = approve(session, open_storage(get_settings()), item, by=who, note=note)
            if as_json:
                print(json.dumps({"item": item, "published": key, "approved_by": who}))
            else:
                out.print(f"item {item} approved by {who}: published at {key}", highlight=False)
            return
        if not target.isdigit() or item is not None:
            fail(f"usage: pixelmill review JOB | pixelmill review approve ITEM (got {target!r})")
        with ledger.session(readonly=True) as session:
            rows = blocked_items(session, int(target))
    except ReviewError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table("item", "key", "stage", "reason", "quarantined", "prompt", box=box.SIMPLE_HEAD, pad_edge=False)
    for row in rows:
        reason = row.reason
        why = (
            f"{reason.get('category')}: {reason.get('term')}"
            if row.stage == "prompt"
            else f"{reason.get('checker')}: "
            + ", ".join(f"{c} {row.safety['scores'][c]:+.3f}" if row.safety else c for c in reason.get("flagged", []))
        )
        table.add_row(
            str(row.item), f"{row.key}#{row.variant}", row.stage, why, row.quarantined or "-", row.prompt[:60]
        )
    out.print(table)
    out.print(f"{len(rows)} blocked; publish a false positive with `pixelmill review approve ITEM`")


@app.command()
def url(
    job: Annotated[int, typer.Argument(help="Job id.")],
    item: Annotated[str, typer.Argument(help="Item key (the catalogue's key column).")],
    variant: Annotated[int, typer.Option(help="Variant number.", min=0)] = 0,
    expires: Annotated[
        Optional[int],
        typer.Option(
            help="Seconds a presigned URL stays valid, 1 to 604800 (default: PIXELMILL_S3_PRESIGN_EXPIRES).",
            min=1,
            max=7 * 24 * 3600,
        ),
    ] = None,
) -> None:
    """Print a URL for one stored image: presigned on S3, a file URI locally."""
    from sqlalchemy import select

    from contract.schema import Image, Item
    from contract.storage import open_storage

    settings = get_settings()
    with _read_ledger().session(readonly=True) as session:
        key = session.scalar(
            select(Image.storage_key)
            .join(Item)
            .where(Item.job_id == job, Item.item_key == item, Item.variant == variant)
        )
    if key is None:
        fail(f"no stored image for job {job}, item {item!r}, variant {variant}")
    print(open_storage(settings).locate(key, expires or settings.s3_presign_expires))


@app.command()
def reconcile(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Re-publish items whose lease expired or whose message was lost (workers also do this periodically)."""
    from dataclasses import asdict

    from contract.queue import make_celery
    from worker.reconciler import reconcile as run

    settings = get_settings()
    celery_app = make_celery(settings)
    errors.check_broker(celery_app)
    report = run(_ledger(), celery_app, settings)
    if as_json:
        print(json.dumps(asdict(report)))
    else:
        out.print(f"re-queued {report.requeued} items in {report.messages} messages; failed {report.failed}")


@app.command()
def demo(
    catalogue: Annotated[Optional[Path], typer.Option(help="Catalogue (default: examples/catalogue.csv).")] = None,
    size: Annotated[str, typer.Option(help="Image size.")] = "128x128",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 10,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 540,
) -> None:
    """From nothing: build the tiny model, start a worker, submit the sample catalogue, report, stop."""
    from pixelmill.cli.demo import run_demo
    from producer.options import Options, option_problems

    # Before anything starts (a bad option must not leave a worker or a broker behind), as `submit` checks them.
    for name, problem in option_problems(Options(size=size, steps=steps)):
        raise typer.BadParameter(problem, param_hint=f"'--{name}'")
    if not timeout > 0:
        raise typer.BadParameter(f"must be greater than 0, got {timeout:g}", param_hint="'--timeout'")
    if catalogue is not None and not catalogue.is_file():
        raise typer.BadParameter(f"{catalogue} is not a file", param_hint="'--catalogue'")
    code = run_demo(
        get_settings(), catalogue=catalogue, size=size, steps=steps, timeout=timeout, console=out, progress=watch_job
    )
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the ledger database to the latest schema."""
    from alembic.script import ScriptDirectory

    from contract.ledger import alembic_config, make_engine, upgrade

    scripts = ScriptDirectory.from_config(alembic_config())
    if revision not in ("head", "heads"):
        try:
            found = scripts.get_revision(revision)
        except Exception:
            found = None
        if found is None:
            known = ", ".join(sorted(r.revision for r in scripts.walk_revisions()))
            raise typer.BadParameter(f"no migration {revision!r}; known: {known} or head", param_hint="'REVISION'")
    engine = make_engine(get_settings())
    upgrade(engine, revision)
    out.print(f"ledger at {engine.url.render_as_string(hide_password=True)} upgraded to {revision}")


@model_app.command("tiny")
def model_tiny(
    directory: Annotated[Path, typer.Argument(help="Where to write the pipeline.")],
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Write a small random-weight Stable Diffusion pipeline (diffusers format) for demos and tests."""
    from worker.engine.tiny import build_tiny_pipeline

    if directory.exists() and not directory.is_dir():
        raise typer.BadParameter(f"{directory} exists and is not a directory", param_hint="'DIRECTORY'")
    path = build_tiny_pipeline(directory, seed=seed)
    out.print(f"tiny Stable Diffusion pipeline written to {path}")


@model_app.command("tiny-judges")
def model_tiny_judges(
    directory: Annotated[Path, typer.Argument(help="Where to write the models.")],
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Write a tiny random safety checker, CLIP model and aesthetic head for demos and tests."""
    from worker.tiny_image_checks import build_tiny_judges

    if directory.exists() and not directory.is_dir():
        raise typer.BadParameter(f"{directory} exists and is not a directory", param_hint="'DIRECTORY'")
    for setting, path in build_tiny_judges(directory, seed=seed).items():
        out.print(f"PIXELMILL_{setting.upper()}={path}", highlight=False, markup=False)


@engine_app.command("build")
def engine_build(
    model: Annotated[
        Optional[str], typer.Option(help="Diffusers model directory (default: PIXELMILL_MODEL, else the tiny model).")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="UNet precision: int8 (calibrated), fp8 (Hopper/Ada) or fp16.")
    ] = "int8",
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT the engines are built for (static).")] = "512x512",
    batch: Annotated[str, typer.Option(help="Images per request the engines accept, MIN-MAX.")] = "1-16",
    calib_prompts: Annotated[
        Optional[Path],
        typer.Option(
            help="Calibration prompts, one per line (int8/fp8; NVIDIA uses 512-1024 for SD1.5, 32-64 for SDXL)."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps during calibration: the ones you serve.")] = 30,
    guidance: Annotated[float, typer.Option(help="Guidance scale during calibration.")] = 7.5,
    quant_level: Annotated[float, typer.Option(help="INT8 linears: 1 none, 2 feed-forward, 2.5 + q/k/v, 3 all.")] = 2.5,
    alpha: Annotated[float, typer.Option(help="SmoothQuant alpha (NVIDIA: 1.0 SD1.5, 0.8 SDXL).")] = 1.0,
    onnx_only: Annotated[bool, typer.Option("--onnx-only", help="Stop after the ONNX export.")] = False,
    onnx_dir: Annotated[
        Optional[Path],
        typer.Option("--out", help="Directory for the ONNX files (default: beside the engines in the cache)."),
    ] = None,
) -> None:
    """Calibrate, export ONNX, build TensorRT engines and store them in PIXELMILL_ENGINE_CACHE.

    Without TensorRT or a GPU the build stops after the ONNX export and exits with code 3."""
    from contract.params import parse_size
    from worker.engine.build import build, parse_batches, read_prompts
    from worker.engine.cache import EngineCache
    from worker.engine.trt_build import TensorRTMissing

    settings = get_settings()
    try:
        width, height = parse_size(size)
        batch_min, batch_max = parse_batches(batch)
    except ValueError as exc:
        fail(str(exc))
    prompts: list[str] = []
    if precision in ("int8", "fp8"):
        if calib_prompts is None:
            fail(f"--precision {precision} needs --calib-prompts FILE (real prompts, one per line)")
        prompts = read_prompts(calib_prompts)
        if not prompts:
            fail(f"{calib_prompts} has no prompts")
    model_path = model or settings.default_model
    started = time.monotonic()
    try:
        result = build(
            model_path,
            precision=precision,
            width=width,
            height=height,
            batch_min=batch_min,
            batch_max=batch_max,
            prompts=prompts,
            cache=EngineCache(settings.engine_cache_path),
            steps=steps,
            guidance=guidance,
            level=quant_level,
            alpha=alpha,
            onnx_only=onnx_only,
            work_dir=onnx_dir,
        )
    except TensorRTMissing as exc:
        fail(str(exc), 3)
    except ValueError as exc:
        fail(str(exc))
    took = time.monotonic() - started
    if result.manifest is None:
        out.print(f"ONNX ({precision}) written to {result.onnx_dir} in {took:.1f} s", highlight=False)
    else:
        key = result.manifest.key
        out.print(
            f"engines {result.manifest.short_id} ({precision}, {size}, batch {batch}, {key.gpu}, "
            f"TensorRT {key.trt_version}) written to {result.final_dir} in {took:.1f} s",
            highlight=False,
        )


@broker_app.command("start")
def broker_start() -> None:
    """Start the embedded Redis (processes also start it on first use)."""
    from contract.broker import EmbeddedRedis

    out.print(EmbeddedRedis(get_settings().data_path).ensure_running())


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the embedded Redis; queued messages persist in its append-only file."""
    from contract.broker import EmbeddedRedis

    stopped = EmbeddedRedis(get_settings().data_path).stop()
    out.print("stopped" if stopped else "not running")


@broker_app.command("status")
def broker_status() -> None:
    """Whether the embedded Redis answers on its socket; exits 1 when it does not (scripts can test it)."""
    from contract.broker import EmbeddedRedis

    broker = EmbeddedRedis(get_settings().data_path)
    running = broker.is_running()
    out.print(f"{broker.url}: {'running' if running else 'not running'}", highlight=False)
    if not running:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    finally:
        # The interpreter's last garbage collections walk every object SQLAlchemy, pydantic, Celery and rich
        # made at import: 0.25 s at the end of every command. Frozen objects are skipped; everything is still
        # freed by reference counting, and files and connections are closed by their `with` blocks.
        gc.freeze()


from pixelmill.cli import frontdoor as _frontdoor  # noqa: E402,F401  (intake, serve, events)
from pixelmill.cli import receipts as _receipts  # noqa: E402,F401  (cancel, retry, items, manifest, sheet, drift)
