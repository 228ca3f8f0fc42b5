"""Catalogue files: a path, a `.gz` path or `-` (stdin) opened as bytes, its format told by its name (or sniffed
on stdin), and read by the CSV or JSONL reader. File types people export catalogues in are refused with what
to do instead."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from producer.catalogue.csv_reader import CsvReader
from producer.catalogue.decoding import BOM, SPREADSHEET
from producer.catalogue.defaults import Defaults, Limits
from producer.catalogue.jsonl_reader import JsonlReader
from producer.catalogue.problems import UsageError
from producer.catalogue.rows import Row, Stats

Format = Literal["csv", "jsonl"]
Source = Path | str  # a path, a `.gz` path, or "-" for stdin


_RENAME = {  # what to do with a file type people export catalogues in
    ".tsv": "; a tab-separated file is read as CSV: rename it .csv and give --delimiter tab",
    ".txt": "; rename it .csv and give its separator (--delimiter tab for Excel's 'Unicode Text', with --encoding "
    "utf-16)",
    ".xlsx": f"; {SPREADSHEET}",
    ".xls": f"; {SPREADSHEET}",
    ".ods": f"; {SPREADSHEET}",
    ".numbers": f"; {SPREADSHEET}",
    ".json": "; write one object per line as .jsonl (e.g. jq -c '.[]' file.json > file.jsonl)",
}


def _format_of(name: str) -> Format | None:
    """The format a file name declares, or None for an unsupported one."""
    lower = name.lower()
    for suffix, kind in ((".csv", "csv"), (".jsonl", "jsonl"), (".csv.gz", "csv"), (".jsonl.gz", "jsonl")):
        if lower.endswith(suffix):
            return kind  # type: ignore[return-value]
    return None


def _sniff(stream: IO[bytes]) -> Format:
    """stdin without a declared format: JSONL if the first non-blank character opens an object or array."""
    if hasattr(stream, "peek"):
        head = stream.peek(4096)[:4096]
    elif stream.seekable():
        position = stream.tell()
        head = stream.read(4096)
        stream.seek(position)
    else:
        head = b""
    head = head.removeprefix(BOM).lstrip()
    return "jsonl" if head[:1] in (b"{", b"[") else "csv"


def _open(source: Source, fmt: Format | None) -> tuple[str, IO[bytes], Format, bool]:
    """(name for messages, binary stream, format, whether to close it) for a path, a `.gz` path or `-`."""
    if str(source) == "-":
        stream: IO[bytes] = sys.stdin.buffer
        return "<stdin>", stream, fmt or _sniff(stream), False
    path = Path(source)
    kind = fmt or _format_of(path.name)
    if kind is None:
        raise UsageError(
            f"{path}: unsupported catalogue type {''.join(path.suffixes) or path.name!r}; "
            "use .csv, .jsonl, .csv.gz, .jsonl.gz or - (stdin)" + _RENAME.get(path.suffix.lower(), "")
        )
    if path.name.lower().endswith(".gz"):
        return str(path), gzip.open(path, "rb"), kind, True  # type: ignore[return-value]
    return str(path), path.open("rb"), kind, True


def iter_catalogue(
    source: Source,
    defaults: Defaults,
    limits: Limits | None = None,  # None: the settings' defaults
    *,
    fmt: Format | None = None,  # None: told by the file name, then sniffed
    stats: Stats | None = None,  # filled in as rows are read (counts for the CLI's summary)
) -> Iterator[Row]:
    """Validated rows of the catalogue at `source` (a path, a `.gz` path, or `-` for stdin), as they are
    read. After the last row, raises CatalogueError listing every problem if there was any; once one is
    found no more rows are yielded. Insert the rows in one transaction and roll back on the error.
    `stats`, if given, is filled in (row and item counts, likely-truncated prompts)."""
    if str(source) != "-" and fmt is None and _format_of(Path(source).name) is None:
        _open(source, fmt)  # raises the UsageError now, not at the first next()
    return _read(source, defaults, limits or Limits(), fmt, stats if stats is not None else Stats())


def _read(source: Source, defaults: Defaults, limits: Limits, fmt: Format | None, stats: Stats) -> Iterator[Row]:
    """The generator behind `iter_catalogue`: the file is opened at the first next() and always closed."""
    name, stream, kind, close = _open(source, fmt)
    if kind == "jsonl" and (defaults.delimiter != "," or not defaults.encoding.startswith("utf-8")):
        if close:
            stream.close()
        raise UsageError(f"{name}: --delimiter and --encoding apply to CSV; JSONL is always UTF-8")
    reader = CsvReader if kind == "csv" else JsonlReader
    try:
        yield from reader(name, stream, defaults, limits, stats).rows()
    finally:
        if close:
            stream.close()


def read_catalogue(path: Source, defaults: Defaults, limits: Limits | None = None, **reading: Any) -> list[Row]:
    """Every row of the catalogue, or CatalogueError listing every problem found. Holds all rows: use
    `iter_catalogue` for large files (`reading`: its keyword options, `fmt` and `stats`)."""
    return list(iter_catalogue(path, defaults, limits, **reading))
