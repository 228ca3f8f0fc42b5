"""Read and validate a product catalogue: streaming, bounded, linear-time, all or nothing.

A catalogue is CSV (header row, UTF-8, optional BOM) or JSONL (one JSON object per line), optionally
gzip-compressed (`.csv.gz`, `.jsonl.gz`), from a file or from stdin (`-`); the Python API passes rows
directly (`iter_rows`). Each row becomes one `Row` whose prompt is the job's template rendered with the
row's columns, unless the row carries its own `prompt`. Optional columns override the job's defaults.

`iter_catalogue` yields validated rows as it reads, so memory stays flat however long the file is, and
raises `CatalogueError` with every problem found once it has read everything. The caller writes the rows
inside one transaction and rolls back when the error arrives: a job is submitted whole or not at all, and
a fix-and-resubmit loop takes one round instead of one per bad row. Every input is bounded by `Limits`
(bytes per cell and per row, columns, prompt bytes, items per job, object-key bytes), each with a message
that names the cap and the setting that raises it. `read_catalogue` is the list-returning wrapper.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import json
import math
import re
import string
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from operator import itemgetter
from pathlib import Path
from typing import IO, Literal, NamedTuple, NoReturn

from contract.identity import SEED_LIMIT, object_key
from contract.params import parse_size

MAX_LISTED = 50
MAX_KEY_LENGTH = 200  # characters; the byte limits of the store apply as well
SEED_MAX = SEED_LIMIT - 1
# Room in an object key around the item key: "jobs/" + a BIGINT job id + "/" + "/" + variant + "." + ext.
KEY_ROOM = len("jobs/") + 19 + 2 + 2 + 1 + 8
TOKEN_OVERHEAD = 2  # CLIP's start and end tokens count against the model's limit

Format = Literal["csv", "jsonl"]

_UINT_RE = re.compile(r"\s*\d+\s*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A lone surrogate: JSON may escape one ("\ud800"), and a decoder with surrogateescape leaves one per bad byte,
# but it is no character: no UTF-8 encoder, database or object store takes it.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# CLIP's pre-tokenizer: letter runs, single digits, punctuation runs. Each is at least one BPE token.
_PRETOKEN_RE = re.compile(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_DELIMITER_NAMES = {",": ",", ";": ";", "|": "|", "\t": "\t", "\\t": "\t", "tab": "\t"}
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SPREADSHEET = "save it from the spreadsheet as CSV (File > Save As / Download > .csv)"
_RENAME = {  # what to do with a file type people export catalogues in
    ".tsv": "; a tab-separated file is read as CSV: rename it .csv and give --delimiter tab",
    ".txt": "; rename it .csv and give its separator (--delimiter tab for Excel's 'Unicode Text', with --encoding "
    "utf-16)",
    ".xlsx": f"; {_SPREADSHEET}",
    ".xls": f"; {_SPREADSHEET}",
    ".ods": f"; {_SPREADSHEET}",
    ".numbers": f"; {_SPREADSHEET}",
    ".json": "; write one object per line as .jsonl (e.g. jq -c '.[]' file.json > file.jsonl)",
}
_MAGIC = {  # the first bytes of files that are no text: what the file is and what to do
    b"PK\x03\x04": f"this is a ZIP archive, such as an Excel (.xlsx), Numbers or LibreOffice workbook: {_SPREADSHEET}",
    b"\xd0\xcf\x11\xe0": f"this is an old Excel workbook (.xls): {_SPREADSHEET}",
    b"\x1f\x8b": "this is gzip-compressed: name it .csv.gz (or .jsonl.gz)",
}
# Encodings a catalogue may be in (codecs' canonical names): UTF-8 with or without a BOM, Excel's "CSV"
# on Western Windows (cp1252), Latin-1, and Excel's "Unicode text" (UTF-16 with a BOM).
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "iso8859-1", "utf-16", "utf-16-le", "utf-16-be")
# The per-row override columns: a column of this name overrides the job's option (`Defaults.columns` maps
# or switches them off). `prompt` replaces the rendered template (with no template it is required).
OVERRIDES = {
    "prompt": "--template",
    "negative": "--negative",
    "size": "--size",
    "steps": "--steps",
    "guidance": "--guidance",
    "images_per_item": "--images-per-item",
    "seed": "--seed",
}


class UsageError(ValueError):
    """A bad template, default or setting: the job's settings are wrong, not any one row."""


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


# The settings the lead wires to each cap; messages name them so a user knows what to raise.
ENV = {
    "cell_bytes": "PIXELMILL_CATALOGUE_CELL_BYTES",
    "row_bytes": "PIXELMILL_CATALOGUE_ROW_BYTES",
    "columns": "PIXELMILL_CATALOGUE_COLUMNS",
    "prompt_bytes": "PIXELMILL_PROMPT_BYTES",
    "items": "PIXELMILL_JOB_MAX_ITEMS",
    "problems": "PIXELMILL_CATALOGUE_MAX_PROBLEMS",
    "tokens": "PIXELMILL_PROMPT_TOKENS",
    "quoted_lines": "PIXELMILL_CATALOGUE_QUOTED_LINES",
}


