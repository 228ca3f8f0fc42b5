"""What every HTTP route depends on: the `Door` (settings, ledger, tokens and the lazily made Celery app that
one `create_app` serves, kept on `app.state`), the caller (`caller`: a bearer token to its tenant; `Auth`, the
routes' dependency) and HTTP's 404 wording.

Every route scopes what it reads and changes to the caller's tenant; another tenant's job is answered exactly
as a missing one (404 "no job N"), so a token learns nothing of jobs it does not own.

No `from __future__ import annotations`: FastAPI reads the dependencies' annotations at runtime."""

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contract.ledger import Ledger
from contract.queue import make_celery
from contract.settings import Settings
from contract.tenants import (
    DEFAULT_TENANT,
    NAME,
    TenantInfo,
    ensure_tenant,
    find_tenant,
    has_live_tokens,
    tenant_for_token,
)


@dataclass
class Door:
    """One served API's state: its settings, its ledger, `tokens` ({PIXELMILL_API_TOKENS token: tenant name}),
    `open` (no token anywhere when it started: loopback only, every caller is the tenant `default`) and its
    Celery app."""

    settings: Settings
    ledger: Ledger
    tokens: dict[str, str]
    open: bool = False
    celery: Any = None

    @property
    def anonymous(self) -> bool:
        """Open now: it started without a token anywhere and the ledger still holds none (a `pixelmill tenants add`
        closes it at once, without a restart). Every caller is then the tenant `default`; `pixelmill serve` allows
        it on loopback only, and the HTTP bounds check Host and Origin (a browser on this host is the threat)."""
        if not self.open:
            return False
        with self.ledger.session(readonly=True) as session:
            return not has_live_tokens(session)

    def broker(self) -> Any:
        """The Celery app that publishes retried items, made on first use."""
        if self.celery is None:
            self.celery = make_celery(self.settings)
        return self.celery


def make_door(settings: Settings, tokens: dict[str, str]) -> Door:
    """The door over the settings' ledger. Each PIXELMILL_API_TOKENS name becomes a tenant of that name (made if
    missing, so a one-team setup keeps working); ValueError names the variable for a name that cannot be one, or
    a revoked one. Open (tokenless) only when neither the variable nor the ledger holds a token at start-up:
    a door that started closed never opens, whatever is revoked later."""
    ledger = Ledger(settings)
    with ledger.session() as session:
        for name in sorted(set(tokens.values())):
            if not NAME.fullmatch(name):
                raise ValueError(
                    f"PIXELMILL_API_TOKENS: name {name[:40]!r} is no tenant name: use lower-case letters, digits "
                    "and inner hyphens (each name is the tenant its token acts as)"
                )
            try:
                ensure_tenant(session, name)
            except ValueError as exc:
                raise ValueError(f"PIXELMILL_API_TOKENS: {exc}") from None
        live = has_live_tokens(session)
    return Door(settings, ledger, tokens, open=not tokens and not live)


def caller(served: Door, token: str | None) -> TenantInfo | None:
    """The tenant a bearer token acts as, or None (401): a PIXELMILL_API_TOKENS token (compared with every one,
    in constant time each) is its name's tenant; any other is looked up by its digest among the ledger's
    (`pixelmill tenants add|rotate`). A revoked tenant or token is None, and so is any token given to an open
    door that it does not know. An open door (loopback, no token anywhere at start-up) takes a caller without a
    token as the tenant `default` only while the ledger holds no live token. The one place a token becomes a
    caller: the routes' `Auth` and the HTTP bounds both ask it."""
    given = (token or "").encode()
    named = None
    for known, name in served.tokens.items():
        if hmac.compare_digest(given, known.encode()):
            named = name
    with served.ledger.session(readonly=True) as session:
        if named is not None:
            return find_tenant(session, named)
        if token:  # a token that was given is checked, never waved through as `default`
            return tenant_for_token(session, token)
        open_now = served.open and not has_live_tokens(session)
        return find_tenant(session, DEFAULT_TENANT) if open_now else None


def door(request: Request) -> Door:
    found: Door = request.app.state.door
    return found


Served = Annotated[Door, Depends(door)]
bearer = HTTPBearer(auto_error=False)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), as HTTPBearer reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


UNAUTHORISED = "missing or wrong bearer token (Authorization: Bearer <token>)"


CALLER = "pixelmill_caller"  # where the HTTP bounds leave the tenant they found, in the request's state


def authorised(
    request: Request, served: Served, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> TenantInfo:
    """The caller's tenant for its bearer token (`caller`); 401 for a missing, wrong or revoked one. The HTTP
    bounds looked it up already, before the body was read; an app without them looks it up here."""
    found = getattr(request.state, CALLER, None)
    if found is None:
        found = caller(served, credentials.credentials if credentials is not None else None)
    if found is None:
        raise HTTPException(401, UNAUTHORISED, headers={"WWW-Authenticate": "Bearer"})
    return found


Auth = Annotated[TenantInfo, Depends(authorised)]


def not_found(exc: LookupError) -> HTTPException:
    """404 with the lookup's message less its CLI hint (the `pixelmill jobs` one): HTTP clients get HTTP words."""
    return HTTPException(404, str(exc).split("; `pixelmill")[0])
