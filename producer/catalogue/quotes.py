"""Where the quoted cells of a CSV record open and close, as the csv module reads them with strict=True: used
only to locate a quoting error or a stray quote, never per row."""

from __future__ import annotations

from typing import NamedTuple


class QuoteSpan(Exception):
    """A quoted CSV cell ran over the span caps: likely a stray quote."""

    def __init__(self, line: int, column: int, message: str) -> None:
        """Where the cell opens (physical line, 0-based column) and what to say."""
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


class Quoted(NamedTuple):
    """One quoted cell of a CSV record, found by `quoted_cells`."""

    line: int  # 0-based line of the record on which the cell opens
    column: int  # 0-based
    start: int  # character offset of the opening quote in the record
    end: int  # offset just past the closing quote; -1: still open at the end of the text


def quoted_cells(text: str, delimiter: str, line: int = 0, column: int = 0) -> tuple[list[Quoted], int | None]:
    """The quoted cells of `text` (a CSV record, or its lines so far, or its tail from a cell's start on line
    `line`, column `column`) as the csv module reads them with strict=True, and the index of the first one
    followed by something other than a delimiter or a line end (None: none is). Python-level: only called to
    locate an error or to check an open cell's span, never per row."""
    found: list[Quoted] = []
    i = 0
    n = len(text)
    at_start = True
    while i < n:
        char = text[i]
        if at_start and char == '"':
            opened, start = line, i
            i += 1
            while True:
                j = text.find('"', i)
                if j < 0:
                    found.append(Quoted(opened, column, start, -1))
                    return found, None
                line += text.count("\n", i, j)
                if text.startswith('"', j + 1):
                    i = j + 2
                    continue
                i = j + 1
                break
            found.append(Quoted(opened, column, start, i))
            if i < n and text[i] not in (delimiter, "\r", "\n"):
                return found, len(found) - 1
            at_start = False
            continue
        if char == delimiter:
            column += 1
            at_start = True
        elif char == "\n":
            line += 1
            column = 0
            at_start = True
        else:
            at_start = False
        i += 1
    return found, None


def key_like(text: str) -> bool:
    """Looks like an item key (`MUG-001`, `classic-mug`), not the first words of a sentence: no spaces, and a
    digit, `-` or `_` in it."""
    return bool(text) and not any(c.isspace() for c in text) and any(c.isdigit() or c in "-_" for c in text)