@dataclass(frozen=True)
class Limits:
    """Caps on catalogue input. Each keeps one bad file from costing unbounded time, memory or a job
    that fails every attempt later. The defaults fit the 1 M-row benchmark; settings override them."""

    cell_bytes: int = 16 * 1024  # one CSV cell or JSON value
    row_bytes: int = 1024 * 1024  # one JSONL line, or one CSV record (quoted cells may span lines)
    columns: int = 1000  # CSV header columns, or fields of one JSON object
    prompt_bytes: int = 2048  # prompt (and negative prompt) after rendering, UTF-8
    items: int = 2_000_000  # rows x images_per_item in one job
    key_segment_bytes: int | None = 255  # percent-encoded item key: one path segment (local store); None: S3
    object_key_bytes: int = 1024  # whole object key with the store's prefix (S3's limit)
    key_prefix_bytes: int = 0  # what the store puts before "jobs/...", e.g. an S3 prefix and its "/"
    problems: int = 1000  # stop reading after this many problems
    tokens: int = 77  # the text encoder's limit, for the truncation warning
    quoted_lines: int = 10  # physical lines one quoted CSV cell may span before it is called a stray quote

    def __post_init__(self) -> None:
        for name in (
            "quoted_lines",
            "cell_bytes",
            "row_bytes",
            "columns",
            "prompt_bytes",
            "items",
            "object_key_bytes",
            "problems",
            "tokens",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise UsageError(f"limit {name} must be a positive whole number, got {value!r}")
        if self.key_segment_bytes is not None and (
            type(self.key_segment_bytes) is not int or self.key_segment_bytes < 1
        ):
            raise UsageError(
                f"limit key_segment_bytes must be a positive whole number or None, got {self.key_segment_bytes!r}"
            )
        if type(self.key_prefix_bytes) is not int or self.key_prefix_bytes < 0:
            raise UsageError(f"limit key_prefix_bytes must be a whole number >= 0, got {self.key_prefix_bytes!r}")
        if self.key_bytes < 1:
            raise UsageError(
                f"the store's key prefix ({self.key_prefix_bytes} bytes) leaves no room for item keys "
                f"in {self.object_key_bytes}-byte object keys"
            )

    @property
    def key_bytes(self) -> int:
        """Most bytes a percent-encoded item key may take in this store."""
        whole = self.object_key_bytes - self.key_prefix_bytes - KEY_ROOM
        return whole if self.key_segment_bytes is None else min(self.key_segment_bytes, whole)

    @classmethod
    def for_storage(cls, url: str, **overrides: int | None) -> Limits:
        """Limits for the store at `url`: a filesystem caps a path segment at 255 bytes, S3 a whole key at
        1,024 bytes including the store's prefix."""
        if url.startswith("s3://"):
            prefix = url[len("s3://") :].partition("/")[2].strip("/")
            store: dict[str, int | None] = {
                "key_segment_bytes": None,
                "key_prefix_bytes": len(prefix.encode()) + 1 if prefix else 0,
            }
        else:
            store = {"key_segment_bytes": 255}
        return cls(**{**store, **overrides})  # type: ignore[arg-type]


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
    delimiter: str = ","  # CSV only: "," ";" "\t" or "|" (also "tab", "\\t")
    encoding: str = "utf-8"  # CSV only: one of ENCODINGS or an alias (windows-1252, latin-1, utf-16, ...)
    # Per-row override columns renamed ((name, column)) or switched off ((name, None)); see OVERRIDES.
    columns: tuple[tuple[str, str | None], ...] = ()
    row_overrides: bool = True  # False: no column overrides the job's options unless `columns` maps it

    def __post_init__(self) -> None:
        object.__setattr__(self, "delimiter", parse_delimiter(self.delimiter))
        object.__setattr__(self, "encoding", parse_encoding(self.encoding))
        object.__setattr__(self, "columns", check_columns(self.columns, self.template))
        if self.template is not None:
            if not isinstance(self.template, str) or not self.template.strip():
                raise UsageError("template must be non-empty text (or None to require a prompt column)")
            template_fields(self.template)
        if not isinstance(self.negative, str):
            raise UsageError("negative must be text")
        if "\x00" in self.negative or (self.template is not None and "\x00" in self.template):
            raise UsageError("template and negative must not contain NUL bytes")
        for name, text in (("template", self.template), ("negative", self.negative)):
            if (problem := surrogate_problem(text)) is not None:
                raise UsageError(f"{name}: {problem}")
        if not isinstance(self.key_column, str) or not self.key_column.strip():
            raise UsageError("key_column must be a non-empty column name")
        for name in ("width", "height", "steps", "images_per_item"):
            if type(getattr(self, name)) is not int:
                raise UsageError(f"default {name} must be a whole number, got {getattr(self, name)!r}")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)):
            raise UsageError(f"default guidance must be a number, got {self.guidance!r}")
        checks = (
            ("size", f"{self.width}x{self.height}", parse_size),
            ("steps", str(self.steps), _parse_steps),
            ("guidance", repr(float(self.guidance)), _parse_guidance),
            ("images_per_item", str(self.images_per_item), _parse_images),
        )
        for name, value, parse in checks:
            try:
                parse(value)
            except ValueError as exc:
                raise UsageError(f"default {name}: {exc}") from None

    def override_columns(self) -> dict[str, str | None]:
        """Override name -> the column it is read from (None: not read), after `row_overrides` and `columns`.
        Without a template, `prompt` is the text itself, not an override: --no-row-overrides keeps it."""
        on = self.row_overrides
        names: dict[str, str | None] = {
            n: n if on or (n == "prompt" and self.template is None) else None for n in OVERRIDES
        }
        names.update(self.columns)
        return names


def parse_delimiter(text: str) -> str:
    """A CSV delimiter as a user writes it: ',' ';' '|' or tab (a tab character, '\\t' or 'tab')."""
    found = _DELIMITER_NAMES.get(text.lower() if isinstance(text, str) else text)
    if found is None:
        raise UsageError(f"--delimiter must be one of ',' ';' '|' or tab ('\\t' or 'tab'), got {text!r}")
    return found


def parse_encoding(text: str) -> str:
    """An encoding name (or alias) a catalogue may be in, as its canonical name in ENCODINGS."""
    try:
        name = codecs.lookup(text).name if isinstance(text, str) else ""
    except LookupError:
        name = ""
    if name not in ENCODINGS:
        raise UsageError(
            f"--encoding must be one of utf-8, utf-8-sig, cp1252 (windows-1252), latin-1 or utf-16 "
            f"(Excel's Unicode text), got {text!r}"
        )
    return name


def parse_column_option(items: Iterable[str]) -> tuple[tuple[str, str | None], ...]:
    """`--column NAME=COLUMN` options (NAME= switches the override off) as `Defaults.columns`."""
    pairs: list[tuple[str, str | None]] = []
    for item in items:
        name, eq, column = item.partition("=")
        if not eq:
            raise UsageError(
                f"--column takes NAME=COLUMN (or NAME= to switch the override off), got {item!r}; "
                f"NAME is one of {', '.join(OVERRIDES)}"
            )
        pairs.append((name.strip(), column.strip() or None))
    return tuple(pairs)


