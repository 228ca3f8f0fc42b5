"""Errors, not tracebacks: every user- or environment-caused failure of a command becomes exit code 2 and one
or two lines naming the input to fix (option, `PIXELMILL_*` variable, URL with its secrets masked).

`GuardedGroup` is the `pixelmill` command group: its `invoke` maps known exception classes to messages
(`describe`), so the CLI behaves the same under `main()` and under Typer's CliRunner; `-v` adds the traceback.
Unknown exceptions (bugs) still raise with their traceback. It also refuses NUL bytes in arguments and
warns about unknown `PIXELMILL_*` variables with a did-you-mean.
"""

from __future__ import annotations

import difflib
import inspect
import io
import os
import traceback
from pathlib import Path
from typing import Any

import typer
from dotenv.parser import parse_stream
from typer._click import ClickException  # typer vendors its click
from typer.core import TyperGroup

from contract.broker import BrokerError
from contract.faults import NAME_MAX, mask
from contract.host_files import HostFileError
from contract.settings import ENV_PREFIX, Settings, SettingsError, env_file, get_settings

__all__ = ["NAME_MAX", "GuardedGroup", "check_broker", "describe", "unknown_in_env_file", "unknown_variables"]

VERBOSE = False  # set by `pixelmill -v`

# PIXELMILL_* variables read outside Settings: the catalogue caps, the GPU supervisor, docker.
EXTRA_VARIABLES = frozenset(
    {
        "PIXELMILL_ENV_FILE",
        "PIXELMILL_CATALOGUE_CELL_BYTES",
        "PIXELMILL_CATALOGUE_ROW_BYTES",
        "PIXELMILL_CATALOGUE_COLUMNS",
        "PIXELMILL_PROMPT_BYTES",
        "PIXELMILL_JOB_MAX_ITEMS",
        "PIXELMILL_CATALOGUE_MAX_PROBLEMS",
        "PIXELMILL_PROMPT_TOKENS",
        "PIXELMILL_FAKE_GPUS",
        "PIXELMILL_GPU",
        "PIXELMILL_IMAGE_TAG",
        "PIXELMILL_MODELS_DIR",
        "PIXELMILL_WORK_DIR",
    }
)


def known_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | EXTRA_VARIABLES


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """One warning per `PIXELMILL_*` variable that nothing reads (a typo is otherwise silently ignored)."""
    known = known_variables()
    warnings = []
    for name in sorted(environ if environ is not None else os.environ):
        if name.startswith("PIXELMILL_") and name not in known:
            warnings.append(f"warning: unknown variable {name} is ignored{_did_you_mean(name, known)}")
    return warnings


def _did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def unknown_in_env_file(path: Path | None = None) -> list[str]:
    """The same warnings for the `.env` file the settings read (pydantic-settings ignores unknown keys there,
    case-insensitively), each naming the file and line."""
    path = path or env_file()
    if path is None:
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    known = known_variables()
    warnings = []
    for binding in parse_stream(io.StringIO(text)):
        name = (binding.key or "").upper()
        if name.startswith("PIXELMILL_") and name not in known:
            raw = binding.original.string
            line = binding.original.line + raw[: len(raw) - len(raw.lstrip())].count("\n")
            warnings.append(
                f"warning: {path}:{line}: unknown variable {binding.key} is ignored{_did_you_mean(name, known)}"
            )
    return warnings


def _settings() -> Any:
    try:
        return get_settings()
    except SettingsError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str | None:
    """The message for a user- or environment-caused error, or None for anything else (a bug)."""
    if isinstance(exc, (SettingsError, BrokerError, HostFileError)):
        return str(exc)
    module, name = type(exc).__module__ or "", type(exc).__name__
    settings = _settings()
    if module.startswith("sqlalchemy"):
        url = settings.resolved_database_url if settings else "?"
        if name in ("ArgumentError", "NoSuchModuleError"):
            return f"PIXELMILL_DATABASE_URL={url!r} is not usable: {_first_line(exc)}"
        if name in ("OperationalError", "InterfaceError", "DBAPIError", "ProgrammingError", "DatabaseError"):
            if settings is not None and settings.database_url is None:
                return (
                    f"cannot open the ledger under PIXELMILL_DATA_DIR={str(settings.data_path)!r}: "
                    f"{_first_line(exc)}; make it a writable directory"
                )
            return (
                f"cannot use the ledger database PIXELMILL_DATABASE_URL={url!r}: {_first_line(exc)}; "
                "check the URL, that the server is up, and `pixelmill db upgrade`"
            )
        if name == "DataError":
            return f"a value does not fit the ledger: {_first_line(exc)}"
    if module.startswith("alembic") and name == "CommandError":
        return f"db upgrade: {exc}; run `pixelmill db upgrade` without a revision to migrate to the latest"
    if module.startswith(("kombu", "redis", "amqp")) or isinstance(exc, ConnectionError):
        where = settings.broker_url or "the embedded Redis" if settings else "?"
        return (
            f"cannot reach the broker (PIXELMILL_BROKER_URL={where!r}): {_first_line(exc)}; check the URL "
            "and that the broker is up"
        )
    if isinstance(exc, OSError):
        target = str(exc.filename) if exc.filename is not None else ""
        what = exc.strerror or str(exc)
        if (
            settings is not None
            and target
            and (
                target == str(settings.data_path)
                or target.startswith(str(settings.data_path) + os.sep)
                or str(settings.data_path).startswith(target + os.sep)
            )
        ):
            return (
                f"PIXELMILL_DATA_DIR={str(settings.data_path)!r} is not usable: {what} ({target}); "
                "point it at a writable directory"
            )
        return f"{target}: {what}" if target else what
    if isinstance(exc, (ValueError, RuntimeError)) and "PIXELMILL_" in str(exc):
        return str(exc)
    return None


class CommandGroup(TyperGroup):
    """A group whose command list shows each command's first paragraph as one line of prose: typer's rich help
    keeps the docstring's own line breaks there, which cut the summaries mid-sentence."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and command.short_help is None and command.help:
            command.short_help = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
        return command


class GuardedGroup(CommandGroup):
    """The top `pixelmill` group: known errors become exit 2 with a message (see module docstring)."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        for arg in [*getattr(ctx, "_protected_args", []), *ctx.args]:
            if "\x00" in arg:
                typer.echo(f"error: argument {mask(arg)[:80]!r} contains a NUL byte; remove it", err=True)
                raise typer.Exit(2)
        for warning in [*unknown_variables(), *unknown_in_env_file()]:
            typer.echo(warning, err=True)
        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`| head`): click's main exits 1 without a word
            raise
        except Exception as exc:
            message = describe(exc)
            if message is None:
                raise
            if VERBOSE:
                typer.echo(mask("".join(traceback.format_exception(exc))), err=True)
            typer.echo(f"error: {mask(message)}", err=True)
            raise typer.Exit(2) from None


def check_broker(app: Any, timeout: float = 5.0) -> None:
    """Connect to the broker once, raising kombu's OperationalError if it does not answer within `timeout`
    (Celery's own calls would retry for minutes)."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
