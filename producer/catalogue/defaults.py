"""The job's side of a catalogue read: its defaults (`Defaults`, validated on construction: a bad template or
option is a UsageError before any row is read) and the caps on its input (`Limits`)."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from contract.params import MODES, STRENGTH_DEFAULT, parse_size
from producer.catalogue.problems import UsageError
from producer.catalogue.values import parse_guidance, parse_images, parse_steps, surrogate_problem, template_fields

# Room in an object key around the item key: "jobs/" + a BIGINT job id + "/" + "/" + variant + "." + ext.
KEY_ROOM = len("jobs/") + 19 + 2 + 2 + 1 + 8


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
    "mode": "--mode",
    "strength": "--strength",
    "image": "--mode",  # the photo of a background/restyle row (producer/catalogue/inputs.py)
    "mask": "--mode",  # its product mask (background rows)
}
_INPUTS = ("image", "mask")  # read even with row_overrides off: a photo row's input, not an override


_DELIMITER_NAMES = {",": ",", ";": ";", "|": "|", "\t": "\t", "\\t": "\t", "tab": "\t"}


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
    input_bytes: int = 30 * 1024 * 1024  # one photo or mask file (producer/catalogue/inputs.py)
    input_pixels: int = 4096 * 4096  # one photo or mask, from its header, before any pixel is decoded
    # How an s3:// input is read, at most so many bytes (contract/storage.py `S3Reader.read` with the settings'
    # S3 configuration, set by producer/request.py `limits_for`); None: s3 inputs are refused.
    fetch: Callable[[str, int], bytes] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "quoted_lines",
            "input_bytes",
            "input_pixels",
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
    mode: str = "text"  # text, background or restyle (contract.params.MODES); a `mode` column overrides it
    strength: float = STRENGTH_DEFAULT  # restyle's img2img strength; a `strength` column overrides it
    input_roots: tuple[str, ...] = ()  # where photo rows' inputs may be: the tenant's source roots

    def __post_init__(self) -> None:
        object.__setattr__(self, "delimiter", parse_delimiter(self.delimiter))
        object.__setattr__(self, "encoding", parse_encoding(self.encoding))
        object.__setattr__(self, "columns", check_columns(self.columns, self.template))
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r:.40}")
        strength = self.strength
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.05 <= strength <= 1:
            raise UsageError(f"--strength must be a number from 0.05 to 1, got {self.strength!r:.40}")
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
            ("steps", str(self.steps), parse_steps),
            ("guidance", repr(float(self.guidance)), parse_guidance),
            ("images_per_item", str(self.images_per_item), parse_images),
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
            n: n if on or (n == "prompt" and self.template is None) or n in _INPUTS else None for n in OVERRIDES
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