def check_columns(
    columns: Iterable[tuple[str, str | None]] | Mapping[str, str | None], template: str | None
) -> tuple[tuple[str, str | None], ...]:
    """Validated override mapping: known names, each once, and the prompt column kept when there is no template."""
    pairs = tuple(columns.items()) if isinstance(columns, Mapping) else tuple(columns)
    seen: set[str] = set()
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise UsageError(f"columns must be (name, column) pairs, got {pair!r}")
        name, column = pair
        if not isinstance(name, str) or name not in OVERRIDES:
            raise UsageError(
                f"--column {name!s:.40}=...: {name!r:.40} is not a per-row override column; use one of "
                f"{', '.join(OVERRIDES)}"
            )
        if name in seen:
            raise UsageError(f"--column {name}=... is given more than once")
        seen.add(name)
        if column is not None and (not isinstance(column, str) or not column.strip()):
            raise UsageError(f"--column {name}=...: the column must be a non-empty name, got {column!r}")
        if column is None and name == "prompt" and template is None:
            raise UsageError(
                "--column prompt=: without --template rows need a prompt column; map it, don't switch it off"
            )
    return pairs


class Row(NamedTuple):
    """One validated catalogue item, ready to be expanded into `images_per_item` ledger items.
    A NamedTuple, not a frozen dataclass: building one is 2-3x cheaper, which matters at a million rows."""

    line: int  # 1-based physical line where the row starts (the row's index for `iter_rows`)
    key: str
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    guidance: float
    images_per_item: int
    seed: int | None  # per-row seed override, else None


@dataclass
class Stats:
    """What a read found besides problems: counts, and prompts likely truncated by the text encoder."""

    rows: int = 0
    items: int = 0
    long_prompts: int = 0  # rows whose prompt likely exceeds the token limit (a lower-bound estimate)
    long_prompt_lines: list[int] = dc_field(default_factory=list)  # the first few of them

    def warnings(self, limits: Limits | None = None) -> list[str]:
        """Warnings for the submitter, e.g. prompts the model will truncate."""
        if not self.long_prompts:
            return []
        tokens = (limits or Limits()).tokens
        lines = ", ".join(map(str, self.long_prompt_lines)) + (", ..." if self.long_prompts > 5 else "")
        return [
            f"{self.long_prompts} row(s) have prompts longer than the model's {tokens}-token limit "
            f"(estimated; lines {lines}); the text encoder will truncate them, so their last words "
            "have no effect: shorten the template or the values"
        ]


# ---------------------------------------------------------------------------------------------------------
# Values


def _parse_int(text: str, low: int, high: int) -> int:
    """A whole number in [low, high]; long text is refused before int() (its cost grows with the digits)."""
    if len(text) > 40 or not _UINT_RE.fullmatch(text) or not (low <= int(text) <= high):
        raise ValueError(f"must be a whole number from {low} to {high}, got {text[:40]!r}")
    return int(text)


def _parse_steps(text: str) -> int:
    """Denoising steps: more than 200 buys nothing and costs a lot."""
    return _parse_int(text, 1, 200)


def _parse_images(text: str) -> int:
    """Variants per row: 16 at most, so one row cannot dominate a job."""
    return _parse_int(text, 1, 16)


def parse_seed(text: str) -> int:
    """A seed written as text (a catalogue cell): a whole number from 0 to SEED_MAX."""
    return _parse_int(text, 0, SEED_MAX)


def check_seed(value: int) -> int:
    """A job seed (`--seed`): the same range as row seeds, so both fit a signed BIGINT and torch."""
    if type(value) is not int or not (0 <= value <= SEED_MAX):
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return value


def _parse_guidance(text: str) -> float:
    """A finite CFG scale in [0, 50]; '_' digit separators are refused as a likely typo."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 50) or "_" in text:
        raise ValueError(f"must be a number from 0 to 50, got {text[:40]!r}")
    return value


def _normalise(text: str) -> str:
    """Collapse whitespace runs, so stray spaces or newlines never change an item's content hash."""
    return " ".join(text.split())


def estimate_tokens(prompt: str) -> int:
    """A lower bound on the CLIP tokens of `prompt`, start and end tokens included. CLIP's pre-tokenizer
    splits text into letter runs, single digits and punctuation runs, and BPE makes at least one token of
    each; ordinary English words are one token, rarer ones more. It needs no tokenizer files."""
    return len(_PRETOKEN_RE.findall(prompt)) + TOKEN_OVERHEAD


