"""Which catalogue files a v1 request's `source` may name: only those under its tenant's `source_roots` (issue 22,
finding 4: any readable .csv on the intake host, or any S3 object its credentials reach, could be read out).

A root is a local directory or an `s3://bucket/prefix/`. A local path is resolved (symlinks, `..`) before it is
compared, so neither a link inside a root nor a `..` leads out of it; an S3 key is compared literally and may hold
no `.`, `..` or empty segment (S3 keys are not paths, but some S3-compatible servers normalise them). Every
refusal says the same words, whether or not the file exists, so a refusal tells nothing about the host.
A tenant with no roots may name no `source` at all; its requests send `rows`.

A request's inputs (photo rows' `image` and `mask`, a job's `lora`) follow the same rule (`input_location`): a
local path under a local root, or an `s3://bucket/key` under one of the tenant's s3 roots, never another URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

REFUSED = "request: field 'source': not under a source root of this tenant"


def _s3_parts(location: str) -> tuple[str, str] | None:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return (bucket, key) if bucket else None


def _s3_allowed(source: str, roots: Iterable[str]) -> bool:
    parts = _s3_parts(source)
    if parts is None or not parts[1]:
        return False
    bucket, key = parts
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return False
    for root in roots:
        if not root.startswith("s3://"):
            continue
        root_parts = _s3_parts(root)
        if root_parts is None:
            continue
        root_bucket, prefix = root_parts
        if root_bucket == bucket and key.startswith(prefix if not prefix or prefix.endswith("/") else prefix + "/"):
            return True
    return False


def _local(source: str, roots: Iterable[str]) -> str | None:
    if "\0" in source or not os.path.isabs(source):
        return None
    real = Path(os.path.realpath(source))
    for root in roots:
        if root.startswith("s3://") or not os.path.isabs(root):
            continue
        if real.is_relative_to(os.path.realpath(root)):
            return str(real)
    return None


def allowed_source(source: str, roots: Iterable[str]) -> str | None:
    """`source` as it is to be read (a local path resolved, so what is opened is what was checked) if it lies
    under one of `roots`; else None, and the caller answers `REFUSED`."""
    roots = tuple(roots)
    if source.startswith("s3://"):
        return source if _s3_allowed(source, roots) else None
    return _local(source, roots)


class LocalPathRefused(ValueError):
    """Why `local_input` refused a path: `why` is "url", "nul", "no root" or "outside"; each caller words it."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def local_input(value: str, roots: Sequence[str]) -> str:
    """A request's path to a local file (a product photo, a mask, a LoRA), resolved and under one of the local
    `roots`: absolute, or relative to the first of them (`input_location` takes s3 keys as well). URLs of any
    scheme and NUL bytes are refused before any file is touched; what is opened later is the resolved path that
    was checked."""
    text = value.strip()
    if "://" in text or text.lower().startswith(("http:", "https:", "s3:", "file:", "data:")):
        raise LocalPathRefused("url")
    if "\x00" in text:
        raise LocalPathRefused("nul")
    local = [root for root in roots if os.path.isabs(root)]
    if not local:
        raise LocalPathRefused("no root")
    found = allowed_source(text if os.path.isabs(text) else os.path.join(local[0], text), local)
    if found is None:
        raise LocalPathRefused("outside")
    return found


def input_location(value: str, roots: Sequence[str]) -> str:
    """A request's input (a product photo, a mask, a LoRA) as it is to be read: an `s3://bucket/key` under one of the
    tenant's s3 `roots` (the rule of `source`, `allowed_source`), else a local path as `local_input` takes it.
    Raises LocalPathRefused ("outside" for an s3 key under no s3 root, whatever the object holds)."""
    text = value.strip()
    if text.startswith("s3://"):
        if "\x00" in text:
            raise LocalPathRefused("nul")
        if allowed_source(text, roots) is None:
            raise LocalPathRefused("outside")
        return text
    return local_input(text, roots)
