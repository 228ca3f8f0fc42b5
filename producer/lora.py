"""A job's brand LoRA (issue 25), checked at submit: which file it is, that it is a LoRA, and its sha256.

The `lora` option names a `.safetensors` file under the operator's LoRA directory (PIXELMILL_LORA_DIR) or under one
of the submitting tenant's source roots (`pixelmill tenants set NAME --source-root DIR`), never a URL nor any other
path: symlinks and `..` are resolved before the comparison (producer/source_roots.py). A relative path is looked up
in PIXELMILL_LORA_DIR, else under the tenant's first local root. The file must be at most PIXELMILL_LORA_MAX_BYTES,
have a well-formed safetensors header (read without loading any tensor) naming LoRA weights (`lora` in a tensor's
name: the kohya, diffusers and peft layouts all have it); its sha256 goes into every item's identity and the worker
checks it again before loading, so what runs is what was checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from producer.source_roots import LocalPathRefused, local_input

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
        return local_input(text, [*([lora_dir] if lora_dir else []), *roots])
    except LocalPathRefused as refused:
        raise LoraProblem(
            {
                "url": f"{text[:80]!r} is a URL; give a .safetensors file under PIXELMILL_LORA_DIR or an input root",
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


def check_lora(value: str, scale: float, roots: Sequence[str], *, lora_dir: str | None, max_bytes: int) -> CheckedLora:
    """The LoRA at `value` (see the module's rules), or LoraProblem saying what is wrong."""
    path = _resolve(value, roots, lora_dir)
    if not path.endswith(".safetensors"):
        raise LoraProblem(f"{value[:200]!r} is not a .safetensors file (pickled weights are never loaded)")
    if not os.path.isfile(path):
        raise LoraProblem(f"{value[:200]!r} does not exist or is not a regular file")
    if os.path.getsize(path) > max_bytes:
        raise LoraProblem(f"is over {max_bytes:,} bytes; raise PIXELMILL_LORA_MAX_BYTES if it is right")
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        head = stream.read(8 + HEADER_MAX)
        if (problem := _header_problem(head)) is not None:
            raise LoraProblem(problem)
        digest.update(head)
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return CheckedLora(path, digest.hexdigest(), scale)
