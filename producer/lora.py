"""A job's brand LoRA (issue 25), checked at submit: which file it is, that it is a LoRA, and its sha256.

The `lora` option names a `.safetensors` file under the operator's LoRA directory (PIXELMILL_LORA_DIR) or under one
of the submitting tenant's source roots (`pixelmill tenants set NAME --source-root DIR`), local or
`s3://bucket/prefix/` (an s3 key is read with the PIXELMILL_S3_* settings, contract/storage.py `S3Reader`), never
another URL nor any other path: symlinks and `..` are resolved before the comparison (producer/source_roots.py). A
relative path is looked up in PIXELMILL_LORA_DIR, else under the tenant's first local root. The file must be at most
PIXELMILL_LORA_MAX_BYTES, have a well-formed safetensors header (read without loading any tensor) naming LoRA
weights (`lora` in a tensor's name: the kohya, diffusers and peft layouts all have it); its sha256 goes into every
item's identity and the worker checks it again before loading, so what runs is what was checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from producer.source_roots import LocalPathRefused, input_location

if TYPE_CHECKING:
    from contract.settings import Settings

HEADER_MAX = 64 * 1024 * 1024  # a safetensors JSON header larger than this is not a LoRA's


class LoraProblem(ValueError):
    """Why the `lora` option cannot be used; the message names what to do."""


@dataclass(frozen=True)
class CheckedLora:
    """The LoRA as checked: the resolved path that was hashed, the sha256 of its bytes, and the job's scale."""

    path: str
    sha256: str
    scale: float


def _resolve(value: str, roots: Sequence[str], lora_dir: str | None) -> str:
    text = value.strip()
    try:
        return input_location(text, [*([lora_dir] if lora_dir else []), *roots])
    except LocalPathRefused as refused:
        raise LoraProblem(
            {
                "url": f"{text[:80]!r} is a URL; give a .safetensors file under PIXELMILL_LORA_DIR or an input root "
                "(an s3:// key under the tenant's s3 root)",
                "nul": "contains a NUL byte",
                "no root": "no LoRA may be used: an operator sets PIXELMILL_LORA_DIR or a tenant's input root "
                "(`pixelmill tenants set NAME --source-root DIR`)",
                "outside": f"{text[:200]!r} is not under PIXELMILL_LORA_DIR nor an input root of this tenant",
            }[refused.why]
        ) from None


def _header_problem(data: bytes) -> str | None:
    if len(data) < 8:
        return "is not a safetensors file (too short)"
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(HEADER_MAX, len(data) - 8):
        return "is not a safetensors file (its header length is impossible)"
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError):
        return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict) or not any("lora" in name.lower() for name in header if name != "__metadata__"):
        return "holds no LoRA weights (no tensor name contains 'lora')"
    return None


def check_lora(
    value: str,
    scale: float,
    roots: Sequence[str],
    *,
    lora_dir: str | None,
    max_bytes: int,
    settings: Settings | None = None,
) -> CheckedLora:
    """The LoRA at `value` (see the module's rules), or LoraProblem saying what is wrong. `settings`: the S3
    configuration an s3:// LoRA is read with (None: s3 LoRAs are refused)."""
    path = _resolve(value, roots, lora_dir)
    if not path.endswith(".safetensors"):
        raise LoraProblem(f"{value[:200]!r} is not a .safetensors file (pickled weights are never loaded)")
    if path.startswith("s3://"):
        with tempfile.TemporaryFile() as stream:
            _fetch(path, stream, max_bytes, settings)
            stream.seek(0)
            return CheckedLora(path, _hash_checked(stream), scale)
    if not os.path.isfile(path):
        raise LoraProblem(f"{value[:200]!r} does not exist or is not a regular file")
    if os.path.getsize(path) > max_bytes:
        raise LoraProblem(_too_large(max_bytes))
    with open(path, "rb") as stream:
        return CheckedLora(path, _hash_checked(stream), scale)


def _too_large(max_bytes: int) -> str:
    return f"is over {max_bytes:,} bytes; raise PIXELMILL_LORA_MAX_BYTES if it is right"


def _fetch(location: str, stream: IO[bytes], max_bytes: int, settings: Settings | None) -> None:
    from contract.storage import FetchError, S3Reader

    if settings is None:
        raise LoraProblem(f"{location[:200]!r}: s3 LoRAs are not read here (no S3 settings); give a local path")
    try:
        S3Reader(settings).copy(location, stream, max_bytes)
    except FetchError as exc:
        raise LoraProblem(
            {"missing": f"{location[:200]!r} does not exist", "too large": _too_large(max_bytes)}.get(
                exc.why, f"{location[:200]!r} cannot be read: {exc.detail}"
            )
        ) from None


def _hash_checked(stream: IO[bytes]) -> str:
    """The sha256 of the stream's bytes, once its header is a LoRA's (else LoraProblem)."""
    digest = hashlib.sha256()
    head = stream.read(8 + HEADER_MAX)
    if (problem := _header_problem(head)) is not None:
        raise LoraProblem(problem)
    digest.update(head)
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()
