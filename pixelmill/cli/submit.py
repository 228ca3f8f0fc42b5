"""`pixelmill submit`: a catalogue file (or stdin) and the submit options become one request (producer's
`make_request`, as in every door), checked as a whole, then previewed (`--dry-run`) or written and queued;
`--wait` follows the job to its end. A failed first submit leaves the data dir as it was (`FreshInstall`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from kombu.exceptions import OperationalError
from rich.markup import escape

from contract.broker import EmbeddedRedis
from contract.identity import model_problem
from contract.settings import Settings, get_settings
from pixelmill.cli.common import (
    build_hint,
    count,
    err,
    existing_ledger,
    fail,
    open_ledger,
    out,
    submitting_tenant,
    warn,
)
from pixelmill.cli.errors import describe
from pixelmill.cli.waiting import UnservedCheck, after_submit, wait_and_report
from producer.options import DEFAULTS, HELP, Options, declared

if TYPE_CHECKING:
    from producer.request import SubmitRequest

log = logging.getLogger(__name__)


# The submit options take their defaults and help from their one declaration (producer/options.py).
def submit(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="CATALOGUE", help="Catalogue .csv or .jsonl (optionally .gz), one product per row, or - for stdin."
        ),
    ],
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
    priority: Annotated[str, typer.Option(help=HELP["priority"])] = DEFAULTS.priority,
    mode: Annotated[str, typer.Option(help=HELP["mode"])] = DEFAULTS.mode,
    strength: Annotated[float, typer.Option(help=HELP["strength"])] = DEFAULTS.strength,
    lora: Annotated[Optional[str], typer.Option(help=HELP["lora"], metavar="PATH[:SCALE]")] = DEFAULTS.lora,
    lora_scale: Annotated[float, typer.Option(help=HELP["lora_scale"])] = DEFAULTS.lora_scale,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and preview; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Block until the job is finished; exit 0 (all succeeded or blocked), 3 (some failed), 4 "
            "(cancelled, or --timeout).",
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
    settings = get_settings()
    if (wait_timeout is not None or fail_on_drift) and not wait:
        fail("--timeout and --fail-on-drift apply to --wait only")
    tenant_id, roots = submitting_tenant()
    request = make_cli_request(settings, cli_options(ctx.params), source, tenant_id=tenant_id, input_roots=roots)
    check_model_and_source(request.model, source, dry_run=dry_run)
    shown = "stdin" if source == "-" else source
    if dry_run:
        return dry_run_and_report(settings, request, shown, as_json)
    ledger, unserved, result = submit_first_time(settings, request, shown)
    for warning in result.warnings:
        warn(warning)
    after_submit(ledger, unserved, queued=result.items > 0 and not result.existing)
    print_result(result, as_json)
    if wait:
        code = wait_and_report(
            ledger, result.job, tenant_id=request.tenant_id, timeout=wait_timeout, fail_on_drift=fail_on_drift
        )
        raise typer.Exit(code)


def dry_run_and_report(settings: Settings, request: SubmitRequest, shown: str, as_json: bool) -> None:
    """`--dry-run`: the preview printed; exit 2 where the real run would be refused."""
    with refusals(shown):  # reads the ledger if there is one, and writes nothing anywhere
        preview = dry_run_preview(settings, request)
    print_preview(preview, as_json)
    if preview.refused is not None:  # a nightly script's dry-run gate fails as the real run would
        err.print(f"error: the real run would be refused: {preview.refused}", highlight=False, markup=False)
        raise typer.Exit(2)


def cli_options(params: Mapping[str, Any]) -> Options:
    """The submit options from the command's parameters, which carry the declared names but for two: --column
    (repeated NAME=COLUMN) and --no-row-overrides (the declared `row_overrides`, negated)."""
    from producer.catalogue import UsageError, parse_column_option  # its regexes: only when a submit runs

    try:
        pairs = parse_column_option(params["column"] or [])
    except UsageError as exc:
        fail(str(exc))
    repeated = [n for i, (n, _) in enumerate(pairs) if n in dict(pairs[:i])]
    if repeated:  # a mapping holds each name once: a repeat is the CLI's to report
        fail(f"--column {repeated[0]}=... is given more than once")
    values = {d.name: params[d.name] for d in declared() if d.name in params}
    return Options(
        **values, columns=dict(pairs) if params["column"] else None, row_overrides=not params["no_row_overrides"]
    )


def make_cli_request(
    settings: Settings, options: Options, source: str, *, tenant_id: int, input_roots: Sequence[str] = ()
) -> SubmitRequest:
    """`make_request` as every door calls it, its problems printed as the CLI's --flag lines (exit 2)."""
    from producer.request import RequestProblems, make_request  # SQLAlchemy: only when a submit runs

    try:
        path = source if source == "-" else Path(source)
        return make_request(settings, options, source=path, tenant_id=tenant_id, flags=True, input_roots=input_roots)
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


