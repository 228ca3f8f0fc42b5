"""Rows given as mappings: a JSON object (a JSONL line) or a Python dict (`iter_rows`, the Python API) becomes
cells in the validator's column order; only the fields the job reads are looked at."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from producer.catalogue.defaults import Defaults, Limits
from producer.catalogue.problems import ENV
from producer.catalogue.rows import ABSENT, Row, Stats, Stop, Validator, as_cell, finish, missing_column
from producer.catalogue.values import template_fields


def _json_columns(defaults: Defaults) -> list[str]:
    """The fields a JSON row is read for: everything else in the object is ignored."""
    fields = template_fields(defaults.template) if defaults.template is not None else []
    overrides = [column for column in defaults.override_columns().values() if column is not None]
    return list(dict.fromkeys([defaults.key_column, *fields, *overrides]))


def json_validator(name: str, defaults: Defaults, limits: Limits, stats: Stats) -> Validator:
    """One validator for JSON objects and Python rows: same columns, same checks."""
    return Validator(name, defaults, limits, _json_columns(defaults), 1, stats)


def check_first_object(validator: Validator, line: int, obj: Mapping[str, object]) -> None:
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
        hint = missing_column(name, defaults, fields, names, "field in the first object")
        validator.problem(line, name, f"is missing: {hint}")
    raise Stop


def json_row(validator: Validator, line: int, obj: Mapping[str, object], check: bool = True) -> Row | None:
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
    cells = [as_cell(get(name)) if name in obj else ABSENT for name in validator.columns]
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
    validator = json_validator(name, defaults, limits, stats)
    number = 0
    try:
        for number, obj in enumerate(rows, start=1):
            if not isinstance(obj, Mapping):
                validator.problem(
                    number, None, f"each row must be a mapping of column to value, got {type(obj).__name__}"
                )
                continue
            if number == 1:
                check_first_object(validator, number, obj)
            row = json_row(validator, number, obj)
            if row is not None and not validator.problems:
                yield row
    except Stop:
        pass
    finish(validator, number)
