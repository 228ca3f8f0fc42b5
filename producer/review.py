"""Human review of blocked items: list them with their reasons, publish a false positive on purpose."""

from __future__ import annotations

import hashlib
import os
import pwd
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract import transitions
from contract.checks import Checks
from contract.params import IMAGE_FORMATS
from contract.schema import Image, Item, State
from contract.storage import Storage, create_or_get
from contract.tenants import owned_job


class ReviewError(RuntimeError):
    """The item cannot be approved; the message says why."""


@dataclass
class Blocked:
    item: int
    key: str
    variant: int
    prompt: str
    stage: str  # "prompt" (never generated) or "image" (the checker flagged it)
    reason: dict[str, Any]
    safety: dict[str, Any] | None  # the image checker's per-concept scores
    scores: dict[str, Any] | None
    quarantined: str | None  # storage key of the blocked image, if kept

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def blocked_items(session: Session, tenant_id: int, job_id: int) -> list[Blocked]:
    """The blocked items of the tenant's job; another tenant's job is "no job N", as a missing one."""
    if owned_job(session, tenant_id, job_id) is None:
        raise ReviewError(f"no job {job_id}; `pixelmill jobs` lists them")
    rows = session.execute(
        select(Item, Image)
        .outerjoin(Image, Image.item_id == Item.id)
        .where(Item.job_id == job_id, Item.state == State.blocked)
        .order_by(Item.id)
    )
    return [
        Blocked(
            item=item.id,
            key=item.item_key,
            variant=item.variant,
            prompt=item.prompt,
            stage=(item.block_reason or {}).get("stage", "?"),
            reason=item.block_reason or {},
            safety=image.safety if image else None,
            scores=image.scores if image else None,
            quarantined=image.storage_key if image and image.visibility == "quarantine" else None,
        )
        for item, image in rows
    ]


def os_identity() -> str:
    """The authenticated identity of a command-line approver: the account the process runs as (its effective
    uid), not $USER or $LOGNAME, which anyone can set."""
    return pwd.getpwuid(os.geteuid()).pw_name


def approve(
    session: Session, storage: Storage, tenant_id: int, item_id: int, *, by: str, note: str | None = None
) -> str:
    """Publish a blocked image: copy it from quarantine to its public key, mark the item succeeded and record
    who approved it (`by`: an authenticated identity, never free text) and when. Returns the public key.

    Only the bytes the checker judged are published: the quarantined object must hash to the sha256 the
    ledger recorded for it, and an object already at the public key must be those same bytes."""
    item = session.get(Item, item_id, with_for_update=True)
    if item is None or owned_job(session, tenant_id, item.job_id) is None:  # another tenant's: as a missing one
        raise ReviewError(f"no item {item_id}; `pixelmill review JOB` lists blocked items with their ids")
    if item.state != State.blocked:
        raise ReviewError(f"item {item_id} is {item.state.value}, not blocked")
    reason = item.block_reason or {}
    if reason.get("stage") != "image":
        raise ReviewError(
            f"item {item_id} was blocked by the prompt filter and never generated; "
            "change the prompt or the block lists and submit it again"
        )
    image = session.scalars(select(Image).where(Image.item_id == item_id)).one_or_none()
    if image is None or image.visibility != "quarantine":
        raise ReviewError(
            f"item {item_id}'s image was not kept (its job ran with PIXELMILL_QUARANTINE=none); "
            "submit it again to regenerate it"
        )
    prefix = Checks.from_json(item.job.params.get("checks")).quarantine.strip("/") + "/"
    public = image.storage_key.removeprefix(prefix)
    try:
        quarantined = storage.get(image.storage_key)
    except (OSError, KeyError) as exc:
        raise ReviewError(
            f"item {item_id}'s quarantined object {image.storage_key} cannot be read ({exc}); nothing was published"
        ) from None
    found = hashlib.sha256(quarantined).hexdigest()
    if found != image.sha256:
        raise ReviewError(
            f"item {item_id}'s quarantined object {image.storage_key} is not the image the checker "
            f"judged (sha256 {found[:16]}…, the ledger recorded {image.sha256[:16]}…): it was changed "
            "after it was stored; nothing was published"
        )
    data = create_or_get(storage, public, quarantined, IMAGE_FORMATS[image.format].content_type)
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise ReviewError(
            f"another object already sits at item {item_id}'s public key {public} with other "
            "bytes; nothing was published (remove it, then approve again)"
        )
    transitions.approve(session, item, image, public_key=public, sha256=image.sha256, size=len(data), by=by, note=note)
    return public