def check_model_and_source(model_id: str, source: str, *, dry_run: bool) -> None:
    """Exit 2 for a model that is a file or a catalogue that is not there; a model no worker could load is
    refused as `submit_request` refuses it (every door), with how to build one; a dry run only warns."""
    if Path(model_id).is_file():
        fail(
            f"--model {model_id!r} is a file; a model is a diffusers directory (with model_index.json) "
            "or a hub id like org/name"
        )
    if source != "-" and not Path(source).is_file():
        fail(f"catalogue {source} not found (give a .csv/.jsonl file, optionally .gz, or - for stdin)")
    problem = model_problem(model_id, hub=False)
    if problem is not None:
        problem += build_hint(model_id)
        if not dry_run:
            fail(problem)
        warn(problem)


@contextlib.contextmanager
def refusals(shown: str) -> Iterator[None]:
    """A refused submission (bad rows, a usage error, an unusable file or data dir, no broker) as one message
    and exit 2; nothing was submitted."""
    from producer.catalogue import CatalogueError, UsageError  # its regexes: only when a submit runs

    try:
        yield
    except CatalogueError as exc:
        fail(f"{len(exc.problems)} problem(s) in {shown}; nothing was submitted:\n{exc}")
    except UsageError as exc:
        fail(str(exc))
    except OSError as exc:  # a missing block list, an unusable data dir: named by the shared handler
        fail(describe(exc) or str(exc))
    except OperationalError as exc:  # checked before anything is written
        fail(f"cannot reach the broker (PIXELMILL_BROKER_URL); nothing was submitted: {exc}")


def dry_run_preview(settings: Settings, request: SubmitRequest) -> Any:
    """The dry run's `Preview`, with its warnings on stderr."""
    from producer.planning import preview_request  # SQLAlchemy

    found = preview_request(settings, existing_ledger(), request)
    for warning in found.warnings:
        warn(warning)
    return found


def submit_first_time(settings: Settings, request: SubmitRequest, shown: str) -> tuple[Any, UnservedCheck, Any]:
    """Write and queue the request (the ledger, the no-worker check running beside it, the `Submission`); a
    failure undoes what a first submit created."""
    from producer.submit import submit_request  # SQLAlchemy

    fresh = FreshInstall(settings)
    try:
        with refusals(shown):
            ledger = fresh.ledger = open_ledger()
            unserved = fresh.unserved = UnservedCheck(ledger, request.model)
            return ledger, unserved, submit_request(settings, ledger, request)
    except BaseException:
        try:
            fresh.undo()
        except Exception:  # noqa: BLE001 (the submit's own error is the one to report)
            log.debug("undoing a failed first submit failed", exc_info=True)
        raise


def print_result(result: Any, as_json: bool) -> None:
    """What was submitted: one JSON object, or one sentence."""
    if as_json:
        print(json.dumps(result.as_dict()))
    elif result.existing:
        out.print(f"job {result.job} ({result.name}) was already submitted with this request id; nothing new written")
    else:
        out.print(
            f"job {result.job} ({result.name}): {count(result.items, 'item')} queued (the scheduler sends them to "
            f"the workers), {result.skipped} skipped (already done), "
            f"{result.blocked} blocked by the prompt filter"
            + (
                f"; catalogue {result.catalogue}: " + ", ".join(f"{n} {c}" for c, n in result.changes.items())
                if result.catalogue
                else ""
            )
        )


def print_preview(preview: Any, as_json: bool) -> None:
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


# What a first submit creates in the data dir: the only names `FreshInstall.undo` ever removes.
CREATED = frozenset(
    {"pixelmill.db", "pixelmill.db-wal", "pixelmill.db-shm", "pixelmill.db-journal", ".migrate.lock", "broker"}
)


class FreshInstall:
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
        self.broker: Any = EmbeddedRedis(self.path) if self.active and settings.embedded_broker else None
        self.broker_was_up = bool(self.existed and self.broker is not None and self.broker.is_running())
        self.ledger: Any = None
        self.unserved: Any = None

    def undo(self) -> None:
        if not self.active:
            return
        if self.unserved is not None:
            self.unserved.result(timeout=2.0)  # its broadcast may still be using the broker and the ledger
        if self.ledger is not None:
            if self.ledger_has_jobs():
                return  # committed before the failure (publishing is the reconciler's then): keep it
            self.ledger.close()
        if self.broker is not None and not self.broker_was_up:
            with contextlib.suppress(Exception):
                self.broker.stop()
        if not self.path.is_dir():
            return
        for name in (set(os.listdir(self.path)) & CREATED) - self.before:  # never what another program put there
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        if not self.existed:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only once empty

    def ledger_has_jobs(self) -> bool:
        """Whether the new ledger holds a job; True when that cannot be read (locked by another process?
        unknown is not empty: keep it all)."""
        from sqlalchemy import func, select  # SQLAlchemy: only on this failure path

        from contract.schema import Job

        try:
            with self.ledger.session(readonly=True) as session:
                return bool(session.scalar(select(func.count()).select_from(Job)))
        except Exception:  # noqa: BLE001
            return True
