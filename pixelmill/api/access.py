"""What every HTTP route depends on: the `Door` (settings, ledger, tokens and the lazily made Celery app that
one `create_app` serves, kept on `app.state`), the bearer-token check (`Auth`) and HTTP's 404 wording.

No `from __future__ import annotations`: FastAPI reads the dependencies' annotations at runtime."""

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contract.ledger import Ledger
from contract.queue import make_celery
from contract.settings import Settings


@dataclass
class Door:
    """One served API's state: its settings, its ledger, `tokens` ({token: name}) and its Celery app."""

    settings: Settings
    ledger: Ledger
    tokens: dict[str, str]
    celery: Any = None

    @property
    def anonymous(self) -> bool:
        """No tokens: every caller is "anonymous", which `pixelmill serve` allows on loopback only."""
        return not self.tokens

    def broker(self) -> Any:
        """The Celery app that publishes retried items, made on first use."""
        if self.celery is None:
            self.celery = make_celery(self.settings)
        return self.celery


def door(request: Request) -> Door:
    found: Door = request.app.state.door
    return found


Served = Annotated[Door, Depends(door)]
bearer = HTTPBearer(auto_error=False)


def caller(served: Door, token: str | None) -> str | None:
    """Who a bearer token belongs to: its name, "anonymous" when the API has no tokens, None for a missing or
    wrong one. The one token check: the `Bounds` middleware (before any body byte) and `authorised` call it."""
    if served.anonymous:
        return "anonymous"
    given = token.encode() if token is not None else b""
    found = None
    for known, name in served.tokens.items():  # compare with every token, in constant time each
        if hmac.compare_digest(given, known.encode()):
            found = name
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), as HTTPBearer reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


UNAUTHORISED = "missing or wrong bearer token (Authorization: Bearer <token>)"


def authorised(served: Served, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The caller's name for its bearer token; 401 for a missing or wrong one."""
    found = caller(served, credentials.credentials if credentials is not None else None)
    if found is None:
        raise HTTPException(401, UNAUTHORISED, headers={"WWW-Authenticate": "Bearer"})
    return found


Auth = Annotated[str, Depends(authorised)]


def not_found(exc: LookupError) -> HTTPException:
    """404 with the lookup's message less its CLI hint (the `pixelmill jobs` one): HTTP clients get HTTP words."""
    return HTTPException(404, str(exc).split("; `pixelmill")[0])
