"""The `pixelmill` command: the app, every command registered here in the order `pixelmill --help` lists them,
and `main`. The commands live in one module per group and know nothing of this one:

    submit.py         submit (with --dry-run's preview and --wait, waiting.py)
    status.py         status, jobs, backlog
    ops.py            worker, ping, flower, review, url, reconcile
    setup_commands.py demo; db upgrade, model tiny|tiny-judges, broker start|stop|status, engine build
    servers.py        intake, serve, events
    job_control.py    cancel, retry, pause, resume, items
    reports.py        manifest, catalogues, sheet, drift
    tenants.py        tenants add|set|list|rotate|revoke

Heavy modules (SQLAlchemy, Celery, torch) are imported inside the commands that use them, so `pixelmill --help`,
`pixelmill submit` and `pixelmill status` never load torch."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from contract import logs
from contract.settings import SettingsError
from pixelmill.cli import (
    common,
    compare,
    errors,
    job_control,
    ops,
    reports,
    servers,
    setup_commands,
    status,
    submit,
    tenants,
)
from pixelmill.cli.common import err

app = typer.Typer(
    help="Batch image generation: submit catalogues, run GPU workers, track jobs.",
    cls=errors.GuardedGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    tenant: Annotated[
        Optional[str],
        typer.Option("--tenant", help="Act as this tenant (default: PIXELMILL_TENANT, `default`).", show_default=False),
    ] = None,
) -> None:
    logs.configure(logging.INFO if verbose else logging.WARNING)
    errors.VERBOSE = verbose
    common.TENANT = tenant


def group(name: str, help: str) -> typer.Typer:  # noqa: A002 (typer's word)
    """A command group (`pixelmill db ...`), added to the app."""
    sub = typer.Typer(help=help, no_args_is_help=True, cls=errors.CommandGroup)
    app.add_typer(sub, name=name)
    return sub


db_app = group("db", "Ledger database.")
model_app = group("model", "Models.")
broker_app = group("broker", "The embedded Redis broker (used when PIXELMILL_BROKER_URL is unset).")
engine_app = group("engine", "Diffusion engines: TensorRT builds in the engine cache.")
tenants_app = group("tenants", "Tenants: who owns jobs, and their API tokens.")

app.command()(submit.submit)
app.command()(status.status)
app.command()(status.jobs)
app.command()(status.backlog)
app.command()(ops.worker)
app.command()(ops.ping)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(ops.flower)
app.command()(ops.review)
app.command()(ops.url)
app.command()(ops.reconcile)
app.command()(setup_commands.demo)
app.command()(servers.intake)
app.command()(servers.serve)
app.command()(servers.events)
app.command()(job_control.cancel)
app.command()(job_control.retry)
app.command()(job_control.pause)
app.command()(job_control.resume)
app.command()(job_control.items)
app.command()(reports.manifest)
app.command()(reports.catalogues)
app.command()(reports.sheet)
app.command()(reports.drift)
app.command()(compare.compare)

SUBCOMMANDS: dict[typer.Typer, dict[str, Callable[..., Any]]] = {
    db_app: {"upgrade": setup_commands.db_upgrade},
    model_app: {
        "tiny": setup_commands.model_tiny,
        "tiny-inpaint": setup_commands.model_tiny_inpaint,
        "tiny-lora": setup_commands.model_tiny_lora,
        "tiny-judges": setup_commands.model_tiny_judges,
    },
    engine_app: {"build": setup_commands.engine_build},
    broker_app: {
        "start": setup_commands.broker_start,
        "stop": setup_commands.broker_stop,
        "status": setup_commands.broker_status,
    },
    tenants_app: {
        "add": tenants.add,
        "set": tenants.set_,
        "list": tenants.list_,
        "rotate": tenants.rotate,
        "revoke": tenants.revoke,
    },
}
for sub, commands in SUBCOMMANDS.items():
    for name, command in commands.items():
        sub.command(name)(command)


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
