"""How deeply a JSON document nests, found without parsing it: Python's `json` recurses once per level and
raises RecursionError (a 500 on HTTP) near 1,000 levels, so a door bounds the depth before it parses.

Strings are dropped first (a bracket inside a string is text), then only the brackets are counted; every
step runs in C, so a 16 MiB body takes about a second at worst, whatever its shape."""

from __future__ import annotations

from itertools import accumulate

MAX_JSON_DEPTH = 64  # arrays and objects inside each other; a v1 request needs 3
NOT_SYNTAX = bytes(b for b in range(256) if b not in b'"[]{}')
STEP = [0] * 256
STEP[ord("[")] = STEP[ord("{")] = 1
STEP[ord("]")] = STEP[ord("}")] = -1


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in `data` (0 for a scalar). For malformed JSON it counts
    what a parser reads before its first error, so a parser never goes deeper than this says."""
    # Escapes first (a run of backslashes pairs up from its left, as a parser reads it), then every other
    # piece between quotes is a string; all of it is bytes methods, linear, no regex backtracking.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Quotes and brackets only; two quotes side by side (an empty string, or one string ending where the next
    # begins) leave every other character's side unchanged, so they go: at most one quote per bracket remains.
    syntax = unescaped.translate(None, NOT_SYNTAX).replace(b'""', b"")
    brackets = b"".join(syntax.split(b'"')[::2])
    return max(accumulate(map(STEP.__getitem__, brackets)), default=0)


def too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """A problem line for JSON nested deeper than `limit`, else None."""
    depth = json_depth(data)
    if depth <= limit:
        return None
    return f"request: JSON nested {depth} levels deep; at most {limit} arrays and objects inside each other"
