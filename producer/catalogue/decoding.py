"""Bytes before they are text: byte-order marks, the first bytes of files that are no text (a workbook, gzip),
UTF-16 recoded to UTF-8 lines, and read errors as problems."""

from __future__ import annotations

import codecs
from typing import IO

BOM = b"\xef\xbb\xbf"


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


SPREADSHEET = "save it from the spreadsheet as CSV (File > Save As / Download > .csv)"


MAGIC = {  # the first bytes of files that are no text: what the file is and what to do
    b"PK\x03\x04": f"this is a ZIP archive, such as an Excel (.xlsx), Numbers or LibreOffice workbook: {SPREADSHEET}",
    b"\xd0\xcf\x11\xe0": f"this is an old Excel workbook (.xls): {SPREADSHEET}",
    b"\x1f\x8b": "this is gzip-compressed: name it .csv.gz (or .jsonl.gz)",
}


def io_problem(exc: BaseException) -> str:
    """A read error (truncated or corrupt gzip, disk) as a problem message."""
    return (
        f"could not read the file ({type(exc).__name__}: {exc}); if it is gzip-compressed, check that it is "
        "complete (gzip -t)"
    )


class Recoded:
    """A UTF-16 stream read as UTF-8 lines split at "\\n", so the reader's caps, line numbers and hot loop work
    on it as on any file. Decodes 64 KiB at a time: memory stays flat."""

    def __init__(self, stream: IO[bytes], encoding: str) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder(encoding)()
        self.buffer, self.pos, self.eof = b"", 0, False

    def readline(self, limit: int) -> bytes:
        """The next line (with its "\\n"), at most `limit` bytes; b"" at the end."""
        buffer, pos = self.buffer, self.pos
        while True:
            cut = buffer.find(b"\n", pos, pos + limit)
            if cut >= 0:
                end = cut + 1
                break
            if len(buffer) - pos >= limit or self.eof:
                end = min(pos + limit, len(buffer))
                break
            chunk = self.stream.read(1 << 16)
            self.eof = not chunk
            buffer = buffer[pos:] + self.decoder.decode(chunk, final=self.eof).encode()
            pos = 0
        self.buffer, self.pos = buffer, end
        return buffer[pos:end]
