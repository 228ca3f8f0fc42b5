"""The worker's side of photo rows (issue 25): read an item's photo as checked at submit, place it on its canvas,
find the product mask, and put the product's own pixels back over what the engine generated.

`background` keeps the product pixel for pixel: the engine inpaints everything outside the product mask, then
`composite` pastes the photo's pixels back wherever the mask is set, so inside the mask the output's RGB bytes
ARE the photo's (whatever the engine did there). The product mask is, in this order:
1. the row's `mask` file: pixels of value >= 128 (as greyscale) are the product;
2. the photo's alpha channel: alpha >= 128 is the product (the RGB of those pixels is copied as stored);
3. an automatic mask for plain studio backgrounds: the background colour is the median of the photo's border
   pixels; every pixel within `TOLERANCE` of it (per channel) that is connected to the border is background,
   everything else is the product. Its limits: a product touching the border in the background's colour, or with
   holes of that colour open to the border, loses those parts; soft shadows and gradients darker than the
   tolerance count as product; a busy or textured background gives a mask of nearly the whole photo.
The photo sits centred on a canvas of its size rounded up to a multiple of 8 (producer/catalogue/inputs.py
`placement`); the padding is background.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

TOLERANCE = 24  # per channel, 0-255: how far a background pixel may be from the border's colour
THRESHOLD = 128  # mask and alpha values at or above this are the product


class InputChanged(ValueError):
    """The photo on disk is not the one checked at submit (its sha256 differs): generating from it would make an
    image the ledger does not describe. Final: a new submit checks the new photo."""


@dataclass(frozen=True)
class Placed:
    """An item's photo on its canvas: the RGB canvas (padding white) and the product mask (255 = product)."""

    canvas: PILImage.Image
    product: PILImage.Image

    def inpaint_mask(self) -> PILImage.Image:
        """What the inpainting pipeline repaints (white): everything but the product."""
        from PIL import ImageOps

        return ImageOps.invert(self.product)


def _open(path: str, sha256: str) -> PILImage.Image:
    from PIL import Image

    with open(path, "rb") as stream:
        data = stream.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InputChanged(f"input {path!r} changed since it was checked at submit (sha256 differs); submit again")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _binary(channel: PILImage.Image) -> PILImage.Image:
    return channel.point(lambda v: 255 if v >= THRESHOLD else 0)


def auto_mask(photo: PILImage.Image) -> PILImage.Image:
    """The product of a photo on a plain background (see the module's rule 3): 255 = product."""
    import numpy as np
    from PIL import Image, ImageDraw

    rgb = np.asarray(photo.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    near = (np.abs(rgb - colour).max(axis=2) <= TOLERANCE).astype(np.uint8) * 255
    padded = np.pad(near, 1, constant_values=255)  # a frame of background joins every border pixel
    flood = Image.fromarray(padded, "L").copy()  # fromarray may share the (read-only) array: fill a copy
    ImageDraw.floodfill(flood, (0, 0), 128)  # background connected to the border becomes 128
    reached = np.asarray(flood)[1:-1, 1:-1] == 128
    return Image.fromarray(np.where(reached, 0, 255).astype(np.uint8), "L")


def product_mask(photo: PILImage.Image, mask: PILImage.Image | None) -> PILImage.Image:
    """The product mask of the photo's own size (255 = product), by the module's rules 1 to 3."""
    if mask is not None:
        return _binary(mask.convert("L"))
    if photo.mode in ("RGBA", "LA", "PA") or "transparency" in photo.info:
        return _binary(photo.convert("RGBA").getchannel("A"))
    return auto_mask(photo)


def place(inputs: dict[str, Any], width: int, height: int, *, mode: str) -> Placed:
    """The item's photo (and, for background, its product mask) on a `width` x `height` canvas, centred."""
    from PIL import Image

    photo = _open(inputs["image"], inputs["image_sha256"])
    left, top = (width - photo.width) // 2, (height - photo.height) // 2
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(photo.convert("RGB"), (left, top))
    product = Image.new("L", (width, height), 0)
    if mode == "background":
        mask = _open(inputs["mask"], inputs["mask_sha256"]) if inputs.get("mask") else None
        product.paste(product_mask(photo, mask), (left, top))
    return Placed(canvas, product)


def composite(generated: PILImage.Image, placed: Placed) -> PILImage.Image:
    """`generated` with the photo's pixels pasted back wherever the product mask is set: there the RGB bytes are
    the photo's, exactly."""
    out = generated.convert("RGB").copy()
    out.paste(placed.canvas, (0, 0), placed.product)
    return out
