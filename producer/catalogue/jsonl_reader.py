"""The JSONL reader: one JSON object per line, read with a bounded readline (a line over the cap is skipped,
never held); repeated names in an object are refused."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import IO

from producer.catalogue.decoding import BOM, MAGIC, UTF16_BOMS, io_problem
from producer.catalogue.defaults import Defaults, Limits
from producer.catalogue.mappings import check_first_object, json_row, json_validator
from producer.catalogue.problems import ENV
from producer.catalogue.rows import Row, Stats, Stop, finish


class _DuplicateField(ValueError):
    """A name repeated in one JSON object."""

    def __init__(self, name: str) -> None:
        """Keep the repeated name for the message."""
        super().__init__(name)
        self.name = name


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """object_pairs_hook: JSON allows repeated names and keeps the last; a catalogue row must not."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        name = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise _DuplicateField(name)
    return obj


_DECODE = json.JSONDecoder(object_pairs_hook=_unique_pairs).decode


class JsonlReader:
    """Streams JSONL lines read with a bounded readline: a line over the cap is skipped, never held."""

    def __init__(self, name: str, stream: IO[bytes], defaults: Defaults, limits: Limits, stats: Stats) -> None:
        self.name, self.stream, self.limits = name, stream, limits
        self.validator = json_validator(name, defaults, limits, stats)

    def rows(self) -> Iterator[Row]:
        """Validated rows; CatalogueError at the end if anything was wrong."""
        validator, limits = self.validator, self.limits
        readline, cap, cell_cap = self.stream.readline, limits.row_bytes, limits.cell_bytes
        number = 0
        first_data = True
        try:
            try:
                while True:
                    raw = readline(cap + 1)
                    if not raw:
                        break
                    number += 1
                    if number == 1 and raw.startswith(BOM):
                        raw = raw[3:]
                    elif number == 1:
                        self._binary(raw)
                    if len(raw) > cap and not raw.endswith(b"\n"):
                        self._skip_line()
                        validator.problem(
                            number,
                            None,
                            f"line is longer than {cap:,} bytes (the cap per JSONL "
                            f"line); it was skipped unread. Shorten it or raise {ENV['row_bytes']}",
                        )
                        first_data = False
                        continue
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError as exc:
                        validator.problem(
                            number,
                            None,
                            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                            f"{exc.start + 1} of the line); save the file as UTF-8",
                        )
                        first_data = False
                        continue
                    if not text or text.isspace():
                        continue
                    obj = self._decode(number, text, first_data)
                    if obj is not None and first_data:
                        check_first_object(validator, number, obj)
                    first_data = False
                    if obj is None:
                        continue
                    check = len(raw) > cell_cap or "\\u0000" in text
                    row = json_row(validator, number, obj, check)
                    if row is not None and not validator.problems:
                        yield row
            except (OSError, EOFError, zlib.error) as exc:
                validator.fatal(number or 1, None, io_problem(exc))
        except Stop:
            pass
        finish(validator, number)

    def _binary(self, raw: bytes) -> None:
        """A first line that shows the file is a workbook, gzip or UTF-16 stops the read with what to do."""
        for magic, what in MAGIC.items():
            if raw.startswith(magic):
                self.validator.fatal(1, None, what)
        if raw.startswith(UTF16_BOMS):
            self.validator.fatal(
                1,
                None,
                "the file is UTF-16 (it starts with a UTF-16 byte-order mark); JSONL is "
                "always UTF-8: save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8)",
            )

    def _skip_line(self) -> None:
        """Read past the rest of an over-long line in small pieces, so it is never held whole."""
        while True:
            chunk = self.stream.readline(64 * 1024)
            if not chunk or chunk.endswith(b"\n"):
                return

    def _decode(self, number: int, text: str, first: bool) -> dict[str, object] | None:
        """The line's object, or None after recording why not."""
        validator = self.validator
        hint = (
            "not one JSON object per line (JSONL); this looks like pretty-printed JSON or a JSON array: "
            "write one object per line, e.g. with jq -c '.[]'"
        )
        try:
            obj = _DECODE(text)
        except _DuplicateField as exc:
            validator.problem(
                number,
                exc.name,
                "appears more than once in the object (JSON would keep only the last value); remove the extra one",
            )
            return None
        except json.JSONDecodeError as exc:
            stripped = text.strip()
            if first and stripped[:1] in ("[", "{") and exc.msg != "Extra data":
                validator.fatal(number, None, hint)
            if exc.msg == "Extra data":
                validator.problem(
                    number,
                    None,
                    f"more than one JSON value on the line (the second starts at "
                    f"column {exc.colno}); write one object per line",
                )
            else:
                validator.problem(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})")
            return None
        except RecursionError:
            validator.problem(number, None, "not valid JSON for a catalogue: nested too deeply")
            return None
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            validator.problem(number, None, f"not valid JSON for a catalogue: {exc}")
            return None
        if not isinstance(obj, dict):
            if first and isinstance(obj, list):
                validator.fatal(number, None, hint)
            validator.problem(number, None, f"each line must be a JSON object, got {type(obj).__name__}")
            return None
        return obj
