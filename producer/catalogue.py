"""Read and validate a product catalogue, all or nothing.

A catalogue is a `.csv` (header row, UTF-8, optional BOM) or a `.jsonl` (one JSON object per line) of
products. Each row becomes one `Row` whose prompt is the job's template rendered with the row's columns,
unless the row carries its own `prompt`. Optional columns override the job's defaults per row.

`read_catalogue` reports every problem in the file at once, each with its path, line and column, and
never returns a partial list: a job is submitted whole or not at all, so a fix-and-resubmit loop takes
one round instead of one per bad row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TypeVar

from pixelmill.identity import SEED_LIMIT
from pixelmill.params import parse_size

T = TypeVar("T")
MAX_LISTED = 50
MAX_KEY_LENGTH = 200
MAX_SEED = SEED_LIMIT - 1

_UINT_RE = re.compile(r"\s*\d+\s*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UsageError(ValueError):
    """A bad template or default value: the job's settings are wrong, not any one row."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalogue, located precisely enough to fix it in an editor."""

    path: str
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: "
        if self.field is not None:
            where += f"field {self.field!r}: "
        return where + self.message


class CatalogueError(Exception):
    """The catalogue has problems; all of them are in `problems`, the first 50 in the message."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Defaults:
    """Job-wide settings; a row's own columns override them. Validated on construction."""

    template: str | None  # None: rows must carry a `prompt` column
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance: float = 7.5
    images_per_item: int = 1
    key_column: str = "id"

    def __post_init__(self) -> None:
        if self.template is not None:
            if not isinstance(self.template, str) or not self.template.strip():
                raise UsageError("template must be non-empty text (or None to require a prompt column)")
            template_fields(self.template)
        if not isinstance(self.negative, str):
            raise UsageError("negative must be text")
        if not isinstance(self.key_column, str) or not self.key_column.strip():
            raise UsageError("key_column must be a non-empty column name")
        for name in ("width", "height", "steps", "images_per_item"):
            if type(getattr(self, name)) is not int:
                raise UsageError(f"default {name} must be a whole number, got {getattr(self, name)!r}")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)):
            raise UsageError(f"default guidance must be a number, got {self.guidance!r}")
        checks = (("size", f"{self.width}x{self.height}", parse_size), ("steps", str(self.steps), _parse_steps),
                  ("guidance", repr(float(self.guidance)), _parse_guidance),
                  ("images_per_item", str(self.images_per_item), _parse_images))
        for name, value, parse in checks:
            try:
                parse(value)
            except ValueError as exc:
                raise UsageError(f"default {name}: {exc}") from None


@dataclass(frozen=True)
class Row:
    """One validated catalogue item, ready to be expanded into `images_per_item` ledger items."""

    line: int  # 1-based physical line where the row starts
    key: str
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    guidance: float
    images_per_item: int
    seed: int | None  # per-row seed override, else None


# ---------------------------------------------------------------------------------------------------------
# Values


def _parse_int(text: str, low: int, high: int) -> int:
    if not _UINT_RE.fullmatch(text) or not (low <= int(text) <= high):
        raise ValueError(f"must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def _parse_steps(text: str) -> int:
    return _parse_int(text, 1, 200)


def _parse_images(text: str) -> int:
    return _parse_int(text, 1, 16)


def _parse_seed(text: str) -> int:
    return _parse_int(text, 0, MAX_SEED)


def _parse_guidance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 50) or "_" in text:
        raise ValueError(f"must be a number from 0 to 50, got {text!r}")
    return value


