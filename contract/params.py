"""Typed values both sides share: how an item is generated, image sizes, image formats and engine names.

The ledger stores generation parameters as JSON (`items.params`); everything in Python passes them around as
a `GenerationParams`, converted once at each boundary (`to_json` / `from_json`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

MIN_SIDE, MAX_SIDE = 64, 2048  # both sides multiples of 8 in this range: what every engine can render
_SIZE_RE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")

EngineName = Literal["auto", "torch", "tensorrt"]
ENGINE_NAMES: tuple[EngineName, ...] = ("auto", "torch", "tensorrt")

ImageFormatName = Literal["png", "webp", "jpeg"]


@dataclass(frozen=True)
class ImageFormat:
    name: ImageFormatName
    extension: str
    content_type: str


IMAGE_FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat("png", "png", "image/png"),
    "webp": ImageFormat("webp", "webp", "image/webp"),
    "jpeg": ImageFormat("jpeg", "jpg", "image/jpeg"),
}


ModeName = Literal["text", "background", "restyle"]
MODES: tuple[ModeName, ...] = ("text", "background", "restyle")  # what an item is made from (docs/catalogues.md)
STRENGTH_DEFAULT = 0.6  # restyle: how far img2img may move from the photo (0: not at all, 1: all the way)
LORA_SCALE_MAX = 2.0  # a brand LoRA's scale: 0 (the base model, exactly) to this


@dataclass(frozen=True)
class GenerationParams:
    """What one pipeline call shares: items with equal params can run in one GPU batch. `mode` is how an item is
    made (text only, or from its photo: `background`, `restyle`); `strength` is restyle's img2img strength; `lora`
    is a job's brand LoRA (the resolved path checked at submit), `lora_sha256` its bytes' hash, `lora_scale` its
    weight: items with different LoRAs never share a batch."""

    width: int  # pixels, a multiple of 8
    height: int
    steps: int  # scheduler steps
    guidance: float  # classifier-free guidance scale; 1.0 or less turns it off
    mode: ModeName = "text"
    strength: float | None = None
    lora: str | None = None
    lora_sha256: str | None = None
    lora_scale: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Text mode writes the four fields it always had, so rows stored before photo modes read the same."""
        photo = {"mode": None if self.mode == "text" else self.mode, "strength": self.strength, "lora": self.lora}
        if self.lora is not None:
            photo |= {"lora_sha256": self.lora_sha256, "lora_scale": self.lora_scale}
        plain = {"width": self.width, "height": self.height, "steps": self.steps, "guidance": self.guidance}
        return plain | {name: value for name, value in photo.items() if value is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenerationParams:
        mode = data.get("mode", "text")
        strength, lora_scale = data.get("strength"), data.get("lora_scale")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            steps=int(data["steps"]),
            guidance=float(data["guidance"]),
            mode=mode if mode in MODES else "text",
            strength=float(strength) if strength is not None else None,
            lora=data.get("lora"),
            lora_sha256=data.get("lora_sha256"),
            lora_scale=float(lora_scale) if lora_scale is not None else None,
        )

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(text: str) -> tuple[int, int]:
    """`"512x512"` -> (512, 512). Both sides multiples of 8 in 64..2048, which every engine can render."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 512x512, got {text!r}")
    width, height = int(match[1]), int(match[2])
    for side, value in (("width", width), ("height", height)):
        if not (MIN_SIDE <= value <= MAX_SIDE and value % 8 == 0):
            raise ValueError(f"{side} {value} must be a multiple of 8 from {MIN_SIDE} to {MAX_SIDE} (got {text!r})")
    return width, height
