"""`pixelmill tenants add | set | list | rotate | revoke`: who may use this installation (contract/tenants.py).

A token is printed once, alone on stdout (`TOKEN=$(pixelmill tenants add team-a)`), and stored only as its
SHA-256; everything else goes to stderr. These are the operator's commands: they run with the ledger's
credentials and act on every tenant, whatever `--tenant` says."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from pixelmill.cli.common import err, fail, open_ledger, out

# contract.tenants pulls in SQLAlchemy: imported by each command, so `pixelmill --help` starts without it.

NameArg = Annotated[str, typer.Argument(help="Tenant name: lower-case letters, digits and inner hyphens.")]
SourceRoots = Annotated[
    Optional[list[str]],
    typer.Option(
        "--source-root",
        help="A directory or s3:// prefix its requests' `source` may read (repeat; `set` replaces the list).",
    ),
]
WebhookHosts = Annotated[
    Optional[list[str]],
    typer.Option(
        "--webhook-host",
        help="An internal webhook host it may name beyond public ones (repeat; `set` replaces the list).",
    ),
]


def add(
    name: NameArg,
    reply_prefix: Annotated[
        Optional[str],
        typer.Option(
            help="Reply queues this tenant's requests may name start with this (default pixelmill.reply.NAME.)."
        ),
    ] = None,
    source_root: SourceRoots = None,
    webhook_host: WebhookHosts = None,
) -> None:
    """Add a tenant and print its first API token (once: only its hash is kept)."""
    from contract.tenants import TenantError, add_tenant

    try:
        with open_ledger().session() as session:
            tenant, token = add_tenant(
                session,
                name,
                reply_prefix=reply_prefix,
                source_roots=source_root or (),
                webhook_hosts=webhook_host or (),
            )
    except TenantError as exc:
        fail(str(exc))
    print(token)
    err.print(
        f"tenant {tenant.name} added; its token is printed above, once (HTTP: Authorization: Bearer <token>)",
        highlight=False,
        markup=False,
    )


def set_(
    name: NameArg,
    reply_prefix: Annotated[Optional[str], typer.Option(help="New prefix of the reply queues it may name.")] = None,
    source_root: SourceRoots = None,
    webhook_host: WebhookHosts = None,
    clear_source_roots: Annotated[bool, typer.Option("--clear-source-roots", help="Remove every source root.")] = False,
    clear_webhook_hosts: Annotated[
        bool, typer.Option("--clear-webhook-hosts", help="Remove every webhook host.")
    ] = False,
    weight: Annotated[
        Optional[int],
        typer.Option(help="Its share of each model's GPUs against other tenants with a backlog, 1-1000."),
    ] = None,
    max_in_flight: Annotated[
        Optional[int], typer.Option(help="The most items it may have queued or running at once; 0: no limit.")
    ] = None,
) -> None:
    """Change what a tenant's requests may point at and its fair share (the tenant `default` included); unnamed
    fields stay."""
    from contract.tenants import TenantError, configure_share, configure_tenant

    if (source_root and clear_source_roots) or (webhook_host and clear_webhook_hosts):
        fail("give either new values or --clear-..., not both")
    try:
        with open_ledger().session() as session:
            tenant = configure_tenant(
                session,
                name,
                reply_prefix=reply_prefix,
                source_roots=[] if clear_source_roots else source_root,
                webhook_hosts=[] if clear_webhook_hosts else webhook_host,
            )
            share = configure_share(
                session,
                name,
                weight=weight,
                max_in_flight=max_in_flight or None,
                no_max_in_flight=max_in_flight == 0,
            )
    except TenantError as exc:
        fail(str(exc))
    limit = share.max_in_flight if share.max_in_flight is not None else "no limit"
    err.print(
        f"tenant {tenant.name}: weight {share.weight}; max in flight {limit}" + ("; paused" if share.paused else ""),
        highlight=False,
        markup=False,
    )
    roots, hosts = ", ".join(tenant.source_roots) or "none", ", ".join(tenant.webhook_hosts) or "any public host"
    err.print(
        f"tenant {tenant.name}: reply prefix {tenant.reply_prefix}; source roots {roots}; webhook hosts {hosts}",
        highlight=False,
        markup=False,
    )


def list_(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False) -> None:
    """Every tenant: created, revoked, live tokens, reply prefix, source roots, webhook hosts and fair share."""
    from contract.tenants import list_tenants

    with open_ledger().session(readonly=True) as session:
        found = list_tenants(session)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "created": t.created.isoformat(timespec="seconds"),
                        "revoked": t.revoked.isoformat(timespec="seconds") if t.revoked else None,
                        "tokens": t.tokens,
                        "reply_prefix": t.reply_prefix,
                        "source_roots": list(t.source_roots),
                        "webhook_hosts": list(t.webhook_hosts),
                        "weight": t.share.weight,
                        "max_in_flight": t.share.max_in_flight,
                        "paused": t.share.paused,
                    }
                    for t in found
                ]
            )
        )
        return
    table = Table(
        "tenant", "created", "revoked", "tokens", "reply prefix", "source roots", "webhook hosts", "weight", "in flight"
    )
    table.box = box.SIMPLE_HEAD
    for t in found:
        table.add_row(
            escape(t.name),
            f"{t.created:%Y-%m-%d %H:%M}",
            f"{t.revoked:%Y-%m-%d %H:%M}" if t.revoked else "",
            str(t.tokens),
            escape(t.reply_prefix),
            escape(", ".join(t.source_roots)),
            escape(", ".join(t.webhook_hosts)),
            str(t.share.weight) + (" (paused)" if t.share.paused else ""),
            "no limit" if t.share.max_in_flight is None else f"≤ {t.share.max_in_flight}",
        )
    out.print(table)


def rotate(
    name: NameArg,
    keep_old: Annotated[
        bool, typer.Option("--keep-old", help="Keep the older tokens valid too (revoke them later with rotate).")
    ] = False,
) -> None:
    """Print a new token for the tenant (once); its older tokens stop working unless --keep-old."""
    from contract.tenants import TenantError, rotate_token

    try:
        with open_ledger().session() as session:
            token = rotate_token(session, name, keep_old=keep_old)
    except TenantError as exc:
        fail(str(exc))
    print(token)
    kept = "its older tokens still work" if keep_old else "its older tokens no longer work"
    kept += " (a PIXELMILL_API_TOKENS token of this name works until it is removed from that variable)"
    err.print(f"tenant {name}: new token printed above, once; {kept}", highlight=False, markup=False)


def revoke(name: NameArg) -> None:
    """Revoke the tenant and every token of it: its requests are refused from now on; its jobs stay."""
    from contract.tenants import TenantError, revoke_tenant

    try:
        with open_ledger().session() as session:
            revoke_tenant(session, name)
    except TenantError as exc:
        fail(str(exc))
    err.print(f"tenant {name} revoked", highlight=False, markup=False)