def _normalise(text: str) -> str:
    """Collapse whitespace runs, so stray spaces or newlines never change an item's content hash."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------------
# Templates


def template_fields(template: str) -> list[str]:
    """Named fields of a str.format template, in order, without repeats. Anything else is a UsageError:
    positional, attribute, index, conversion and format-spec fields would make a catalogue value
    executable-ish or its meaning surprising."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"bad template {template!r}: {exc} (write '{{{{' or '}}}}' for literal braces)") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
        if name == "" or name.isdigit():
            problem = "positional fields are not allowed; name a column, e.g. {title}"
        elif "." in name or "[" in name:
            problem = "attribute or index access is not allowed; name a column, e.g. {title}"
        elif conversion or spec:
            problem = "conversions and format specs are not allowed; use a plain {column}"
        elif not name.strip():
            problem = "field names must not be blank"
        else:
            if name not in names:
                names.append(name)
            continue
        raise UsageError(f"bad template field {shown} in {template!r}: {problem}")
    return names


def render(template: str, row: Mapping[str, str]) -> str:
    """The template filled from `row`, whitespace-normalised. A missing field raises KeyError;
    values are inserted literally (braces in a value are not re-interpreted)."""
    template_fields(template)
    parts: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(str(row[name]))
    return _normalise("".join(parts))


# ---------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Reader:
    """Per-file state: where problems go, the keys seen so far, fields already reported at the header."""

    path: str
    defaults: Defaults
    fields: list[str]
    problems: list[Problem] = dc_field(default_factory=list)
    seen: dict[str, int] = dc_field(default_factory=dict)
    skip: set[str] = dc_field(default_factory=set)

    def problem(self, line: int, field: str | None, message: str) -> None:
        self.problems.append(Problem(self.path, line, field, message))

    def row(self, line: int, values: Mapping[str, str | None], bad_types: Mapping[str, str]) -> Row | None:
        """Validate one row; on any problem record it and return None (the caller still checks the rest)."""
        before = len(self.problems)

        def text(name: str, required: bool) -> str | None:
            """A column's value, or None if absent, null or blank (a problem if required)."""
            if name in bad_types:
                self.problem(line, name, f"must be text or a number, got {bad_types[name]}")
                return None
            value = values.get(name)
            if value is None or not value.strip():
                if required:
                    how = "is missing" if name not in values else "is null" if value is None else "is empty"
                    self.problem(line, name, how)
                return None
            return value

        def override(name: str, parse: Callable[[str], T]) -> T | None:
            value = text(name, required=False)
            if value is None:
                return None
            try:
                return parse(value)
            except ValueError as exc:
                self.problem(line, name, str(exc))
                return None

        d = self.defaults
        key = text(d.key_column, required=d.key_column not in self.skip)
        if key is not None:
            key = key.strip()
            if key in (".", "..") or _CONTROL_RE.search(key) or len(key) > MAX_KEY_LENGTH:
                self.problem(line, d.key_column, f"invalid item key {key[:60]!r}: must not be '.' or '..', "
                             f"contain control characters, or be longer than {MAX_KEY_LENGTH} characters")
            elif key in self.seen:
                self.problem(line, d.key_column, f"duplicate key {key!r} (first seen on line {self.seen[key]})")
            else:
                self.seen[key] = line

        own_prompt = text("prompt", required=d.template is None and "prompt" not in self.skip)
        if own_prompt is not None:
            prompt = _normalise(own_prompt)
        elif d.template is not None:
            filled = {name: text(name, required=True) for name in self.fields if name not in self.skip}
            values_ok = {k: v for k, v in filled.items() if v is not None}
            prompt = render(d.template, values_ok) if len(values_ok) == len(self.fields) else None
            if prompt == "":  # guard: blank values are already "missing", so only an odd template gets here
                self.problem(line, "prompt", "rendered prompt is empty")
        else:
            prompt = None

        negative = text("negative", required=False)
        size = override("size", parse_size) or (d.width, d.height)
        steps = override("steps", _parse_steps)
        guidance = override("guidance", _parse_guidance)
        images = override("images_per_item", _parse_images)
        seed = override("seed", _parse_seed)

        if len(self.problems) > before or key is None or not prompt:
            return None
        return Row(
            line=line, key=key, prompt=prompt,
            negative=_normalise(negative if negative is not None else d.negative),
            width=size[0], height=size[1],
            steps=d.steps if steps is None else steps,
            guidance=float(d.guidance if guidance is None else guidance),
            images_per_item=d.images_per_item if images is None else images,
            seed=seed,
        )


