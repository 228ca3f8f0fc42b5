"""Image encoding with the generation parameters embedded, so a file found on its own still says how it
was made (PNG text chunks; EXIF ImageDescription for WebP/JPEG), and with the provenance XMP (IPTC digital
source type: AI-generated) in every format: PNG iTXt `XML:com.adobe.xmp`, JPEG APP1, WebP XMP chunk."""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from worker.xmp import xmp_packet

_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131
_PNG_XMP_KEYWORD = "XML:com.adobe.xmp"  # the XMP spec's iTXt keyword (uncompressed, so readers find it)


def encode(
    image: Image.Image, fmt: str, metadata: dict[str, str], *, quality: int = 95, xmp: bytes | None = None
) -> bytes:
    """`image` as `fmt` bytes carrying `metadata` and an XMP packet (default: `xmp_packet(metadata)`)."""
    if xmp is None:
        xmp = xmp_packet(metadata)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        for key, value in metadata.items():
            info.add_itxt(key, value)  # iTXt: prompts may hold any Unicode
        info.add_itxt(_PNG_XMP_KEYWORD, xmp.decode("utf-8"))
        image.save(buf, format="PNG", pnginfo=info)
    elif fmt in ("webp", "jpeg"):
        exif = Image.Exif()
        exif[_EXIF_IMAGE_DESCRIPTION] = json.dumps(metadata, sort_keys=True)  # ASCII-escaped JSON
        exif[_EXIF_SOFTWARE] = "pixelmill"
        # Pillow writes `xmp` as a JPEG APP1 segment ("http://ns.adobe.com/xap/1.0/\0" + packet; ≤ 65,504
        # bytes, far more than ours) and as a WebP "XMP " chunk.
        image.convert("RGB").save(buf, format=fmt.upper(), quality=quality, exif=exif, xmp=xmp)
    else:
        raise ValueError(f"PIXELMILL_IMAGE_FORMAT: unsupported image format {fmt!r}")
    return buf.getvalue()
