"""What every command group shares: the consoles (`out`, `err`: plain lines in a pipe), `fail` (a message and
an exit code), the ledger openers (`read_ledger` never creates a ledger) and a few sentence helpers. The group
modules import this, never the app module (pixelmill/cli/commands.py), so nothing imports round a circle."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from contract.settings import get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from contract.ledger import Ledger
    from contract.settings import Settings
    from contract.tenants import TenantInfo

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


def warn(message: str) -> None:
    """One `warning: ...` line on stderr, printed as written (no markup)."""
    err.print(f"warning: {message}", highlight=False, markup=False)


# The ledger modules pull in SQLAlchemy (about a second): imported inside these openers, so `pixelmill --help`
# and the commands that never touch the ledger start without it.


def open_ledger() -> Ledger:
    """The ledger, created and migrated if need be (submit, worker, the servers)."""
    from contract.ledger import Ledger

    return Ledger(get_settings())


def existing_ledger() -> Ledger | None:
    """The ledger if it exists at the current schema, else None; creates nothing."""
    from contract.ledger import Ledger, schema_is_current

    settings = get_settings()
    if settings.database_url is None and not (settings.data_path / "pixelmill.db").exists():
        return None
    ledger = Ledger(settings, migrate=False)
    return ledger if schema_is_current(ledger.engine) else None


def no_ledger_message() -> str | None:
    """Why there is no ledger to read (None: there is one), naming the path and the variables to set."""
    url = get_settings().resolved_database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return f"no ledger at {path} (set PIXELMILL_DATA_DIR or PIXELMILL_DATABASE_URL)"
    return None


def read_ledger() -> Ledger:
    """The existing ledger, for commands that read or act on jobs: never creates one (a cron job run from
    another directory must not silently start an empty ledger). Exits 2 naming the path it looked at."""
    problem = no_ledger_message()
    if problem:
        fail(problem)
    try:
        return open_ledger()
    except RuntimeError as exc:  # a server database at an older schema
        fail(str(exc))


def check_schema() -> None:
    """Refuse to start a long-running process on a ledger at an older schema (exit 2); the embedded SQLite
    ledger migrates itself here."""
    try:
        open_ledger().close()
    except RuntimeError as exc:
        fail(str(exc))


TENANT: str | None = None  # `pixelmill --tenant NAME ...`; None: PIXELMILL_TENANT


def caller_tenant(ledger: Ledger) -> TenantInfo:
    """The tenant this command acts as: `--tenant`, else PIXELMILL_TENANT (`default`). The CLI runs on the
    operator's host with the ledger's credentials, so it is trusted to name it. Exit 2 for an unknown or revoked
    one."""
    from contract.tenants import find_tenant

    name = TENANT if TENANT is not None else get_settings().tenant
    with ledger.session(readonly=True) as session:
        found = find_tenant(session, name)
    if found is None:
        source = "--tenant" if TENANT is not None else "PIXELMILL_TENANT"
        fail(f"no tenant {name!r} ({source}): unknown or revoked; `pixelmill tenants list` shows them")
    return found


def submitting_tenant() -> tuple[int, tuple[str, ...]]:
    """`caller_tenant`'s id and source roots (where its photo rows' inputs may be) for a submission, which may be
    the one that creates the ledger: with no ledger yet, only the tenant `default` (which migration 0011 makes,
    with its fixed id) can be named, and it has no roots yet."""
    from contract.tenants import DEFAULT_TENANT, DEFAULT_TENANT_ID

    ledger = existing_ledger()
    if ledger is None:
        name = TENANT if TENANT is not None else get_settings().tenant
        if name != DEFAULT_TENANT:
            fail(f"no tenant {name!r}: there is no ledger yet; `pixelmill tenants add {name}` makes one")
        return DEFAULT_TENANT_ID, ()
    try:
        tenant = caller_tenant(ledger)
        return tenant.id, tenant.source_roots
    finally:
        ledger.close()


def count(n: int, noun: str) -> str:
    """`1 item`, `2 items`: counts in sentences a person reads."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def build_hint(model: str) -> str:
    """For a local model path that does not exist: how to get one there (the operator at this terminal; the
    HTTP and intake doors answer a client, who cannot run it)."""
    path = Path(model).expanduser()
    if path.exists() or not model.startswith(("/", ".", "~")):
        return ""
    return (
        f"; to try pixelmill without a model, build the tiny random-weight test model there: "
        f"pixelmill model tiny {shlex.quote(str(path))}"
    )


def photo_reader(settings: Settings) -> Callable[[str], bytes]:
    """How the sheet reads a photo row's s3:// photo: the submit's reader, at most PIXELMILL_INPUT_MAX_BYTES."""
    from contract.storage import S3Reader

    reader = S3Reader(settings)
    return lambda location: reader.read(location, settings.input_max_bytes)
