"""Which broker names a request may have its events sent to (`reply_to`), and which it never may.

On Redis every kombu queue is a plain key beside kombu's own bookkeeping (`unacked`, `unacked_index`,
`_kombu.binding.*`, ...): an event pushed into one of those turned it into a list, and every consumer of the broker
then died on its next message (issue 22, finding 1). So a reply queue is a strict, short name under the tenant's
operator-set prefix (`Tenant.reply_prefix`, default `pixelmill.reply.<tenant>.`), and never a name kombu, Celery
or pixelmill itself uses, whatever the prefix says. The intake checks it with the tenant (`reply_to_problem`); the
dispatcher checks the name again before it publishes (`check_reply_queue`), so a row written before this rule, or
by a buggy door, still cannot reach an internal key.
"""

from __future__ import annotations

import re

# Letters, digits, `_ . -`; no `:` (Redis key namespaces), no space or control byte (kombu's priority separator
# is "\x06\x16"), no glob characters (ACL key patterns).
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
# Names, or prefixes of names, that belong to kombu, Celery or pixelmill's own queues (the model queues and the
# intake queues all start with `pixelmill.`; only `pixelmill.reply.` is for replies).
_INTERNAL_PREFIXES = ("unacked", "_kombu", "celery", "celeryev", "pixelmill.")
REPLY_ROOT = "pixelmill.reply"  # every default reply prefix lies under it: `pixelmill.reply.<tenant>.`
_REPLY_SPACE = REPLY_ROOT + "."


class ReplyQueueError(ValueError):
    """A reply queue that no event may be sent to."""


def internal_problem(name: str) -> str | None:
    """Why `name` is no queue an event may be sent to at all (whatever tenant asks), or None."""
    if not QUEUE_NAME.fullmatch(name):
        return "use 1-200 letters, digits, '_', '.' or '-', starting with a letter or digit"
    lowered = name.lower()
    if lowered.startswith(_REPLY_SPACE):
        return None
    if lowered.startswith(_INTERNAL_PREFIXES) or lowered.endswith(".pidbox") or "reply.celery" in lowered:
        return "a name the broker, Celery or pixelmill uses itself"
    return None


def reply_to_problem(name: str, prefix: str) -> str | None:
    """Why a tenant whose reply prefix is `prefix` may not name `name` as its reply queue, or None."""
    if (problem := internal_problem(name)) is not None:
        return problem
    if not name.startswith(prefix) or name == prefix:
        return f"must start with this tenant's reply prefix {prefix!r} (set by the operator)"
    return None


def check_reply_queue(name: str) -> str:
    """`name` if an event may be published to it; else ReplyQueueError (the dispatcher's last check)."""
    if (problem := internal_problem(name)) is not None:
        raise ReplyQueueError(f"reply queue {name[:60]!r} refused: {problem}")
    return name
