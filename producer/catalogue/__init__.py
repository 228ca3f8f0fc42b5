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

File reading (`files`, `decoding`, `csv_reader`, `quotes`, `jsonl_reader`: bytes to cells with their file:line)
is apart from row validation (`rows`, `mappings`, `values`, `defaults`: cells to typed rows); this package
exports what callers use.
"""

from contract.params import parse_size
from producer.catalogue.defaults import (
    ENCODINGS,
    KEY_ROOM,
    OVERRIDES,
    Defaults,
    Limits,
    check_columns,
    parse_column_option,
    parse_delimiter,
    parse_encoding,
)
from producer.catalogue.files import Format, iter_catalogue, read_catalogue
from producer.catalogue.mappings import iter_rows
from producer.catalogue.problems import ENV, MAX_LISTED, CatalogueError, Problem, UsageError
from producer.catalogue.rows import MAX_KEY_LENGTH, Row, Stats
from producer.catalogue.values import (
    SEED_MAX,
    TOKEN_OVERHEAD,
    check_seed,
    estimate_tokens,
    key_bytes,
    parse_seed,
    render,
    surrogate_problem,
    template_fields,
)

__all__ = [
    "ENCODINGS",
    "ENV",
    "KEY_ROOM",
    "MAX_KEY_LENGTH",
    "MAX_LISTED",
    "OVERRIDES",
    "SEED_MAX",
    "TOKEN_OVERHEAD",
    "CatalogueError",
    "Defaults",
    "Format",
    "Limits",
    "Problem",
    "Row",
    "Stats",
    "UsageError",
    "check_columns",
    "check_seed",
    "estimate_tokens",
    "iter_catalogue",
    "iter_rows",
    "key_bytes",
    "parse_column_option",
    "parse_delimiter",
    "parse_encoding",
    "parse_seed",
    "parse_size",
    "read_catalogue",
    "render",
    "surrogate_problem",
    "template_fields",
]
