"""Keeping a worker's leases and records through a locked or briefly unreachable ledger.

`renew_lease` / `within_lease`: the ledger is tried again, never raised into the task (which would lose the
chunk's stores) or into the recorder (which would leave items running until their lease ran out, an attempt
lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from contract import faults, transitions
from contract.ledger import Ledger
from contract.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def retrying(
    fn: Callable[[], T], *, deadline: float, what: str, first_delay: float = 0.5, max_delay: float = 10.0
) -> T:
    """`fn()`, called again after infrastructure failures (exponential backoff) until `deadline`
    (time.monotonic()); any other error, or one at the deadline, is raised."""
    delay = first_delay
    while True:
        try:
            return fn()
        except Exception as exc:
            if not faults.is_infra(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                f"{what} failed; trying again",
                extra={"error": str(exc).splitlines()[0][:200], "retry_in": round(delay, 1)},
            )
            time.sleep(delay)
            delay = min(max_delay, delay * 2)


def renew_lease(ledger: Ledger, item_ids: Sequence[int], *, node: str, lease_seconds: int) -> None:
    """Extend the lease of items handed to the upload threads. A ledger that stays locked leaves them the
    lease of their claim (which already covers the task's time limit): logged, never raised into the task."""

    def renew() -> None:
        with ledger.session() as session:
            transitions.renew_lease(session, item_ids, node=node, lease_seconds=lease_seconds)

    try:
        retrying(renew, deadline=time.monotonic() + 5, what="renewing leases")
    except Exception as exc:
        if not faults.is_infra(exc):
            raise
        log.warning(
            "could not renew leases; the claim's lease stands", extra={"items": len(item_ids), "error": str(exc)[:200]}
        )


def within_lease(fn: Callable[[], T], settings: Settings) -> T:
    """Record a chunk, trying again through a locked or unreachable ledger for up to half a lease (the items
    are still ours that long; past it, the reconciler takes over)."""
    return retrying(fn, deadline=time.monotonic() + settings.lease_seconds / 2, what="recording a chunk")