def read_catalogue(path: Path, defaults: Defaults) -> list[Row]:
    """Every row of the catalogue at `path`, or CatalogueError listing every problem found."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".jsonl"):
        raise UsageError(f"{path}: unsupported catalogue type {path.suffix!r}; use .csv or .jsonl")
    reader = _Reader(str(path), defaults, template_fields(defaults.template) if defaults.template else [])

    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = _csv_column_at(data.decode("utf-8", errors="replace"), line) if kind == ".csv" else None
        reader.problem(line, column, f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8")
        raise CatalogueError(reader.problems) from None

    rows = list(_read_csv(text, reader) if kind == ".csv" else _read_jsonl(text, reader))
    if not rows and not reader.problems:
        reader.problem(1, None, "catalogue has no rows")
    if reader.problems:
        raise CatalogueError(sorted(reader.problems, key=lambda p: p.line))
    return rows


class _CsvSyntaxError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


def _csv_rows(text: str) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, cells) of each CSV record; quoted cells may span physical lines."""
    records = csv.reader(io.StringIO(text, newline=""))
    while True:
        start = records.line_num + 1
        try:
            cells = next(records)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _CsvSyntaxError(start, str(exc)) from None
        yield start, records.line_num, cells


def _csv_column_at(text: str, line: int) -> str | None:
    """Name of the CSV column holding the (replaced) bad byte on `line`, if that can be told."""
    try:
        rows = _csv_rows(text)
        _, header_end, header = next(rows)
        if line <= header_end:
            return None
        for start, end, cells in rows:
            if start <= line <= end:
                hits = [i for i, cell in enumerate(cells) if "\ufffd" in cell]
                return header[hits[0]].strip() if hits and hits[0] < len(header) else None
    except (_CsvSyntaxError, StopIteration):
        pass
    return None


def _read_csv(text: str, reader: _Reader) -> Iterator[Row]:
    rows = _csv_rows(text)
    try:
        first = next(rows, None)
        if first is None:
            return
        header = [name.strip() for name in first[2]]
        available = ", ".join(repr(name) for name in header)
        for name in sorted({n for n in header if header.count(n) > 1}):
            reader.problem(first[0], name, "column appears more than once in the header")
        wanted = [reader.defaults.key_column, *reader.fields]
        if reader.defaults.template is None:
            wanted.append("prompt")
        for name in dict.fromkeys(wanted):
            if name not in header:
                reader.problem(first[0], name, f"no such column in the header; available: {available}")
                reader.skip.add(name)
        for start, _end, cells in rows:
            if not cells:
                continue  # blank line
            if len(cells) > len(header):
                reader.problem(start, None, f"row has {len(cells)} cells but the header has {len(header)} columns "
                               "(a comma inside a value needs the value in double quotes)")
                continue
            row = reader.row(start, dict(zip(header, cells)), {})
            if row is not None:
                yield row
    except _CsvSyntaxError as exc:
        reader.problem(exc.line, None, f"CSV syntax error: {exc}")


def _json_text(value: object) -> str | None:
    """A JSON scalar as template text: 3 -> "3", true -> "true", null -> None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_jsonl(text: str, reader: _Reader) -> Iterator[Row]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            reader.problem(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            reader.problem(number, None, f"each line must be a JSON object, got {type(obj).__name__}")
            continue
        bad = {k: "an array" if isinstance(v, list) else "an object" for k, v in obj.items()
               if isinstance(v, (list, dict))}
        values = {k: _json_text(v) for k, v in obj.items() if k not in bad}
        row = reader.row(number, values, bad)
        if row is not None:
            yield row
