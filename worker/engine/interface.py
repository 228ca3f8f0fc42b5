"""What every engine takes and gives: `Request` (one GPU batch), `Result`, the `Engine` protocol, and the device.

Kept apart from the package's `__init__` (which loads engines) so the engine modules import this and never their
own package: no circle. Never imports torch at module level (the Celery parent imports it before fork).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from contract.identity import SEED_LIMIT
from contract.params import LORA_SCALE_MAX

if TYPE_CHECKING:
    import PIL.Image


@dataclass(frozen=True)
class Request:
    """One GPU batch. All items share size, steps and guidance; each has its own prompt and seed.

    ``negatives[i] == ""`` means no negative prompt. Not validated on construction, so that a
    malformed request reaches :meth:`Engine.generate` and fails there with a ``ValueError``.
    """

    prompts: list[str]
    negatives: list[str]
    seeds: list[int]
    width: int
    height: int
    steps: int
    guidance: float
    # Photo rows (worker/photos.py): `background` inpaints `images[i]` where `masks[i]` is white; `restyle` is
    # img2img of `images[i]` at `strength`. Text rows leave them as they are.
    mode: str = "text"
    strength: float | None = None
    images: list[PIL.Image.Image] | None = None
    masks: list[PIL.Image.Image] | None = None
    # A brand LoRA (checked at submit, producer/lora.py): its file, the sha256 the file must still have, its scale.
    lora: str | None = None
    lora_sha256: str | None = None
    lora_scale: float = 1.0

    def validate(self) -> None:
        """Raise ``ValueError`` if the request cannot be generated as one batch."""
        if not self.prompts:
            raise ValueError("request has no prompts")
        if not (len(self.prompts) == len(self.negatives) == len(self.seeds)):
            raise ValueError(
                f"prompts, negatives and seeds differ in length: "
                f"{len(self.prompts)}, {len(self.negatives)}, {len(self.seeds)}"
            )
        if not all(isinstance(p, str) for p in (*self.prompts, *self.negatives)):
            raise ValueError("prompts and negatives must be strings")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
                raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        # Latent diffusion models work on an 8x downsampled grid.
        for name, size in (("width", self.width), ("height", self.height)):
            if not isinstance(size, int) or size <= 0 or size % 8:
                raise ValueError(f"{name} must be a positive multiple of 8, got {size!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        guidance = self.guidance
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be finite and >= 0, got {self.guidance!r}")
        if self.lora is not None and not (self.lora_sha256 and 0 <= self.lora_scale <= LORA_SCALE_MAX):
            raise ValueError(f"a LoRA needs its sha256 and a scale from 0 to {LORA_SCALE_MAX:g}")
        if self.mode != "text":
            wanted = 2 if self.mode == "background" else 1
            given = [x for x in (self.images, self.masks if self.mode == "background" else None) if x is not None]
            if self.mode not in ("background", "restyle") or len(given) != wanted:
                raise ValueError(f"mode {self.mode!r} needs its images (and background its masks)")
            if any(len(x) != len(self.prompts) for x in given):
                raise ValueError("images and masks must have one entry per prompt")


@dataclass
class Result:
    """Images in request order (RGB) and seconds spent per stage, always including ``total``.

    ``engine_id`` names what actually generated them when that differs from the engine's own id (a TensorRT
    engine hands a shape it was not built for to its torch pipeline); None means ``Engine.engine_id``.
    """

    images: list[PIL.Image.Image]
    timings: dict[str, float]
    engine_id: str | None = None


class Engine(Protocol):
    """What the worker needs from an engine; ``engine_id`` is recorded on every image row."""

    engine_id: str
    model: str

    def generate(self, request: Request) -> Result: ...


def default_device() -> str:
    """``"cuda"`` if a GPU is usable, else ``"cpu"``; imports torch, so call it only after fork."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