def _shown(value: str, limit: int = 60) -> str:
    """A value for a message: quoted, cut to `limit` characters with '...' if longer."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def key_bytes(key: str) -> int:
    """Bytes the item key takes in an object key, percent-encoded as `contract.identity.object_key` does."""
    return len(object_key(0, key, 0, "")) - len("jobs/0//0.")


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


def _positional(template: str) -> str:
    """`template` with its named fields as positions ({title} -> {0}), for str.format(*values): no dict per
    row. Literal braces stay escaped; only plain named fields exist (checked by template_fields)."""
    names = template_fields(template)
    parts: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            parts.append("{" + str(names.index(name)) + "}")
    return "".join(parts)


def _blank_shows(template: str) -> bool:
    """Whether a whitespace-only value in any field of `template` leaves a double, leading or trailing space
    in the filled text (every field sits at an end of the template or next to a literal space)."""
    parsed = list(string.Formatter().parse(template))
    for i, (literal, name, _spec, _conversion) in enumerate(parsed):
        if name is None:
            continue
        after = parsed[i + 1][0] if i + 1 < len(parsed) else ""
        at_end = i + 1 == len(parsed) or (i + 2 == len(parsed) and not after and parsed[i + 1][1] is None)
        if not ((i == 0 and not literal) or literal.endswith(" ") or after.startswith(" ") or at_end):
            return False
    return True


def render(template: str, row: Mapping[str, str]) -> str:
    """The template filled from `row`, whitespace-normalised. A missing field raises KeyError;
    values are inserted literally (braces in a value are not re-interpreted)."""
    names = template_fields(template)  # checked: only plain named fields, so format_map is safe
    return _normalise(template.format_map({name: str(row[name]) for name in names}))


# ---------------------------------------------------------------------------------------------------------
# Cell values that are not text (JSON and Python rows; a short CSV row's absent cells)


class _Marker:
    """A value that is not text: how to say so when a field needs text."""

    def __init__(self, required: str, optional: str | None) -> None:
        self.required = required  # message when the field is required
        self.optional = optional  # message when it is an optional override; None: treat as not given


_ABSENT = _Marker("is missing", None)
_NULL = _Marker("is null", None)
_NAN = _Marker("is NaN (not a number: a missing value)", None)
_INFINITE = _Marker("must be a finite number, got infinity", "must be a finite number, got infinity")
_ARRAY = _Marker("must be text or a number, got an array", "must be text or a number, got an array")
_OBJECT = _Marker("must be text or a number, got an object", "must be text or a number, got an object")
Cell = str | _Marker


def _cell(value: object) -> Cell:
    """A JSON or Python scalar as template text: 3 -> "3", true -> "true", null -> _NULL, NaN (pandas' missing
    value, which Python's json writes and reads) -> _NAN, never the text "nan"."""
    if isinstance(value, str):
        return value
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN/Infinity extension, pandas' missing
        return _NAN if math.isnan(value) else _INFINITE
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return _ARRAY
    if isinstance(value, Mapping):
        return _OBJECT
    message = f"must be text or a number, got {type(value).__name__}"
    return _Marker(message, message)


class _Stop(Exception):
    """Reading cannot or need not go on (a structural error, too many problems, too many items)."""


# ---------------------------------------------------------------------------------------------------------
# Validation


class _Validator:
    """Validates rows given as cells in a fixed column order. Built once per catalogue, so the per-row
    work is index lookups and a few C-level string methods: no regexes, no template parsing, no closures."""

    def __init__(
        self, path: str, defaults: Defaults, limits: Limits, columns: Sequence[str], line: int, stats: Stats
    ) -> None:
        self.path, self.defaults, self.limits, self.stats = path, defaults, limits, stats
        self.problems: list[Problem] = []
        self.seen: dict[str, int] = {}
        self.columns = list(columns)
        index: dict[str, int] = {}
        for i, name in enumerate(columns):
            index.setdefault(name, i)
        fields = template_fields(defaults.template) if defaults.template is not None else []
        mapped = defaults.override_columns()
        self.mapped = mapped
        prompt_column, negative_column = mapped["prompt"], mapped["negative"]
        wanted = [defaults.key_column, *fields]
        if defaults.template is None and prompt_column is not None:
            wanted.append(prompt_column)
        wanted += [column for name, column in defaults.columns if column is not None]  # mapped on purpose
        self.missing_columns = [name for name in dict.fromkeys(wanted) if name not in index]
        for name in self.missing_columns:  # appended, not self.problem: no _Stop before the object exists
            self.problems.append(Problem(path, line, name, _missing_column(name, defaults, fields, columns)))
        self.key_index = index.get(defaults.key_column)
        self.fields = [(name, index[name]) for name in fields if name in index]
        self.can_render = defaults.template is not None and not any(name not in index for name in fields)
        self.prompt_column = prompt_column or "prompt"
        self.prompt_index = index.get(prompt_column) if prompt_column is not None else None
        self.prompt_required = defaults.template is None
        self.negative_column = negative_column or "negative"
        self.negative_index = index.get(negative_column) if negative_column is not None else None
        self.negative = _normalise(defaults.negative)
        parsers: list[tuple[str, Callable[[str], object]]] = [
            ("size", parse_size),
            ("steps", _parse_steps),
            ("guidance", _parse_guidance),
            ("images_per_item", _parse_images),
            ("seed", parse_seed),
        ]
        self.overrides = [
            (column, index[column], parse, name)
            for name, parse in parsers
            if (column := mapped[name]) is not None and column in index
        ]
        self.explained: dict[str, int] = {}  # override column -> the line whose problem says why it is reserved
        self.key_fast = min(MAX_KEY_LENGTH, limits.key_bytes // 3)  # ASCII keys this short always fit
        self.prompt_fast = limits.prompt_bytes // 4  # prompts this short always fit
        self.token_fast = limits.tokens - TOKEN_OVERHEAD  # prompts this short always fit
        self.fast = self._fast_path()

    def _fast_path(self) -> Callable[[int, Sequence[Cell]], Row | None] | None:
        """A row check for the common shape (key and template columns, no per-row overrides) that accepts a
        row with every value present and short, and returns None for anything else: `_row` then finds and
        reports the problem. Closure variables, not attributes: this runs once per row."""
        d, limits, template = self.defaults, self.limits, self.defaults.template
        if (
            self.key_index is None
            or not self.can_render
            or not self.fields
            or template is None
            or self.prompt_index is not None
            or self.negative_index is not None
            or self.overrides
        ):
            return None
        key_index, stats, count_long = self.key_index, self.stats, self._count_long
        indices = [i for _, i in self.fields]
        values_of = itemgetter(*indices) if len(indices) > 1 else itemgetter(indices[0], indices[0])
        fill, isspace, seen = _positional(template).format, str.isspace, self.seen.setdefault
        key_fast, prompt_fast, token_fast, item_cap = self.key_fast, self.prompt_fast, self.token_fast, limits.items
        images, tail = (
            d.images_per_item,
            (self.negative, d.width, d.height, d.steps, float(d.guidance), d.images_per_item, None),
        )
        new = tuple.__new__
        # A blank value next to a literal space (or at an end) leaves a double, leading or trailing space,
        # which the normal-form test below rejects; other templates test for blank values one by one.
        blank_shows = _blank_shows(template)

        def fast(line: int, cells: Sequence[Cell]) -> Row | None:
            try:
                key = cells[key_index].strip()  # type: ignore[union-attr]
                values = values_of(cells)
                if (
                    "" in values
                    or not key
                    or len(key) > key_fast
                    or not key.isascii()
                    or not key.isprintable()
                    or key == "."
                    or key == ".."
                    or (not blank_shows and any(map(isspace, values)))
                ):
                    return None
                prompt = fill(*values)
            except (AttributeError, TypeError):  # a value that is not text
                return None
            # Already in normal form (the only whitespace single ASCII spaces, none at the ends) is the same
            # test as prompt == " ".join(prompt.split()), at a third of the cost.
            if (
                len(prompt) > prompt_fast
                or not prompt.isprintable()
                or "  " in prompt
                or prompt[0] == " "
                or prompt[-1] == " "
                or stats.items + images > item_cap
                or seen(key, line) != line
            ):
                return None
            stats.items += images
            stats.rows += 1
            if len(prompt) > token_fast:
                count_long(line, prompt)
            return new(Row, (line, key, prompt, *tail))

        return fast

    def problem(self, line: int, field: str | None, message: str) -> None:
        """Record a problem; stop the read once there are as many as the cap allows."""
        self.problems.append(Problem(self.path, line, field, message))
        if len(self.problems) >= self.limits.problems:
            self.problems.append(
                Problem(
                    self.path,
                    line,
                    None,
                    f"stopped reading after {self.limits.problems} "
                    f"problems; fix these and submit again (cap: {ENV['problems']})",
                )
            )
            raise _Stop

    def fatal(self, line: int, field: str | None, message: str) -> NoReturn:
        """Record a problem after which reading cannot usefully go on."""
        self.problems.append(Problem(self.path, line, field, message))
        raise _Stop

    def _key_problem(self, key: str) -> str | None:
        """Why `key` cannot name an object in the store, or None (the slow path of `row`)."""
        if key in (".", ".."):
            return f"invalid item key {key!r}: must not be '.' or '..'"
        if (problem := surrogate_problem(key)) is not None:
            return f"invalid item key: {problem}"
        if _CONTROL_RE.search(key):
            nul = " (a NUL byte: PostgreSQL cannot store it)" if "\x00" in key else ""
            return f"invalid item key {_shown(key)}: must not contain control characters{nul}"
        if (hidden := _invisible(key)) is not None:
            return (
                f"invalid item key {_shown(key)}: contains an invisible character {hidden} (two keys that look alike "
                "would name two products); remove it"
            )
        if len(key) > MAX_KEY_LENGTH:
            return f"invalid item key {_shown(key)}: longer than {MAX_KEY_LENGTH} characters"
        size, cap = key_bytes(key), self.limits.key_bytes
        if size > cap:
            where = (
                "one path segment in a local store"
                if self.limits.key_segment_bytes == cap
                else "the object key limit of the store, less room for the job id and file name"
            )
            return (
                f"invalid item key {_shown(key)}: {size} bytes once percent-encoded for the object key, over "
                f"{cap} ({where}); shorten it (letters, digits and -_.~ take 1 byte, other ASCII 3, "
                "other characters 6-12)"
            )
        return None

    def _text(self, line: int, name: str, value: Cell, required: bool) -> str | None:
        """A non-blank text value, or None after recording why not (slow path)."""
        if not isinstance(value, str):
            message = value.required if required else value.optional
            if message is not None:
                self.problem(line, name, message)
            return None
        if not value.strip():
            if required:
                self.problem(line, name, "is empty")
            return None
        return value

    def _encodable(self, line: int, name: str, value: str) -> bool:
        """Whether a text value is free of lone surrogates (records the problem if not; slow path only: the
        fast path's isprintable() already sends such a row here)."""
        problem = surrogate_problem(value)
        if problem is None:
            return True
        self.problem(line, name, problem)
        return False

    def _prompt_checks(self, line: int, name: str, prompt: str) -> bool:
        """Whether `prompt` (after rendering) fits the byte cap and has no NUL (rare path: a long prompt)."""
        cap = self.limits.prompt_bytes
        if "\x00" in prompt:
            self.problem(line, name, "contains a NUL byte, which PostgreSQL cannot store; remove it")
            return False
        size = len(prompt.encode())
        if size > cap:
            self.problem(
                line,
                name,
                f"is {size:,} bytes after rendering, over the cap of {cap} bytes; shorten it "
                f"(the text encoder reads only ~{self.limits.tokens} tokens anyway) or raise "
                f"{ENV['prompt_bytes']}",
            )
            return False
        return True

    def row(self, line: int, cells: Sequence[Cell]) -> Row | None:
        """Validate one row; on any problem record it and return None (the caller still checks the rest)."""
        if self.fast is not None:
            row = self.fast(line, cells)
            if row is not None:
                return row
        return self._row(line, cells)

    def _count_long(self, line: int, prompt: str) -> None:
        """Count a prompt the text encoder will likely truncate."""
        if estimate_tokens(prompt) > self.limits.tokens:
            stats = self.stats
            stats.long_prompts += 1
            if len(stats.long_prompt_lines) < 5:
                stats.long_prompt_lines.append(line)

    def _row(self, line: int, cells: Sequence[Cell]) -> Row | None:
        """The full check of one row, reporting every problem in it."""
        before = len(self.problems)
        key: str | None = None
        if self.key_index is not None:
            value = cells[self.key_index]
            if isinstance(value, str) and (value := value.strip()):
                key = value
            else:
                self._text(line, self.defaults.key_column, value, True)
            if key is not None:
                if not (
                    len(key) <= self.key_fast and key.isascii() and key.isprintable() and key != "." and key != ".."
                ):
                    message = self._key_problem(key)
                    if message is not None:
                        self.problem(line, self.defaults.key_column, message)
                        key = None
                if key is not None:
                    first = self.seen.setdefault(key, line)
                    if first != line:
                        self.problem(
                            line,
                            self.defaults.key_column,
                            f"duplicate key {key!r} (first seen on line {first}); each row needs its own key",
                        )

        prompt: str | None = None
        if self.prompt_index is not None:
            own = cells[self.prompt_index]
            if isinstance(own, str) and not own.isspace() and own:
                prompt = _normalise(own) if self._encodable(line, self.prompt_column, own) else None
            else:
                self._text(line, self.prompt_column, own, self.prompt_required)
        if prompt is None and self.defaults.template is not None:
            values: dict[str, str] = {}
            for name, i in self.fields:
                value = cells[i]
                if isinstance(value, str) and value and not value.isspace():
                    if self._encodable(line, name, value):
                        values[name] = value
                else:
                    self._text(line, name, value, True)
            if self.can_render and len(values) == len(self.fields):
                prompt = " ".join(self.defaults.template.format_map(values).split())
                if not prompt:  # guard: blank values are already "missing", so only an odd template gets here
                    self.problem(line, "prompt", "rendered prompt is empty")
        if prompt is not None and len(prompt) > self.prompt_fast and not self._prompt_checks(line, "prompt", prompt):
            prompt = None

        negative = self.negative
        if self.negative_index is not None:
            value = cells[self.negative_index]
            if isinstance(value, str) and value and not value.isspace():
                column = self.negative_column
                negative = _normalise(value) if self._encodable(line, column, value) else self.negative
                if len(negative) > self.prompt_fast and not self._prompt_checks(line, column, negative):
                    negative = self.negative
            elif not isinstance(value, str):
                self._text(line, self.negative_column, value, False)

        d = self.defaults
        width, height, steps, guidance, images = d.width, d.height, d.steps, float(d.guidance), d.images_per_item
        seed: int | None = None
        for column, i, parse, name in self.overrides:
            value = cells[i]
            if not isinstance(value, str) or not value or value.isspace():
                self._text(line, column, value, False)
                continue
            try:
                parsed = parse(value)
            except ValueError as exc:
                self.problem(line, column, f"{exc}{self._reserved(line, name, column)}")
                continue
            if isinstance(parsed, tuple):
                width, height = parsed
            elif isinstance(parsed, float):
                guidance = parsed
            elif name == "steps":
                steps = int(parsed)  # type: ignore[call-overload]
            elif name == "images_per_item":
                images = int(parsed)  # type: ignore[call-overload]
            else:
                seed = int(parsed)  # type: ignore[call-overload]

        stats = self.stats
        stats.items += images
        if stats.items > self.limits.items:
            self.fatal(
                line,
                None,
                f"the job would have more than {self.limits.items:,} items (rows x "
                f"images_per_item) by this row; split the catalogue into several jobs or raise "
                f"{ENV['items']}",
            )
        if len(self.problems) > before or key is None or prompt is None or not prompt:
            return None
        if len(prompt) > self.token_fast:
            self._count_long(line, prompt)
        stats.rows += 1
        return Row(line, key, prompt, negative, width, height, steps, guidance, images, seed)

    def _reserved(self, line: int, name: str, column: str) -> str:
        """Why this column is read as an override, and how to map or switch it off (a bad value's message): in
        full on the column's first bad value, then a pointer to it, so 150 bad sizes are not 150 paragraphs."""
        first = self.explained.setdefault(column, line)
        if first != line:
            return f" (a per-row override column: see line {first})"
        option = OVERRIDES[name]
        if column != name:
            return f" (read as each row's {name}, overriding {option}, because of --column {name}={column})"
        return (
            f" ({column!r} is reserved as a per-row override of {option}; if the column means something else, "
            f"read the override from another column with --column {name}=OTHER, or switch it off with "
            f"--column {name}= or --no-row-overrides, and {{{column}}} stays usable in the template)"
        )

    def big_cells(self, line: int, cells: Sequence[str]) -> bool:
        """Report cells over the cap (only called for rows longer than the cap); whether any was."""
        cap, found = self.limits.cell_bytes, False
        for i, cell in enumerate(cells):
            if len(cell) * 4 > cap and len(cell.encode()) > cap:
                name = self.columns[i] if i < len(self.columns) else f"#{i + 1}"
                self.problem(
                    line,
                    name,
                    f"is {len(cell.encode()):,} bytes, over the cap of {cap:,} bytes per cell; "
                    f"shorten it or raise {ENV['cell_bytes']}",
                )
                found = True
        return found


# ---------------------------------------------------------------------------------------------------------
# Sources


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
    head = head.removeprefix(_BOM).lstrip()
    return "jsonl" if head[:1] in (b"{", b"[") else "csv"


def _open(source: Path | str, fmt: Format | None) -> tuple[str, IO[bytes], Format, bool]:
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
    source: Path | str,
    defaults: Defaults,
    limits: Limits | None = None,
    *,
    fmt: Format | None = None,
    stats: Stats | None = None,
) -> Iterator[Row]:
    """Validated rows of the catalogue at `source` (a path, a `.gz` path, or `-` for stdin), as they are
    read. After the last row, raises CatalogueError listing every problem if there was any; once one is
    found no more rows are yielded. Insert the rows in one transaction and roll back on the error.
    `stats`, if given, is filled in (row and item counts, likely-truncated prompts)."""
    if str(source) != "-" and fmt is None and _format_of(Path(source).name) is None:
        _open(source, fmt)  # raises the UsageError now, not at the first next()
    return _read(source, defaults, limits or Limits(), fmt, stats if stats is not None else Stats())


def _read(source: Path | str, defaults: Defaults, limits: Limits, fmt: Format | None, stats: Stats) -> Iterator[Row]:
    """The generator behind `iter_catalogue`: the file is opened at the first next() and always closed."""
    name, stream, kind, close = _open(source, fmt)
    if kind == "jsonl" and (defaults.delimiter != "," or not defaults.encoding.startswith("utf-8")):
        if close:
            stream.close()
        raise UsageError(f"{name}: --delimiter and --encoding apply to CSV; JSONL is always UTF-8")
    reader = _CsvReader if kind == "csv" else _JsonlReader
    try:
        yield from reader(name, stream, defaults, limits, stats).rows()
    finally:
        if close:
            stream.close()


def iter_rows(
    rows: Iterable[Mapping[str, object]],
    defaults: Defaults,
    limits: Limits | None = None,
    *,
    name: str = "<rows>",
    stats: Stats | None = None,
) -> Iterator[Row]:
    """The Python API's catalogue: rows given as mappings, validated as JSONL lines are ("line" is the
    1-based row index). Same all-or-nothing contract as `iter_catalogue`."""
    limits = limits or Limits()
    stats = stats if stats is not None else Stats()
    validator = _json_validator(name, defaults, limits, stats)
    number = 0
    try:
        for number, obj in enumerate(rows, start=1):
            if not isinstance(obj, Mapping):
                validator.problem(
                    number, None, f"each row must be a mapping of column to value, got {type(obj).__name__}"
                )
                continue
            if number == 1:
                _check_first_object(validator, number, obj)
            row = _json_row(validator, number, obj)
            if row is not None and not validator.problems:
                yield row
    except _Stop:
        pass
    _finish(validator, number)


def read_catalogue(
    path: Path | str,
    defaults: Defaults,
    limits: Limits | None = None,
    *,
    fmt: Format | None = None,
    stats: Stats | None = None,
) -> list[Row]:
    """Every row of the catalogue, or CatalogueError listing every problem found. Holds all rows: use
    `iter_catalogue` for large files."""
    return list(iter_catalogue(path, defaults, limits, fmt=fmt, stats=stats))


def _missing_column(
    name: str, defaults: Defaults, fields: Sequence[str], columns: Sequence[str], where: str = "column in the header"
) -> str:
    """Why a wanted column is not in the header (or the first JSON object: `where`), with the likeliest fix:
    the option that names it and a close match among the header's columns."""
    available = ", ".join(repr(c) for c in columns[:50]) + (", ..." if len(columns) > 50 else "")
    close = difflib.get_close_matches(name, [c for c in columns if isinstance(c, str)], n=1, cutoff=0.6)
    if name == defaults.key_column:
        guess = close[0] if close else (columns[0] if columns else "COLUMN")
        what = f"no such {where} for the item key (--key {name}); give the key column with --key, e.g. --key {guess}"
    elif name in fields:
        what = f"no such {where} for the template field {{{name}}}"
        if close:
            what += f" (did you mean {{{close[0]}}}?)"
    elif name in dict(defaults.columns).values():
        option = next(n for n, c in defaults.columns if c == name)
        what = f"no such {where} for --column {option}={name}"
    else:
        what = f"no such {where}: rows need a prompt column when there is no --template"
    if close and name != defaults.key_column and name not in fields:
        what += f" (did you mean {close[0]!r}?)"
    return f"{what}; available: {available}"


def _finish(validator: _Validator, last_line: int) -> None:
    """Raise the collected problems, or "no rows" for a catalogue without any."""
    if not validator.problems and not validator.stats.rows:
        validator.problems.append(Problem(validator.path, 1, None, "catalogue has no rows"))
    if validator.problems:
        raise CatalogueError(sorted(validator.problems, key=lambda p: p.line))


def _io_problem(exc: BaseException) -> str:
    """A read error (truncated or corrupt gzip, disk) as a problem message."""
    return (
        f"could not read the file ({type(exc).__name__}: {exc}); if it is gzip-compressed, check that it is "
        "complete (gzip -t)"
    )


# ---------------------------------------------------------------------------------------------------------
# CSV


class _Recoded:
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


class _QuoteSpan(Exception):
    """A quoted CSV cell ran over the span caps: likely a stray quote."""

    def __init__(self, line: int, column: int, message: str) -> None:
        """Where the cell opens (physical line, 0-based column) and what to say."""
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


class _Quoted(NamedTuple):
    """One quoted cell of a CSV record, found by `_quoted_cells`."""

    line: int  # 0-based line of the record on which the cell opens
    column: int  # 0-based
    start: int  # character offset of the opening quote in the record
    end: int  # offset just past the closing quote; -1: still open at the end of the text


def _quoted_cells(text: str, delimiter: str, line: int = 0, column: int = 0) -> tuple[list[_Quoted], int | None]:
    """The quoted cells of `text` (a CSV record, or its lines so far, or its tail from a cell's start on line
    `line`, column `column`) as the csv module reads them with strict=True, and the index of the first one
    followed by something other than a delimiter or a line end (None: none is). Python-level: only called to
    locate an error or to check an open cell's span, never per row."""
    found: list[_Quoted] = []
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
                    found.append(_Quoted(opened, column, start, -1))
                    return found, None
                line += text.count("\n", i, j)
                if text.startswith('"', j + 1):
                    i = j + 2
                    continue
                i = j + 1
                break
            found.append(_Quoted(opened, column, start, i))
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


def _invisible(key: str) -> str | None:
    """The first character of `key` a person cannot see (Unicode format characters such as U+200B ZERO WIDTH
    SPACE or U+202E RIGHT-TO-LEFT OVERRIDE, and line/paragraph separators), as `U+XXXX (NAME)`, or None."""
    if key.isascii():
        return None
    for char in key:
        if unicodedata.category(char) in ("Cf", "Zl", "Zp"):
            return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})"
    return None


