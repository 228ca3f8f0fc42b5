"""The strict CSV reader: bounded binary lines, decoded in the job's encoding, read by the csv module with strict
quoting; every problem carries the physical line its record starts on, and a stray or unclosed quote is
named where its cell opens."""

from __future__ import annotations

import csv
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import IO, NoReturn

from producer.catalogue.decoding import BOM, MAGIC, UTF16_BOMS, Recoded, io_problem
from producer.catalogue.defaults import Defaults, Limits
from producer.catalogue.problems import ENV, CatalogueError, Problem
from producer.catalogue.quotes import QuoteSpan, key_like, quoted_cells
from producer.catalogue.rows import ABSENT, Row, Stats, Stop, Validator, finish
from producer.catalogue.values import excerpt

_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


class CsvReader:
    """Streams CSV records from bounded binary lines; problems carry the physical line a record starts on.
    Strict quoting: a quoted cell must close, and close right before a delimiter or a line end; one that
    stays open over `Limits.quoted_lines` lines or `Limits.cell_bytes` bytes is called a stray quote."""

    def __init__(self, name: str, stream: IO[bytes], defaults: Defaults, limits: Limits, stats: Stats) -> None:
        self.name, self.stream, self.defaults, self.limits, self.stats = name, stream, defaults, limits, stats
        self.line = 0  # physical lines read
        self.progress = [0, 0]  # [bytes of the record being read, the line it starts on]
        self.record_first = b""  # first physical line of the record being read
        self.record_more: list[bytes] = []  # its further lines (only a quoted cell spanning lines makes any)
        # Where _check_span resumes: (record's first line, line index in the record, character offset in that
        # line, column) of the last open cell, so a record of many multi-line cells is scanned once, not per check.
        self.span_at = (0, 0, 0, 0)
        self.text_encoding = "utf-8"  # what the lines are in once read (UTF-16 is recoded to UTF-8)
        self.flagged: dict[int, tuple[str, str]] = {}  # line -> (marker in the decoded text, message)
        self.validator: Validator | None = None
        self.early: list[Problem] = []  # problems before the header is known

    def _stream(self) -> tuple[Callable[[int], bytes], str]:
        """(readline, encoding of the lines it returns): UTF-16 is recoded, everything else decoded per line."""
        encoding = self.defaults.encoding
        if encoding.startswith("utf-16"):
            return Recoded(self.stream, encoding).readline, "utf-8"
        return self.stream.readline, "utf-8" if encoding == "utf-8-sig" else encoding

    def _first_line(self, raw: bytes) -> bytes:
        """The first line without a UTF-8 BOM; a byte-order mark that contradicts --encoding stops the read."""
        encoding = self.defaults.encoding
        for magic, what in MAGIC.items():
            if raw.startswith(magic):
                self._fatal(1, None, what)
        if raw.startswith(UTF16_BOMS) and not encoding.startswith("utf-16"):
            self._fatal(
                1,
                None,
                "the file is UTF-16 (it starts with a UTF-16 byte-order mark), as Excel's 'Unicode Text' export "
                "writes it: give --encoding utf-16 (and --delimiter tab, its separator)",
            )
        if raw.startswith(BOM):
            if not encoding.startswith("utf-8"):
                self._fatal(
                    1,
                    None,
                    f"the file starts with a UTF-8 byte-order mark: it is UTF-8, not {encoding}; drop --encoding",
                )
            return raw[3:]
        return raw

    def _lines(self) -> Iterator[str]:
        """Decoded physical lines, never longer than the row cap; a record over the cap stops reading.
        The hot loop of the reader: locals only; a line that continues a record is checked for a stray quote."""
        readline, encoding = self._stream()
        self.text_encoding = encoding
        cap, state, flagged, more = self.limits.row_bytes, self.progress, self.flagged, self.record_more
        span_lines, cell_cap = self.limits.quoted_lines, self.limits.cell_bytes
        span_start, bytes_at = 0, cell_cap
        number = 0
        while True:
            try:
                raw = readline(cap + 1)
            except UnicodeDecodeError as exc:
                self._fatal(
                    number + 1,
                    None,
                    f"not valid {self.defaults.encoding} ({exc.reason}); is --encoding right? Excel's "
                    "'Unicode Text' is utf-16, its 'CSV' cp1252 or utf-8",
                )
            if not raw:
                self.line = number
                return
            number += 1
            if number == 1:
                raw = self._first_line(raw)
            size = state[0]
            if not size:
                self.record_first = raw
                state[1] = span_start = number
                bytes_at = cell_cap
                if more:
                    more.clear()
            else:
                more.append(raw)
                if number - span_start >= span_lines or size + len(raw) > bytes_at:
                    span_start, bytes_at = self._check_span(number, size + len(raw))
            size += len(raw)
            if size > cap:
                self.line = number
                raise _RecordTooLong
            state[0] = size
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                text = raw.decode(encoding, errors="replace")
                flagged[number] = (
                    "\ufffd",
                    f"not valid {self.defaults.encoding} (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the "
                    "line); save the file as UTF-8, or give its encoding with --encoding (e.g. --encoding cp1252 "
                    "for Excel's CSV on Windows)",
                )
            if b"\x00" in raw:
                flagged.setdefault(
                    number,
                    (
                        "\x00",
                        "contains a NUL byte, which PostgreSQL cannot store; remove it (is this really a text file?)",
                    ),
                )
            yield text

    def _record_text(self, last: bool = True) -> str:
        """The current record's lines so far (without the line just read unless `last`), decoded."""
        lines = self.record_more if last else self.record_more[:-1]
        return (self.record_first + b"".join(lines)).decode(self.text_encoding, errors="replace")

    def _check_span(self, number: int, size: int) -> tuple[int, int]:
        """Line `number` continues a record over a threshold: raise QuoteSpan if the quoted cell still open
        has spanned too many lines or bytes, else return the next thresholds (line it opened on, record bytes)."""
        cap, cell_cap, start = self.limits.quoted_lines, self.limits.cell_bytes, self.progress[1]
        first, index, offset, column = self.span_at if self.span_at[0] == start else (start, 0, 0, 0)
        lines = ([self.record_first] if index == 0 else []) + self.record_more[max(index - 1, 0) : -1]
        text = b"".join(lines).decode(self.text_encoding, errors="replace")[offset:]
        found, _bad = quoted_cells(text, self.defaults.delimiter, index, column)
        if not found or found[-1].end != -1:
            return number, size + cell_cap
        cell = found[-1]
        line_start = text.rfind("\n", 0, cell.start) + 1
        self.span_at = (start, cell.line, cell.start - line_start + (offset if not line_start else 0), cell.column)
        opens = start + cell.line
        span = number - opens + 1
        if span > cap:
            raise QuoteSpan(
                opens,
                cell.column,
                f"unclosed quote? likely a stray quote: the quoted cell that opens here is still open on line {number} "
                f'({span} lines). A cell that opens with " must close with " (a quote inside a cell is written ""); '
                f"if the cell really spans more than {cap} lines, raise {ENV['quoted_lines']}",
            )
        cell_bytes = len(text[cell.start :].encode()) + len(self.record_more[-1])
        if cell_bytes > cell_cap:
            raise QuoteSpan(
                opens,
                cell.column,
                f"unclosed quote? likely a stray quote: the quoted cell that opens here runs over {cell_cap:,} "
                f'bytes by line {number} (the cap per cell, {ENV["cell_bytes"]}). A cell that opens with " must '
                'close with " (a quote inside a cell is written "")',
            )
        return opens, size + cell_cap - cell_bytes + 1

    def _problem(self, line: int, field: str | None, message: str) -> None:
        """A problem, before or after the header made the validator."""
        if self.validator is not None:
            self.validator.problem(line, field, message)
        else:
            self.early.append(Problem(self.name, line, field, message))

    def _fatal(self, line: int, field: str | None, message: str) -> NoReturn:
        """A problem that ends the read."""
        self._problem(line, field, message)
        raise Stop

    @staticmethod
    def _column(header: Sequence[str], index: int) -> str | None:
        """The name of column `index` (None while the header itself is read)."""
        if not header:
            return None
        return header[index] if index < len(header) else f"#{index + 1}"

    def _open_cell(self, header: Sequence[str], multiline: bool = False) -> tuple[int, str | None] | None:
        """(line, column) where the current record's quoted cell opens: the one still open at the end of what
        was read, or with `multiline` the first one that spans lines."""
        text = self._record_text()
        found, _bad = quoted_cells(text, self.defaults.delimiter)
        for cell in found:
            if cell.end == -1 or (multiline and "\n" in text[cell.start : cell.end].rstrip("\r\n")):
                return self.progress[1] + cell.line, self._column(header, cell.column)
        return None

    def rows(self) -> Iterator[Row]:
        """Validated rows; CatalogueError at the end if anything was wrong."""
        records = csv.reader(self._lines(), delimiter=self.defaults.delimiter, strict=True)
        state = self.progress
        header: list[str] = []
        try:
            try:
                first = next(records, None)
                if first is None:
                    self._fatal(1, None, "catalogue has no rows (the file is empty)")
                if not first:
                    self._fatal(1, None, "the first line is blank; it must be the header (the column names)")
                header = [name.strip() for name in first]
                self._check_header(header)
                validator = self.validator
                assert validator is not None
                fast, full, problems = validator.fast, validator._row, validator.problems
                columns = len(header)
                big = self.limits.cell_bytes
                flagged = self.flagged
                flagged.clear()
                state[0] = 0
                for cells in records:
                    size, start, state[0] = state[0], state[1], 0
                    if flagged:
                        self._report_flagged(header, cells)
                        continue
                    if not cells:
                        continue  # blank line
                    if len(cells) != columns:
                        if self._misfit(header, len(cells), start, records.line_num):
                            continue
                        if not any(map(str.strip, cells)):
                            continue  # a row of empty cells (",,,"): Excel's blank row
                        self._cut_short(start, len(cells), columns)
                        if size > big and validator.big_cells(start, cells):
                            continue
                        row = full(start, [*cells, *[ABSENT] * (columns - len(cells))])
                    elif size > big and validator.big_cells(start, cells):
                        continue
                    elif records.line_num > start and self._swallowed(header, records.line_num):
                        continue
                    else:
                        row = fast(start, cells) if fast is not None else None
                        if row is None:
                            if not any(map(str.strip, cells)):
                                continue  # a row of empty cells (",,,"): Excel's blank row
                            row = full(start, cells)
                    if row is not None and not problems:
                        yield row
            except _RecordTooLong:
                self._too_long(state[1], header)
            except QuoteSpan as exc:
                self._fatal(exc.line, self._column(header, exc.column), exc.message)
            except csv.Error as exc:
                self._csv_failure(str(exc), header)
            except (OSError, EOFError, zlib.error) as exc:
                self._fatal(max(state[1], 1), None, io_problem(exc))
        except Stop:
            pass
        if self.validator is None:
            raise CatalogueError(self.early)
        finish(self.validator, self.line)

    def _misfit(self, header: Sequence[str], cells: int, start: int, end: int) -> bool:
        """A record of the wrong width that spans lines (an unclosed quote) or has too many cells: reported (True).
        A short one-line record is not: it is read with its absent cells missing."""
        columns = len(header)
        if end > start:
            line, field = self._open_cell(header, multiline=True) or (start, None)
            self._problem(
                line,
                field,
                f"unclosed quote? the quoted cell that opens here runs "
                f"to line {end} and the row has {cells} cells for {columns} "
                'columns. A cell that opens with " must close with ", or the rows after '
                'it are read as part of it (a quote inside a cell is written "")',
            )
            return True
        if cells > columns:
            self._problem(
                start,
                None,
                f"row has {cells} cells but the header has {columns} "
                "columns (a delimiter inside a value needs the value in double quotes)",
            )
            return True
        return False

    def _cut_short(self, start: int, cells: int, columns: int) -> None:
        """A short last row in a file that ends without a line break: the export was cut mid-row, so its last
        cell is likely cut too. Reported, rather than read with a truncated value."""
        last = self.record_more[-1] if self.record_more else self.record_first
        if last.endswith((b"\n", b"\r")):
            return
        self._problem(
            start,
            None,
            f"the last row has {cells} of {columns} cells and the file ends without a line break: it looks cut "
            "short (a truncated export or download); export the file again",
        )

    def _swallowed(self, header: Sequence[str], end: int) -> bool:
        """A record spanning lines each of which, read on its own with its quotes as text, is a whole row of
        the header's width, the later ones with a key-like cell as their key: two stray quotes
        (`"Mug` ... `27"`) made one cell of the rows between them, which strict CSV would read silently.
        A real multi-line cell (a description) rarely has that shape. Reported (True) where the span opens."""
        delimiter, columns = self.defaults.delimiter, len(header)
        lines = self._record_text().rstrip("\r\n").split("\n")
        key = header.index(self.defaults.key_column) if self.defaults.key_column in header else -1
        if len(lines) < 2 or key < 0:
            return False
        for number, text in enumerate(lines):
            try:
                cells = next(csv.reader([text.rstrip("\r")], delimiter=delimiter, quoting=csv.QUOTE_NONE))
            except csv.Error:  # a lone "\r" inside the cell: not a row of its own
                return False
            if len(cells) != columns or (number and not key_like(cells[key])):
                return False
        start = self.progress[1]
        line, field = self._open_cell(header, multiline=True) or (start, None)
        self._problem(
            line,
            field,
            f"unclosed quote? likely a stray quote: the quoted cell that opens here runs to line {end}, and each "
            f"of lines {start}-{end} is a whole row of {columns} cells on its own, so the rows between would be "
            'lost in one cell. A cell that opens with " must close with " (a quote inside a cell is written "")',
        )
        return True

    def _csv_failure(self, text: str, header: Sequence[str]) -> NoReturn:
        """A csv.Error in the record being read; a quoting error names the line and column where the
        offending quoted cell opens."""
        start = self.progress[1]
        unclosed, after = "unexpected end of data" in text, "expected after" in text
        if not (unclosed or after):
            self._fatal(max(start, 1), None, _csv_error(text, self.limits))
        record = self._record_text()
        found, bad = quoted_cells(record, self.defaults.delimiter)
        cell = found[bad] if after and bad is not None else (found[-1] if unclosed and found else None)
        line, field = (start + cell.line, self._column(header, cell.column)) if cell else (start, None)
        where = "" if header or cell is None else f" (column {cell.column + 1} of the header)"
        if unclosed:
            last = start + record.count("\n", 0, len(record.rstrip("\r\n")))
            self._fatal(
                line,
                field,
                f'unclosed quote{where}: the cell that opens with " here must close with ", but the file ends '
                f'(line {last}) first; add the closing " (a quote inside a cell is written "")',
            )
        shown = excerpt(record[cell.start : cell.end + 12], 50) if cell else ""
        if cell is not None and "\n" in record[cell.start : cell.end]:
            self._fatal(
                line,
                field,
                f"unclosed quote? the quoted cell that opens here runs to line {start + record.count(chr(10))}, "
                f'where a " closes it and text follows ({shown}). A cell that opens with " must close with " '
                "before the next delimiter, or the rows after it are read as part of it (a quote inside a cell "
                'is written "")',
            )
        self._fatal(
            line,
            field,
            f'text after the closing quote of a quoted cell{where}: {shown}. A cell that opens with " ends at the '
            'next lone ", so a stray quote cuts it short: quote the whole cell and write each quote inside it '
            'as "", e.g. "12"" pipe, matt"',
        )

    def _too_long(self, start: int, header: Sequence[str]) -> NoReturn:
        """A record over the row cap: most often an unclosed quote, else a really long row."""
        cap, env = self.limits.row_bytes, ENV["row_bytes"]
        if self.line > start:
            line, field = self._open_cell(header) or (start, None)
            self._fatal(
                line,
                field,
                f"unclosed quote? the row that starts here runs past line {self.line} and "
                f'over {cap:,} bytes. A cell that opens with " must close with ", or the rows after it '
                f"are read as part of it; if the row really is this long, raise {env}",
            )
        what = "the header" if start == 1 else "the row"
        self._fatal(
            start,
            None,
            f"{what} is longer than {cap:,} bytes (the cap per row); stopped reading here. Shorten it or raise {env}",
        )

    def _check_header(self, header: list[str]) -> None:
        """Linear checks of the header, then the validator. A header over the column cap stops the read
        before anything per column is built."""
        if self.flagged:
            marker, message = self.flagged[min(self.flagged)]
            self._fatal(1, None, f"header: {message}")
        cap = self.limits.columns
        if len(header) > cap:
            self._fatal(
                1,
                None,
                f"the header has {len(header):,} columns, over the cap of {cap:,}; drop unused "
                f"columns or raise {ENV['columns']}",
            )
        if len(header) == 1 and self.defaults.key_column not in header:
            for char, what in _DELIMITERS.items():
                if char in header[0] and char != self.defaults.delimiter:
                    shown = header[0] if len(header[0]) <= 80 else header[0][:80] + "..."
                    option = "tab" if char == "\t" else repr(char)
                    self._fatal(
                        1,
                        None,
                        f"the header is one column {shown!r}: this looks like a {what} ({char!r})"
                        f"-separated file; pixelmill reads comma-separated CSV unless told: give --delimiter {option} "
                        "(or save it with commas)",
                    )
        self.validator = Validator(self.name, self.defaults, self.limits, header, 1, self.stats)
        self.validator.problems[:0] = self.early
        for name, count in Counter(header).items():
            if count > 1 and name:  # unnamed columns (Excel's trailing ",,") cannot be used, so never clash
                self.validator.problem(
                    1, name, f"column appears {count} times in the header; rename or drop the extra ones"
                )

    def _report_flagged(self, header: Sequence[str], cells: Sequence[str]) -> None:
        """Bad bytes in the record just read: one problem per flagged line, naming the column if it can."""
        for line, (marker, message) in sorted(self.flagged.items()):
            hits = [i for i, cell in enumerate(cells) if marker in cell]
            field = header[hits[0]] if hits and hits[0] < len(header) else None
            self._problem(line, field, message)
        self.flagged.clear()


def _csv_error(text: str, limits: Limits) -> str:
    """The csv module's error in the terms of the file."""
    if "field larger than field limit" in text:
        return (
            f"a cell is longer than {csv.field_size_limit():,} characters (the cap per cell is "
            f"{limits.cell_bytes:,} bytes, {ENV['cell_bytes']}); stopped reading here. An unclosed quote? "
            'A cell that opens with " must close with "'
        )
    if "new-line character" in text:
        return (
            "a carriage return (\\r) inside an unquoted cell; save the file with \\n or \\r\\n line "
            "endings, or quote the cell"
        )
    return f"CSV syntax error: {text}; check the quotes on this line"


class _RecordTooLong(Exception):
    """A CSV record ran over the row cap while its lines were being read."""
