"""Row validation: cells in a fixed column order become typed `Row`s (key, rendered prompt, overrides), with
every problem of a row recorded; duplicates, caps and the missing-column hints live here. Knows no file format:
the readers (`csv_reader`, `jsonl_reader`, `mappings`) hand it cells."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from operator import itemgetter
from typing import NamedTuple, NoReturn

from contract.params import parse_size
from producer.catalogue.defaults import OVERRIDES, Defaults, Limits
from producer.catalogue.inputs import PhotoColumns, PhotoRow
from producer.catalogue.problems import ENV, CatalogueError, Problem
from producer.catalogue.values import (
    TOKEN_OVERHEAD,
    blank_values_show,
    estimate_tokens,
    excerpt,
    invisible,
    key_bytes,
    normalise,
    parse_guidance,
    parse_images,
    parse_seed,
    parse_steps,
    positional,
    surrogate_problem,
    template_fields,
)

MAX_KEY_LENGTH = 200  # characters; the byte limits of the store apply as well


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
    mode: str = "text"  # text, background or restyle (producer/catalogue/inputs.py)
    strength: float | None = None  # restyle's img2img strength
    inputs: dict[str, str] | None = None  # a photo row's checked inputs: paths and sha256 (`items.inputs`)


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


class Marker:
    """A value that is not text: how to say so when a field needs text."""

    def __init__(self, required: str, optional: str | None) -> None:
        self.required = required  # message when the field is required
        self.optional = optional  # message when it is an optional override; None: treat as not given


ABSENT = Marker("is missing", None)


_NULL = Marker("is null", None)


_NAN = Marker("is NaN (not a number: a missing value)", None)


_INFINITE = Marker("must be a finite number, got infinity", "must be a finite number, got infinity")


_ARRAY = Marker("must be text or a number, got an array", "must be text or a number, got an array")


_OBJECT = Marker("must be text or a number, got an object", "must be text or a number, got an object")


Cell = str | Marker


def as_cell(value: object) -> Cell:
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
    return Marker(message, message)


class Stop(Exception):
    """Reading cannot or need not go on (a structural error, too many problems, too many items)."""


class Validator:
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
        for name in self.missing_columns:  # appended, not self.problem: no Stop before the object exists
            self.problems.append(Problem(path, line, name, missing_column(name, defaults, fields, columns)))
        self.key_index = index.get(defaults.key_column)
        self.fields = [(name, index[name]) for name in fields if name in index]
        self.can_render = defaults.template is not None and not any(name not in index for name in fields)
        self.prompt_column = prompt_column or "prompt"
        self.prompt_index = index.get(prompt_column) if prompt_column is not None else None
        self.prompt_required = defaults.template is None
        self.negative_column = negative_column or "negative"
        self.negative_index = index.get(negative_column) if negative_column is not None else None
        self.negative = normalise(defaults.negative)
        parsers: list[tuple[str, Callable[[str], object]]] = [
            ("size", parse_size),
            ("steps", parse_steps),
            ("guidance", parse_guidance),
            ("images_per_item", parse_images),
            ("seed", parse_seed),
        ]
        self.overrides = [
            (column, index[column], parse, name)
            for name, parse in parsers
            if (column := mapped[name]) is not None and column in index
        ]
        self.photos = PhotoColumns.of(
            (defaults.mode, defaults.strength, defaults.input_roots),  # type: ignore[arg-type]
            mapped,
            index,
            (limits.input_bytes, limits.input_pixels),
            limits.fetch,
        )
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
            or self.photos is not None
        ):
            return None
        key_index, stats, count_long = self.key_index, self.stats, self._count_long
        indices = [i for _, i in self.fields]
        values_of = itemgetter(*indices) if len(indices) > 1 else itemgetter(indices[0], indices[0])
        fill, isspace, seen = positional(template).format, str.isspace, self.seen.setdefault
        key_fast, prompt_fast, token_fast, item_cap = self.key_fast, self.prompt_fast, self.token_fast, limits.items
        images, tail = (
            d.images_per_item,
            (self.negative, d.width, d.height, d.steps, float(d.guidance), d.images_per_item, None, "text", None, None),
        )
        new = tuple.__new__
        # A blank value next to a literal space (or at an end) leaves a double, leading or trailing space,
        # which the normal-form test below rejects; other templates test for blank values one by one.
        blank_shows = blank_values_show(template)

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
            raise Stop

    def fatal(self, line: int, field: str | None, message: str) -> NoReturn:
        """Record a problem after which reading cannot usefully go on."""
        self.problems.append(Problem(self.path, line, field, message))
        raise Stop

    def _key_problem(self, key: str) -> str | None:
        """Why `key` cannot name an object in the store, or None (the slow path of `row`)."""
        if key in (".", ".."):
            return f"invalid item key {key!r}: must not be '.' or '..'"
        if (problem := surrogate_problem(key)) is not None:
            return f"invalid item key: {problem}"
        if _CONTROL_RE.search(key):
            nul = " (a NUL byte: PostgreSQL cannot store it)" if "\x00" in key else ""
            return f"invalid item key {excerpt(key)}: must not contain control characters{nul}"
        if (hidden := invisible(key)) is not None:
            return (
                f"invalid item key {excerpt(key)}: contains an invisible character {hidden} (two keys that look alike "
                "would name two products); remove it"
            )
        if len(key) > MAX_KEY_LENGTH:
            return f"invalid item key {excerpt(key)}: longer than {MAX_KEY_LENGTH} characters"
        size, cap = key_bytes(key), self.limits.key_bytes
        if size > cap:
            where = (
                "one path segment in a local store"
                if self.limits.key_segment_bytes == cap
                else "the object key limit of the store, less room for the job id and file name"
            )
            return (
                f"invalid item key {excerpt(key)}: {size} bytes once percent-encoded for the object key, over "
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
        key = self._key(line, cells[self.key_index]) if self.key_index is not None else None
        prompt = self._prompt(line, cells)
        negative = self._negative(line, cells)
        width, height, steps, guidance, images, seed = self._overrides(line, cells)
        photo = None
        if self.photos is not None:
            _, photo = self.photos.row(cells, lambda field, message: self.problem(line, field, message))
            if photo is not None:
                width, height = self._photo_size(line, cells, photo, width, height)
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
        if photo is not None:
            return Row(line, key, prompt, negative, width, height, steps, guidance, images, seed, *photo.fields)
        return Row(line, key, prompt, negative, width, height, steps, guidance, images, seed)

    def _key(self, line: int, value: Cell) -> str | None:
        """The row's item key, or None after recording why it cannot be one (blank, unstorable, a duplicate)."""
        key: str | None = None
        if isinstance(value, str) and (value := value.strip()):
            key = value
        else:
            self._text(line, self.defaults.key_column, value, True)
        if key is not None:
            if not (len(key) <= self.key_fast and key.isascii() and key.isprintable() and key != "." and key != ".."):
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
        return key

    def _prompt(self, line: int, cells: Sequence[Cell]) -> str | None:
        """The row's own prompt, else the template filled from its cells; None after recording why not."""
        prompt: str | None = None
        if self.prompt_index is not None:
            own = cells[self.prompt_index]
            if isinstance(own, str) and not own.isspace() and own:
                prompt = normalise(own) if self._encodable(line, self.prompt_column, own) else None
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
        return prompt

    def _negative(self, line: int, cells: Sequence[Cell]) -> str:
        """The row's negative prompt, else the job's."""
        negative = self.negative
        if self.negative_index is not None:
            value = cells[self.negative_index]
            if isinstance(value, str) and value and not value.isspace():
                column = self.negative_column
                negative = normalise(value) if self._encodable(line, column, value) else self.negative
                if len(negative) > self.prompt_fast and not self._prompt_checks(line, column, negative):
                    negative = self.negative
            elif not isinstance(value, str):
                self._text(line, self.negative_column, value, False)
        return negative

    def _overrides(self, line: int, cells: Sequence[Cell]) -> tuple[int, int, int, float, int, int | None]:
        """(width, height, steps, guidance, images_per_item, seed): the job's, each overridden by the row's column."""
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
        return width, height, steps, guidance, images, seed

    def _photo_size(
        self, line: int, cells: Sequence[Cell], photo: PhotoRow, width: int, height: int
    ) -> tuple[int, int]:
        """A photo row's output size: the row's own `size` if it has one (the photo centred on it, unscaled), else
        the photo's size rounded up (producer/catalogue/inputs.py `placement`)."""
        for column, i, _, name in self.overrides:
            cell = cells[i]
            if name == "size" and isinstance(cell, str) and cell.strip():
                problem = photo.sized(width, height)
                if problem is not None:
                    self.problem(line, column, problem)
                return width, height
        return photo.width, photo.height

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


def missing_column(
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


def finish(validator: Validator, last_line: int) -> None:
    """Raise the collected problems, or "no rows" for a catalogue without any."""
    if not validator.problems and not validator.stats.rows:
        validator.problems.append(Problem(validator.path, 1, None, "catalogue has no rows"))
    if validator.problems:
        raise CatalogueError(sorted(validator.problems, key=lambda p: p.line))
