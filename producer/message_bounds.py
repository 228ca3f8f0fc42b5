"""Bounds on an intake message, checked on its raw bytes before any JSON decoding (issue 22, findings 9 and 13).

Python's json module decodes a whole document into objects (a 100 MB message cost the intake 700 MB) and
recurses once per nesting level (3,000 levels raised RecursionError). So the intake measures first: the byte
length, then the nesting depth with `contract.jsondepth` (strings skipped, no object built).
A refused message is not decoded at all, yet its caller should still hear why: `reply_to_of` picks the request's
`reply_to` out of the raw Celery body by the same scan, and the intake answers there with `job.rejected` (the
name is still checked against the tenant's prefix like any other).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from contract.jsondepth import json_depth

# A JSON string, escapes included (the unrolled form: linear, no backtracking), or one structural character.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)


@dataclass(frozen=True)
class Refused:
    """A message the intake would not decode: why, and the reply queue its raw bytes name (if any). Never made from
    a decoded message, so no client can send one."""

    problem: str
    reply_to: str | None = None


def depth(raw: bytes, limit: int) -> int:
    """The nesting depth of a JSON document, without decoding it: `contract.jsondepth.json_depth`, the scan the
    HTTP door uses too (`limit` is kept for the callers' reading; the scan is linear whatever it is)."""
    return json_depth(raw)


def reply_to_of(raw: bytes) -> str | None:
    """The string value of `reply_to` in the first argument of a Celery protocol-2 body `[[{...}], {}, {}]`, read
    from the raw bytes without decoding the document (only that one string is decoded); None if there is none."""
    level = 0
    in_target = False
    last: list[bytes] = []  # the two tokens before this one, at the request object's own level
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            level += 1
            if level <= 3 and token != (b"{" if level == 3 else b"["):
                return None  # not `[[{`: no request object where protocol 2 puts it
            in_target = in_target or level == 3
            continue
        if token in (b"]", b"}"):
            if level == 3:
                return None  # the request object ended without a reply_to
            level -= 1
            continue
        if level < 3:
            return None  # a comma or colon before the request object: not protocol 2
        if not in_target or level > 3:
            continue
        if token.startswith(b'"') and last == [b'"reply_to"', b":"]:
            try:
                value = json.loads(token) if len(token) <= 402 else None
            except ValueError:
                return None
            return value if isinstance(value, str) else None
        last = [*last[-1:], token]
    return None


def refusal(raw: bytes, *, max_bytes: int, max_depth: int) -> Refused | None:
    """Why this raw intake body is not to be decoded (too many bytes, nested too deep), or None."""
    if len(raw) > max_bytes:
        return Refused(
            f"request: the message is {len(raw)} bytes, more than PIXELMILL_INTAKE_MAX_MESSAGE_BYTES ({max_bytes}); "
            "send the catalogue as 'source'",
            reply_to_of(raw),
        )
    if depth(raw, max_depth) > max_depth:
        return Refused(
            f"request: the message nests JSON deeper than PIXELMILL_INTAKE_MAX_DEPTH ({max_depth}) levels",
            reply_to_of(raw),
        )
    return None
