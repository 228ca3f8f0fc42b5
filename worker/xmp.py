"""The XMP packet every image carries: the IPTC digital source type (AI-generated), `xmp:CreatorTool` and the
generation facts, and a reader for it. `worker/encode.py` embeds it; `worker/provenance.py` signs over it."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from importlib import metadata as importlib_metadata

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_PIXELMILL = "urn:pixelmill:xmp:1.0/"  # our own facts; a URN, since the project owns no domain to name

# encode's metadata keys that go into the XMP, under the pixelmill namespace (the prompts stay in the text
# chunks / EXIF as before: they can be long and are not provenance).
XMP_FACTS = ("model", "job", "item", "variant", "seed", "engine", "candidate", "steps", "guidance", "size")

_PREFIXES = {NS_X: "x", NS_RDF: "rdf", NS_IPTC_EXT: "Iptc4xmpExt", NS_XMP: "xmp", NS_PIXELMILL: "pixelmill"}
for _uri, _prefix in _PREFIXES.items():
    ET.register_namespace(_prefix, _uri)  # the conventional prefixes in what we write
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
_XPACKET_END = '<?xpacket end="r"?>'


@functools.cache
def pixelmill_version() -> str:
    try:
        return importlib_metadata.version("pixelmill")
    except importlib_metadata.PackageNotFoundError:  # running from a bare checkout
        return "0+unknown"


def xmp_packet(facts: Mapping[str, str]) -> bytes:
    """An XMP packet (UTF-8) with the IPTC digital source type, `xmp:CreatorTool` and the generation facts of
    `XMP_FACTS` found in `facts` (encode's metadata), as attributes of one rdf:Description."""
    meta = ET.Element(f"{{{NS_X}}}xmpmeta")
    rdf = ET.SubElement(meta, f"{{{NS_RDF}}}RDF")
    attrs = {
        f"{{{NS_RDF}}}about": "",
        f"{{{NS_IPTC_EXT}}}DigitalSourceType": DIGITAL_SOURCE_TYPE,
        f"{{{NS_XMP}}}CreatorTool": f"pixelmill {pixelmill_version()}",
    }
    attrs.update({f"{{{NS_PIXELMILL}}}{name}": str(facts[name]) for name in XMP_FACTS if name in facts})
    ET.SubElement(rdf, f"{{{NS_RDF}}}Description", attrs)
    body = ET.tostring(meta, encoding="unicode")
    return (_XPACKET_BEGIN + body + _XPACKET_END).encode("utf-8")


def read_xmp(xmp: bytes | str) -> dict[str, str]:
    """The rdf:Description attributes of an XMP packet as {"prefix:name": value} (for checks and tests; the
    standard prefixes above, the namespace URI in braces for any other)."""
    text = xmp.decode("utf-8") if isinstance(xmp, bytes) else xmp
    start, end = text.find("<x:xmpmeta"), text.rfind("</x:xmpmeta>")
    if start < 0 or end < 0:
        return {}
    root = ET.fromstring(text[start : end + len("</x:xmpmeta>")])
    out: dict[str, str] = {}
    for description in root.iter(f"{{{NS_RDF}}}Description"):
        for name, value in description.attrib.items():
            uri, _, local = name[1:].partition("}") if name.startswith("{") else ("", "", name)
            out[f"{_PREFIXES[uri]}:{local}" if uri in _PREFIXES else name] = value
    return out
