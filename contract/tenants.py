"""Tenants: who owns a job. Every door resolves its caller to a `TenantInfo` before it reads a request body, and
passes the tenant's id down; every read, cancel, event and idempotency key is scoped by it.

A tenant's API tokens are 256-bit random strings shown once (`pixelmill tenants add | rotate`) and stored only as
SHA-256 digests: with that much entropy a plain digest cannot be reversed, and a lookup by digest compares no
secret byte by byte. The tenant `default` (created by migration 0011) owns what a one-team setup submits without
naming a tenant.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contract.schema import Job, Tenant, TenantToken, utcnow

DEFAULT_TENANT = "default"
DEFAULT_TENANT_ID = 1  # made by migration 0011 with that id
# Lower-case letters, digits and hyphens: a tenant's name also names its intake and reply queues and broker user.
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
TOKEN_PREFIX = "pm_"


class TenantError(ValueError):
    """A tenant operation that cannot be done as asked (bad name, unknown or revoked tenant, a name taken)."""


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as the doors and checks see it, detached from any session."""

    id: int
    name: str
    reply_prefix: str
    source_roots: tuple[str, ...]
    webhook_hosts: tuple[str, ...]


@dataclass(frozen=True)
class TenantSummary:
    """One line of `pixelmill tenants list`."""

    name: str
    created: datetime
    revoked: datetime | None
    tokens: int
    reply_prefix: str
    source_roots: tuple[str, ...]
    webhook_hosts: tuple[str, ...]
    share: TenantShareInfo


def check_name(name: str) -> str:
    """`name` if it is a valid tenant name, else TenantError saying what a name may hold."""
    if not NAME.fullmatch(name):
        raise TenantError(
            f"tenant name {name[:60]!r}: use 1–40 lower-case letters, digits and inner hyphens (it names queues too)"
        )
    return name


def default_reply_prefix(name: str) -> str:
    return f"pixelmill.reply.{name}."


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _info(row: Tenant) -> TenantInfo:
    return TenantInfo(
        id=row.id,
        name=row.name,
        reply_prefix=row.reply_prefix,
        source_roots=tuple(row.source_roots or ()),
        webhook_hosts=tuple(row.webhook_hosts or ()),
    )