def _key_like(text: str) -> bool:
    """Looks like an item key (`MUG-001`, `classic-mug`), not the first words of a sentence: no spaces, and a
    digit, `-` or `_` in it."""
    return bool(text) and not any(c.isspace() for c in text) and any(c.isdigit() or c in "-_" for c in text)


class _CsvReader:
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
        self.validator: _Validator | None = None
        self.early: list[Problem] = []  # problems before the header is known

    def _stream(self) -> tuple[Callable[[int], bytes], str]:
        """(readline, encoding of the lines it returns): UTF-16 is recoded, everything else decoded per line."""
        encoding = self.defaults.encoding
        if encoding.startswith("utf-16"):
            return _Recoded(self.stream, encoding).readline, "utf-8"
        return self.stream.readline, "utf-8" if encoding == "utf-8-sig" else encoding

    def _first_line(self, raw: bytes) -> bytes:
        """The first line without a UTF-8 BOM; a byte-order mark that contradicts --encoding stops the read."""
        encoding = self.defaults.encoding
        for magic, what in _MAGIC.items():
            if raw.startswith(magic):
                self._fatal(1, None, what)
        if raw.startswith(_UTF16_BOMS) and not encoding.startswith("utf-16"):
            self._fatal(
                1,
                None,
                "the file is UTF-16 (it starts with a UTF-16 byte-order mark), as Excel's 'Unicode Text' export "
                "writes it: give --encoding utf-16 (and --delimiter tab, its separator)",
            )
        if raw.startswith(_BOM):
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
        """Line `number` continues a record over a threshold: raise _QuoteSpan if the quoted cell still open
        has spanned too many lines or bytes, else return the next thresholds (line it opened on, record bytes)."""
        cap, cell_cap, start = self.limits.quoted_lines, self.limits.cell_bytes, self.progress[1]
        first, index, offset, column = self.span_at if self.span_at[0] == start else (start, 0, 0, 0)
        lines = ([self.record_first] if index == 0 else []) + self.record_more[max(index - 1, 0) : -1]
        text = b"".join(lines).decode(self.text_encoding, errors="replace")[offset:]
        found, _bad = _quoted_cells(text, self.defaults.delimiter, index, column)
        if not found or found[-1].end != -1:
            return number, size + cell_cap
        cell = found[-1]
        line_start = text.rfind("\n", 0, cell.start) + 1
        self.span_at = (start, cell.line, cell.start - line_start + (offset if not line_start else 0), cell.column)
        opens = start + cell.line
        span = number - opens + 1
        if span > cap:
            raise _QuoteSpan(
                opens,
                cell.column,
                f"unclosed quote? likely a stray quote: the quoted cell that opens here is still open on line {number} "
                f'({span} lines). A cell that opens with " must close with " (a quote inside a cell is written ""); '
                f"if the cell really spans more than {cap} lines, raise {ENV['quoted_lines']}",
            )
        cell_bytes = len(text[cell.start :].encode()) + len(self.record_more[-1])
        if cell_bytes > cell_cap:
            raise _QuoteSpan(
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
        raise _Stop

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
        found, _bad = _quoted_cells(text, self.defaults.delimiter)
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
                        end = records.line_num
                        if end > start:
                            line, field = self._open_cell(header, multiline=True) or (start, None)
                            self._problem(
                                line,
                                field,
                                f"unclosed quote? the quoted cell that opens here runs "
                                f"to line {end} and the row has {len(cells)} cells for {columns} "
                                'columns. A cell that opens with " must close with ", or the rows after '
                                'it are read as part of it (a quote inside a cell is written "")',
                            )
                            continue
                        if len(cells) > columns:
                            self._problem(
                                start,
                                None,
                                f"row has {len(cells)} cells but the header has {columns} "
                                "columns (a delimiter inside a value needs the value in double quotes)",
                            )
                            continue
                        if not any(map(str.strip, cells)):
                            continue  # a row of empty cells (",,,"): Excel's blank row
                        self._cut_short(start, len(cells), columns)
                        if size > big and validator.big_cells(start, cells):
                            continue
                        row = full(start, [*cells, *[_ABSENT] * (columns - len(cells))])
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
            except _QuoteSpan as exc:
                self._fatal(exc.line, self._column(header, exc.column), exc.message)
            except csv.Error as exc:
                self._csv_failure(str(exc), header)
            except (OSError, EOFError, zlib.error) as exc:
                self._fatal(max(state[1], 1), None, _io_problem(exc))
        except _Stop:
            pass
        if self.validator is None:
            raise CatalogueError(self.early)
        _finish(self.validator, self.line)

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
            if len(cells) != columns or (number and not _key_like(cells[key])):
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
        found, bad = _quoted_cells(record, self.defaults.delimiter)
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
        shown = _shown(record[cell.start : cell.end + 12], 50) if cell else ""
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
        self.validator = _Validator(self.name, self.defaults, self.limits, header, 1, self.stats)
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


# ---------------------------------------------------------------------------------------------------------
# JSONL


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


def _json_columns(defaults: Defaults) -> list[str]:
    """The fields a JSON row is read for: everything else in the object is ignored."""
    fields = template_fields(defaults.template) if defaults.template is not None else []
    overrides = [column for column in defaults.override_columns().values() if column is not None]
    return list(dict.fromkeys([defaults.key_column, *fields, *overrides]))


def surrogate_problem(text: str | None) -> str | None:
    """Why `text` cannot be stored (it holds a lone surrogate), or None."""
    found = _SURROGATE_RE.search(text) if text else None
    if found is None:
        return None
    return (
        f"contains a lone surrogate (U+{ord(found.group()):04X}) at character {found.start() + 1}, which is not "
        "Unicode text (a broken \\ud800-\\udfff escape or a mis-decoded file); fix or remove it"
    )


def _json_validator(name: str, defaults: Defaults, limits: Limits, stats: Stats) -> _Validator:
    """One validator for JSON objects and Python rows: same columns, same checks."""
    return _Validator(name, defaults, limits, _json_columns(defaults), 1, stats)


def _check_first_object(validator: _Validator, line: int, obj: Mapping[str, object]) -> None:
    """The first object lacks the key or a template field: most likely a wrong --key or template, which every
    row would repeat. Stop with one problem per field and the likeliest fix instead."""
    defaults = validator.defaults
    fields = template_fields(defaults.template) if defaults.template is not None else []
    wanted = [defaults.key_column, *fields]
    if defaults.template is None and (prompt := validator.mapped["prompt"]) is not None:
        wanted.append(prompt)
    missing = [name for name in dict.fromkeys(wanted) if name not in obj]
    if not missing:
        return
    names = [name for name in obj if isinstance(name, str)]
    for name in missing:
        hint = _missing_column(name, defaults, fields, names, "field in the first object")
        validator.problem(line, name, f"is missing: {hint}")
    raise _Stop


def _json_row(validator: _Validator, line: int, obj: Mapping[str, object], check: bool = True) -> Row | None:
    """Validate one object: its used values become cells in the validator's column order. `check`: look
    for values over the cell cap and NUL bytes (a JSONL line shorter than the cap without "\\u0000" has none)."""
    limits = validator.limits
    if len(obj) > limits.columns:
        validator.problem(
            line,
            None,
            f"the object has {len(obj):,} fields, over the cap of {limits.columns:,}; "
            f"drop unused fields or raise {ENV['columns']}",
        )
        return None
    get = obj.get
    cells = [_cell(get(name)) if name in obj else _ABSENT for name in validator.columns]
    if not check:
        return validator.row(line, cells)
    cap, bad = limits.cell_bytes, False
    for name, cell in zip(validator.columns, cells):
        if isinstance(cell, str):
            if len(cell) * 4 > cap and len(cell.encode()) > cap:
                validator.problem(
                    line,
                    name,
                    f"is {len(cell.encode()):,} bytes, over the cap of {cap:,} bytes "
                    f"per value; shorten it or raise {ENV['cell_bytes']}",
                )
                bad = True
            elif "\x00" in cell:
                validator.problem(line, name, "contains a NUL byte (\\u0000), which PostgreSQL cannot store; remove it")
                bad = True
    return None if bad else validator.row(line, cells)


class _JsonlReader:
    """Streams JSONL lines read with a bounded readline: a line over the cap is skipped, never held."""

    def __init__(self, name: str, stream: IO[bytes], defaults: Defaults, limits: Limits, stats: Stats) -> None:
        self.name, self.stream, self.limits = name, stream, limits
        self.validator = _json_validator(name, defaults, limits, stats)

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
                    if number == 1 and raw.startswith(_BOM):
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
                        _check_first_object(validator, number, obj)
                    first_data = False
                    if obj is None:
                        continue
                    check = len(raw) > cell_cap or "\\u0000" in text
                    row = _json_row(validator, number, obj, check)
                    if row is not None and not validator.problems:
                        yield row
            except (OSError, EOFError, zlib.error) as exc:
                validator.fatal(number or 1, None, _io_problem(exc))
        except _Stop:
            pass
        _finish(validator, number)

    def _binary(self, raw: bytes) -> None:
        """A first line that shows the file is a workbook, gzip or UTF-16 stops the read with what to do."""
        for magic, what in _MAGIC.items():
            if raw.startswith(magic):
                self.validator.fatal(1, None, what)
        if raw.startswith(_UTF16_BOMS):
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
