"""Image encoding with the generation parameters embedded, so a file found on its own still says how it
was made (PNG text chunks; EXIF ImageDescription for WebP/JPEG)."""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131


def encode(image: Image.Image, fmt: str, metadata: dict[str, str], *, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        for key, value in metadata.items():
            info.add_itxt(key, value)  # iTXt: prompts may hold any Unicode
        image.save(buf, format="PNG", pnginfo=info)
    elif fmt in ("webp", "jpeg"):
        exif = Image.Exif()
        exif[_EXIF_IMAGE_DESCRIPTION] = json.dumps(metadata, sort_keys=True)  # ASCII-escaped JSON
        exif[_EXIF_SOFTWARE] = "pixelmill"
        image.convert("RGB").save(buf, format=fmt.upper(), quality=quality, exif=exif)
    else:
        raise ValueError(f"PIXELMILL_IMAGE_FORMAT: unsupported image format {fmt!r}")
    return buf.getvalue()