def _row(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def find_tenant(session: Session, name: str) -> TenantInfo | None:
    """The active tenant called `name`, or None (unknown or revoked)."""
    row = _row(session, name)
    return None if row is None or row.revoked is not None else _info(row)


def tenant_by_id(session: Session, tenant_id: int) -> TenantInfo | None:
    row = session.get(Tenant, tenant_id)
    return None if row is None else _info(row)


def check_pointers(
    session: Session, name: str, reply_prefix: str, source_roots: Sequence[str], webhook_hosts: Sequence[str]
) -> None:
    """TenantError unless what a tenant may point at is well formed: a reply prefix that names no broker, Celery or
    pixelmill queue and neither contains nor is contained in another tenant's (or one could read the other's
    replies); absolute directories or `s3://bucket/prefix` roots; webhook hosts in the allow-list syntax."""
    from contract.replies import internal_problem
    from contract.webhook_target import parse_hosts

    if len(reply_prefix) > 150 or (problem := internal_problem(reply_prefix + "x")) is not None:
        raise TenantError(f"reply prefix {reply_prefix[:60]!r}: {problem or 'at most 150 characters'}")
    for other, prefix in session.execute(select(Tenant.name, Tenant.reply_prefix).where(Tenant.name != name)):
        if prefix.startswith(reply_prefix) or reply_prefix.startswith(prefix):
            raise TenantError(f"reply prefix {reply_prefix!r} overlaps tenant {other}'s {prefix!r}")
    for root in source_roots:
        bucket = root.removeprefix("s3://").partition("/")[0] if root.startswith("s3://") else None
        if (bucket is None and not root.startswith("/")) or bucket == "" or "\0" in root or len(root) > 1000:
            raise TenantError(f"source root {root[:80]!r}: give an absolute directory or s3://bucket/prefix/")
    try:
        parse_hosts(list(webhook_hosts), variable="--webhook-host")
    except ValueError as exc:
        raise TenantError(str(exc)) from None


def add_tenant(
    session: Session,
    name: str,
    *,
    reply_prefix: str | None = None,  # None: pixelmill.reply.<name>.
    source_roots: Sequence[str] = (),  # directories or s3://bucket/prefix/ its `source` may read
    webhook_hosts: Sequence[str] = (),  # internal receivers its webhooks may reach (public ones need none)
    with_token: bool = True,
) -> tuple[TenantInfo, str | None]:
    """A new tenant and, with `with_token`, its first token (returned once, stored as a digest)."""
    check_name(name)
    if _row(session, name) is not None:
        raise TenantError(f"tenant {name!r} exists (a revoked name is not reused)")
    reply_prefix = reply_prefix or default_reply_prefix(name)
    check_pointers(session, name, reply_prefix, source_roots, webhook_hosts)
    row = Tenant(
        name=name,
        reply_prefix=reply_prefix,
        source_roots=list(source_roots),
        webhook_hosts=list(webhook_hosts),
    )
    session.add(row)
    session.flush()
    token = _issue(session, row.id) if with_token else None
    return _info(row), token


def ensure_tenant(session: Session, name: str) -> TenantInfo:
    """The active tenant `name`, made (without a token) when missing: how a name from PIXELMILL_API_TOKENS or
    PIXELMILL_TENANT becomes a tenant. A revoked one stays revoked (TenantError)."""
    row = _row(session, check_name(name))
    if row is None:
        return add_tenant(session, name, with_token=False)[0]
    if row.revoked is not None:
        raise TenantError(f"tenant {name!r} was revoked")
    return _info(row)


def tenant_for_token(session: Session, token: str) -> TenantInfo | None:
    """The active tenant whose unrevoked token this is, or None."""
    found = session.execute(
        select(Tenant)
        .join(TenantToken, TenantToken.tenant_id == Tenant.id)
        .where(TenantToken.digest == token_digest(token), TenantToken.revoked.is_(None), Tenant.revoked.is_(None))
    ).scalar_one_or_none()
    return None if found is None else _info(found)


def _issue(session: Session, tenant_id: int) -> str:
    token = new_token()
    session.add(TenantToken(tenant_id=tenant_id, digest=token_digest(token)))
    session.flush()
    return token


def _active_row(session: Session, name: str) -> Tenant:
    row = _row(session, name)
    if row is None or row.revoked is not None:
        raise TenantError(f"no such tenant {name!r}; `pixelmill tenants list` shows them")
    return row


def configure_tenant(
    session: Session,
    name: str,
    *,
    reply_prefix: str | None = None,
    source_roots: Sequence[str] | None = None,
    webhook_hosts: Sequence[str] | None = None,
) -> TenantInfo:
    """Change what an active tenant may point at; None leaves a field as it is (an empty list clears it)."""
    row = _active_row(session, name)
    prefix = row.reply_prefix if reply_prefix is None else reply_prefix
    roots = list(row.source_roots or ()) if source_roots is None else list(source_roots)
    hosts = list(row.webhook_hosts or ()) if webhook_hosts is None else list(webhook_hosts)
    check_pointers(session, name, prefix, roots, hosts)
    row.reply_prefix, row.source_roots, row.webhook_hosts = prefix, roots, hosts
    session.flush()
    return _info(row)


@dataclass(frozen=True)
class TenantShareInfo:
    """A tenant's place in the scheduler's fair share (contract/fairshare.py)."""

    name: str
    weight: int
    max_in_flight: int | None
    paused: bool


def _share(row: Tenant) -> TenantShareInfo:
    return TenantShareInfo(row.name, row.weight, row.max_in_flight, row.paused)


def configure_share(
    session: Session,
    name: str,
    *,
    weight: int | None = None,
    max_in_flight: int | None = None,
    no_max_in_flight: bool = False,
    paused: bool | None = None,
) -> TenantShareInfo:
    """Change an active tenant's weight (1 to 1000), most items in flight (queued + running; `no_max_in_flight`:
    no limit) or pause; None leaves a field as it is. The scheduler reads them at its next pass."""
    row = _active_row(session, name)
    if weight is not None:
        if not 1 <= weight <= 1000:
            raise TenantError(f"weight must be a whole number from 1 to 1000, got {weight}")
        row.weight = weight
    if max_in_flight is not None:
        if max_in_flight < 1:
            raise TenantError(f"max in flight must be at least 1 item (or no limit), got {max_in_flight}")
        row.max_in_flight = max_in_flight
    if no_max_in_flight:
        row.max_in_flight = None
    if paused is not None:
        row.paused = paused
    session.flush()
    return _share(row)


def rotate_token(session: Session, name: str, *, keep_old: bool = False) -> str:
    """A new token for `name`; its older tokens are revoked unless `keep_old` (a rollover window)."""
    row = _active_row(session, name)
    if not keep_old:
        session.execute(
            update(TenantToken)
            .where(TenantToken.tenant_id == row.id, TenantToken.revoked.is_(None))
            .values(revoked=utcnow())
        )
    return _issue(session, row.id)


def revoke_tenant(session: Session, name: str) -> None:
    """Revoke `name` and every token of it: its requests answer 401 from now on. Its jobs stay in the ledger."""
    row = _active_row(session, name)
    now = utcnow()
    row.revoked = now
    session.execute(
        update(TenantToken).where(TenantToken.tenant_id == row.id, TenantToken.revoked.is_(None)).values(revoked=now)
    )


def list_tenants(session: Session) -> list[TenantSummary]:
    summaries = []
    for row in session.scalars(select(Tenant).order_by(Tenant.name)):
        tokens = session.scalars(
            select(TenantToken.id).where(TenantToken.tenant_id == row.id, TenantToken.revoked.is_(None))
        ).all()
        info = _info(row)
        summaries.append(
            TenantSummary(
                name=row.name,
                created=row.created,
                revoked=row.revoked,
                tokens=len(tokens),
                reply_prefix=info.reply_prefix,
                source_roots=info.source_roots,
                webhook_hosts=info.webhook_hosts,
                share=_share(row),
            )
        )
    return summaries


def owned_job(session: Session, tenant_id: int, job_id: int) -> Job | None:
    """Job `job_id` if `tenant_id` owns it, else None: another tenant's job is looked up exactly as a missing one,
    so every door answers both with the same words (and the same status)."""
    job = session.get(Job, job_id)
    return job if job is not None and job.tenant_id == tenant_id else None


def has_live_tokens(session: Session) -> bool:
    """Whether any active tenant holds an unrevoked token: then the HTTP API asks every caller for one."""
    found = (
        select(TenantToken.id)
        .join(Tenant, Tenant.id == TenantToken.tenant_id)
        .where(TenantToken.revoked.is_(None), Tenant.revoked.is_(None))
        .limit(1)
    )
    return session.scalar(found) is not None
