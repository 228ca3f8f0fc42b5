"""Catalogue reading (all problems, precise locations, never a partial list) and item identities."""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
import time
import tracemalloc
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.identity import SEED_BITS, derive_seed, object_key
from contract.identity import content_hash as identity_hash
from contract.params import GenerationParams, parse_size
from producer.catalogue import (
    KEY_ROOM,
    SEED_MAX,
    CatalogueError,
    Defaults,
    Format,
    Limits,
    Problem,
    Row,
    Stats,
    UsageError,
    check_seed,
    estimate_tokens,
    iter_catalogue,
    iter_rows,
    key_bytes,
    parse_seed,
    read_catalogue,
    render,
    template_fields,
)
from producer.catalogue.rows import Validator as _Validator

TEMPLATE = "studio photo of {title}, {color}, white background"
DEFAULTS = Defaults(template=TEMPLATE)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "catalogue.csv"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def problems_of(path: Path, defaults: Defaults = DEFAULTS) -> CatalogueError:
    """Read a catalogue that must fail; returns the error (a returned list fails the test)."""
    result = None
    with pytest.raises(CatalogueError) as info:
        result = read_catalogue(path, defaults)
    assert result is None
    return info.value


def assert_problem(err: CatalogueError, path: Path, line: int, field: str | None, *words: str) -> None:
    where = f"{path}:{line}: " + (f"field {field!r}: " if field else "")
    matching = [str(p) for p in err.problems if str(p).startswith(where)]
    assert matching, f"no problem at {where!r} in:\n{err}"
    assert any(all(w in m for w in words) for m in matching), f"{words} not in {matching}"
    assert where in str(err)


# --- good input --------------------------------------------------------------------------------------------


def test_good_csv_with_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.csv",
        "id,title,color,size,steps,guidance,seed,images_per_item,negative\n"
        "A1,Mug,red,,,,,,\n"
        "A2,Tee,blue,768x512,50,4.5,42,3,blurry  text\n",
    )
    rows = read_catalogue(path, Defaults(template=TEMPLATE, negative="ugly", steps=20))
    text = ("text", None, None)  # mode, strength, inputs: a text row's
    assert rows == [  # Row's fields: line, key, prompt, negative, width, height, steps, guidance, images_per_item, seed
        (2, "A1", "studio photo of Mug, red, white background", "ugly", 512, 512, 20, 7.5, 1, None, *text),
        (3, "A2", "studio photo of Tee, blue, white background", "blurry text", 768, 512, 50, 4.5, 3, 42, *text),
    ]


def test_good_jsonl_with_overrides_and_numbers(tmp_path: Path) -> None:
    lines = [
        {"id": 7, "title": "Lamp", "color": 3},
        {},  # replaced by a blank line below
        {
            "id": "B",
            "title": "Chair",
            "color": 2.5,
            "prompt": "a  chair\n on grass",
            "size": "1024X1024",
            "steps": 12,
            "guidance": 0,
            "seed": 2**63 - 1,
            "images_per_item": 16,
            "negative": "dark",
        },
    ]
    text = "\n".join("" if not obj else json.dumps(obj) for obj in lines) + "\n\n"
    rows = read_catalogue(write(tmp_path, "c.jsonl", text), DEFAULTS)
    assert [r.line for r in rows] == [1, 3]
    assert rows[0].key == "7" and rows[0].prompt == "studio photo of Lamp, 3, white background"
    assert rows[1] == (3, "B", "a chair on grass", "dark", 1024, 1024, 12, 0.0, 16, 2**63 - 1, "text", None, None)


def test_bom_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", b"\xef\xbb\xbfid,title,color\nX,Mug,red\n")
    [row] = read_catalogue(path, DEFAULTS)
    assert row.key == "X"


def test_multiline_quoted_cell_keeps_physical_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", 'id,title,color\nA,"Mug\nwith\nhandle",red\n\nB,Tee,\nC,Cap,blue\n')
    err = problems_of(path)
    assert_problem(err, path, 6, "color", "is empty")
    assert len(err.problems) == 1
    rows = read_catalogue(
        write(tmp_path, "ok.csv", 'id,title,color\nA,"Mug\nwith\nhandle",red\nC,Cap,blue\n'), DEFAULTS
    )
    assert [(r.key, r.line) for r in rows] == [("A", 2), ("C", 5)]
    assert rows[0].prompt == "studio photo of Mug with handle, red, white background"


def test_ordinary_content_passes(tmp_path: Path) -> None:
    # Substrings like "sex" in "Sussex", SQL-ish or brace characters are ordinary data.
    path = write(
        tmp_path, "c.csv", 'id,title,color\nS1,Sussex Tea Mug,"duck-egg blue, glossy"\nS2,{title} Scunthorpe; DROP,ok\n'
    )
    rows = read_catalogue(path, DEFAULTS)
    assert rows[0].prompt == "studio photo of Sussex Tea Mug, duck-egg blue, glossy, white background"
    assert rows[1].prompt == "studio photo of {title} Scunthorpe; DROP, ok, white background"


def test_example_catalogue_parses() -> None:
    rows = read_catalogue(
        EXAMPLE, Defaults(template="studio photo of {title}, {color}, {material}, white background", key_column="sku")
    )
    assert len(rows) == 40
    assert len({r.key for r in rows}) == 40
    assert any("Speckled Camp Mug, 12 oz," in r.prompt for r in rows)  # quoted comma
    assert any("Café" in r.prompt for r in rows)


def test_prompt_column_without_template(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,prompt\nA,  a red   mug \n")
    [row] = read_catalogue(path, Defaults(template=None))
    assert row.prompt == "a red mug"


# --- bad input: one test per class ---------------------------------------------------------------------------


def test_non_utf8_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", b"id,title,color\nA,Mug,red\nB,Caf\xe9,blue\n")
    err = problems_of(path)
    assert_problem(err, path, 3, "title", "UTF-8")


def test_non_utf8_inside_multiline_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", b'id,title,color\nA,Mug,"red\nand \xc3(blue"\n')
    assert_problem(problems_of(path), path, 3, "color", "UTF-8")


def test_non_utf8_in_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", b'{"id": "A", "title": "x", "color": "y"}\n{"id": "B", "title": "\xff"}\n')
    err = problems_of(path)
    assert_problem(err, path, 2, None, "UTF-8")


@pytest.mark.parametrize("cell, how", [("", "is empty"), ("   ", "is empty")])
def test_missing_field_csv(tmp_path: Path, cell: str, how: str) -> None:
    path = write(tmp_path, "c.csv", f"id,title,color\nA,Mug,{cell}\n")
    assert_problem(problems_of(path), path, 2, "color", how)


def test_missing_field_short_csv_row(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,color\nA,Mug\n")
    assert_problem(problems_of(path), path, 2, "color", "missing")


@pytest.mark.parametrize(
    "obj, how",
    [
        ({"id": "A", "title": "Mug"}, "is missing"),
        ({"id": "A", "title": "Mug", "color": None}, "is null"),
        ({"id": "A", "title": "Mug", "color": " "}, "is empty"),
    ],
)
def test_missing_field_jsonl(tmp_path: Path, obj: dict[str, object], how: str) -> None:
    path = write(tmp_path, "c.jsonl", json.dumps(obj) + "\n")
    assert_problem(problems_of(path), path, 1, "color", how)


def test_missing_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,color\n,Mug,red\n")
    assert_problem(problems_of(path), path, 2, "id", "is empty")


def test_unknown_template_column_csv_is_one_header_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,colour\nA,Mug,red\nB,Tee,blue\n")
    err = problems_of(path)
    assert_problem(err, path, 1, "color", "'colour'", "'title'")
    assert len(err.problems) == 1


def test_missing_key_column_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "title,color\nMug,red\n")
    err = problems_of(path)
    assert_problem(err, path, 1, "id", "no such column")
    assert len(err.problems) == 1


def test_empty_prompt_without_template(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,prompt\nA,a mug\nB, \n")
    err = problems_of(path, Defaults(template=None))
    assert_problem(err, path, 3, "prompt", "empty")


def test_prompt_column_absent_without_template(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title\nA,a mug\n")
    assert_problem(problems_of(path, Defaults(template=None)), path, 1, "prompt", "no such column")


def test_whitespace_only_value_is_missing_not_rendered(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", '{"id": "A", "t": "\\u00a0"}\n{"id": "B", "t": "x"}\n')
    # A value that is all whitespace is a missing field before it can render an empty prompt.
    assert_problem(problems_of(path, Defaults(template="{t}")), path, 1, "t", "is empty")


@pytest.mark.parametrize(
    "column, value, words",
    [
        ("size", "500x512", ("multiple of 8",)),
        ("size", "4096x512", ("2048",)),
        ("size", "big", ("WIDTHxHEIGHT",)),
        ("steps", "0", ("1 to 200",)),
        ("steps", "2.5", ("1 to 200",)),
        ("guidance", "51", ("0 to 50",)),
        ("guidance", "nan", ("0 to 50",)),
        ("seed", "-1", ("0 to 9223372036854775807",)),
        ("seed", str(2**63), ("0 to",)),
        ("images_per_item", "17", ("1 to 16",)),
    ],
)
def test_bad_override_values(tmp_path: Path, column: str, value: str, words: tuple[str, ...]) -> None:
    path = write(
        tmp_path,
        "c.csv",
        f"id,title,color,{column}\nA,Mug,red,64x64\nB,Tee,blue,{value}\n"
        if column == "size"
        else f"id,title,color,{column}\nA,Mug,red,1\nB,Tee,blue,{value}\n",
    )
    err = problems_of(path)
    assert_problem(err, path, 3, column, *words)
    assert len(err.problems) == 1


def test_duplicate_key_names_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,color\nA,Mug,red\nB,Tee,blue\nA,Cap,green\n")
    err = problems_of(path)
    assert_problem(err, path, 4, "id", "duplicate", "line 2")


@pytest.mark.parametrize("key", [".", "..", "a\tb", "x" * 201])
def test_invalid_item_key(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, "c.jsonl", json.dumps({"id": key, "title": "Mug", "color": "red"}) + "\n")
    assert_problem(problems_of(path), path, 1, "id", "invalid item key")


def test_long_but_allowed_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", json.dumps({"id": "x" * 200, "title": "Mug", "color": "red"}) + "\n")
    assert read_catalogue(path, DEFAULTS)[0].key == "x" * 200


def test_csv_row_with_too_many_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title,color\nA,Mug, large,red\n")
    err = problems_of(path)
    assert_problem(err, path, 2, None, "4 cells", "3 columns")
    assert err.problems[0].field is None


@pytest.mark.parametrize(
    "line, words", [("{not json", ("not valid JSON",)), ("[1, 2]", ("JSON object",)), ('"text"', ("JSON object",))]
)
def test_jsonl_bad_line(tmp_path: Path, line: str, words: tuple[str, ...]) -> None:
    path = write(tmp_path, "c.jsonl", '{"id": "A", "title": "Mug", "color": "red"}\n' + line + "\n")
    err = problems_of(path)
    assert_problem(err, path, 2, None, *words)


def test_jsonl_nested_value_used_by_template(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", '{"id": "A", "title": ["Mug"], "color": "red", "extra": {"ok": 1}}\n')
    err = problems_of(path)
    assert_problem(err, path, 1, "title", "an array")
    assert len(err.problems) == 1


@pytest.mark.parametrize("name, content", [("c.csv", ""), ("c.csv", "id,title,color\n\n"), ("c.jsonl", "\n \n")])
def test_empty_catalogue(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)
    err = problems_of(path)
    assert_problem(err, path, 1, None, "no rows")


def test_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=".txt"):
        read_catalogue(write(tmp_path, "c.txt", "id\nA\n"), DEFAULTS)


def test_all_problems_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.csv", "id,title,color,steps\nA,Mug,,\nA,Tee,blue,\nB,,red,999\nC,Cap,red,1,extra\nD,Hat,red,5\n"
    )
    err = problems_of(path)
    assert_problem(err, path, 2, "color", "is empty")
    assert_problem(err, path, 3, "id", "duplicate", "line 2")
    assert_problem(err, path, 4, "title", "is empty")
    assert_problem(err, path, 4, "steps", "1 to 200")
    assert_problem(err, path, 5, None, "5 cells")
    assert len(err.problems) == 5
    assert [p.line for p in err.problems] == sorted(p.line for p in err.problems)


def test_problem_listing_is_capped(tmp_path: Path) -> None:
    body = "".join(f"K{i},Mug,\n" for i in range(60))
    err = problems_of(write(tmp_path, "c.csv", "id,title,color\n" + body))
    text = str(err)
    assert len(err.problems) == 60
    assert len(text.splitlines()) == 51
    assert text.splitlines()[-1] == "... and 10 more"


def test_problem_str() -> None:
    assert str(Problem("catalogue.csv", 12, "color", "is empty")) == "catalogue.csv:12: field 'color': is empty"
    assert str(Problem("catalogue.csv", 3, None, "bad")) == "catalogue.csv:3: bad"


# --- templates, defaults, sizes ----------------------------------------------------------------------------------


def test_render_and_fields() -> None:
    assert template_fields("{a} and {b}, {a}") == ["a", "b"]
    assert template_fields("no fields {{here}}") == []
    assert render("{a}  x\n{b}", {"a": " hi ", "b": "3"}) == "hi x 3"
    assert render("{{lit}} {a}", {"a": "{b}"}) == "{lit} {b}"
    with pytest.raises(KeyError):
        render("{a} {b}", {"a": "x"})


@pytest.mark.parametrize("template", ["{}", "{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{a", "a}", "{ }"])
def test_bad_templates_are_usage_errors(template: str) -> None:
    with pytest.raises(UsageError):
        template_fields(template)
    with pytest.raises(UsageError):
        Defaults(template=template)


def test_bad_template_is_usage_error_not_row_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "id,title\nA,Mug\n")
    with pytest.raises(UsageError):
        read_catalogue(path, Defaults(template="{title!s}"))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=500),
        dict(height=4096),
        dict(steps=0),
        dict(steps=201),
        dict(guidance=-1),
        dict(guidance=float("inf")),
        dict(images_per_item=17),
        dict(steps=2.5),
        dict(template="  "),
        dict(key_column=""),
    ],
)
def test_bad_defaults_are_usage_errors(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("template", TEMPLATE)
    with pytest.raises(UsageError):
        Defaults(**kwargs)


@pytest.mark.parametrize("text, size", [("512x512", (512, 512)), ("768X1024", (768, 1024)), (" 64x2048 ", (64, 2048))])
def test_parse_size_good(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["512", "512x", "x512", "56x512", "512x2056", "513x512", "512*512", "-512x512", "512x512x3", ""]
)
def test_parse_size_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


# --- contract.identity ---------------------------------------------------------------------------------------


def test_derive_seed_is_deterministic_and_sensitive() -> None:
    seed = derive_seed(1234, "MUG-001", 0)
    assert seed == derive_seed(1234, "MUG-001", 0)
    others = {derive_seed(1235, "MUG-001", 0), derive_seed(1234, "MUG-002", 0), derive_seed(1234, "MUG-001", 1)}
    assert seed not in others and len(others) == 3


def test_derive_seed_fits_63_bits() -> None:
    seeds = [derive_seed(j, f"K{i}", v) for j in (0, 2**63 - 1) for i in range(200) for v in range(3)]
    assert all(0 <= s < 2**SEED_BITS for s in seeds)
    assert SEED_BITS == 63
    assert max(seeds) > 2**62  # uses the whole range, not a small slice


HASH_FIELDS = dict(prompt="a mug", negative="", width=512, height=512, steps=30, guidance=7.5, seed=1, model="m")


def content_hash(**fields: Any) -> str:
    """The identity's hash over flat fields, the generation parameters gathered into their typed value."""
    params = GenerationParams(**{name: fields.pop(name) for name in ("width", "height", "steps", "guidance")})
    return identity_hash(params=params, **fields)


def test_content_hash_stable_across_order() -> None:
    reordered = dict(reversed(list(HASH_FIELDS.items())))
    assert content_hash(**HASH_FIELDS) == content_hash(**reordered)
    assert content_hash(**{**HASH_FIELDS, "guidance": 7}) == content_hash(**{**HASH_FIELDS, "guidance": 7.0})


@pytest.mark.parametrize(
    "field, value",
    [
        ("prompt", "a cup"),
        ("negative", "x"),
        ("width", 768),
        ("height", 768),
        ("steps", 31),
        ("guidance", 7.0),
        ("seed", 2),
        ("model", "n"),
    ],
)
def test_content_hash_changes_with_each_field(field: str, value: object) -> None:
    assert content_hash(**HASH_FIELDS) != content_hash(**{**HASH_FIELDS, field: value})


@pytest.mark.parametrize(
    "key, segment",
    [
        ("a/b", "a%2Fb"),
        ("two words", "two%20words"),
        ("Café", "Caf%C3%A9"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("MUG-001", "MUG-001"),
        ("v1.2", "v1.2"),
    ],
)
def test_object_key_encodes_segment(key: str, segment: str) -> None:
    result = object_key(9, key, 2, "png")
    assert result == f"jobs/9/{segment}/2.png"
    assert all(part not in (".", "..", "") for part in result.split("/"))


# --- hardening: bounded, linear, streaming input with clear messages ---------------------------------------------

SMALL = Limits(cell_bytes=64, row_bytes=256, columns=5, prompt_bytes=120, items=4, problems=1000)
HEAD = "id,title,color\n"


def obj_line(**fields: object) -> str:
    return json.dumps({"id": "A", "title": "Mug", "color": "red", **fields}) + "\n"


def expect(
    tmp_path: Path,
    name: str,
    content: str | bytes,
    line: int,
    field: str | None,
    *words: str,
    limits: Limits | None = None,
    defaults: Defaults = DEFAULTS,
) -> CatalogueError:
    """The catalogue fails with a CatalogueError (nothing else) naming file:line:field and `words`."""
    path = write(tmp_path, name, content)
    with pytest.raises(CatalogueError) as info:
        read_catalogue(path, defaults, limits)
    assert_problem(info.value, path, line, field, *words)
    return info.value


# (name, content, line, field, words, limits) — each row one way a catalogue can be wrong.
BAD_CASES = [
    # bytes that break later stages
    ("nul-csv", "c.csv", HEAD + "A,Mu\x00g,red\n", 2, "title", ("NUL", "PostgreSQL"), None),
    ("nul-csv-key", "c.csv", HEAD + "A\x00,Mug,red\n", 2, "id", ("NUL",), None),
    ("nul-jsonl", "c.jsonl", '{"id": "A", "title": "Mu\\u0000g", "color": "red"}\n', 1, "title", ("NUL",), None),
    ("nul-jsonl-key", "c.jsonl", '{"id": "A\\u0000", "title": "Mug", "color": "red"}\n', 1, "id", ("NUL",), None),
    # a lone surrogate: valid JSON escape, no character (no UTF-8 encoder, database or store takes it)
    (
        "surrogate-jsonl",
        "c.jsonl",
        '{"id": "A", "title": "Mu\\ud800g", "color": "red"}\n',
        1,
        "title",
        ("U+D800",),
        None,
    ),
    (
        "surrogate-jsonl-key",
        "c.jsonl",
        '{"id": "A\\udfff", "title": "Mug", "color": "red"}\n',
        1,
        "id",
        ("U+DFFF",),
        None,
    ),
    (
        "surrogate-jsonl-second-row",
        "c.jsonl",
        obj_line() + '{"id": "B", "title": "Tee", "color": "\\udc80"}\n',
        2,
        "color",
        ("lone surrogate", "U+DC80"),
        None,
    ),
    ("percent-key", "c.csv", HEAD + "%" * 200 + ",Mug,red\n", 2, "id", ("600 bytes", "percent-encoded", "255"), None),
    ("cjk-key", "c.csv", HEAD + "界" * 85 + ",Mug,red\n", 2, "id", ("765 bytes", "255"), None),
    ("cjk-key-jsonl", "c.jsonl", obj_line(id="界" * 85), 1, "id", ("765 bytes",), None),
    ("space-key", "c.csv", HEAD + " ".join(["ab"] * 66) + ",Mug,red\n", 2, "id", ("327 bytes",), None),
    ("c1-control-key", "c.jsonl", obj_line(id="a\x85b"), 1, "id", ("control characters",), None),
    ("seed-negative-jsonl", "c.jsonl", obj_line(seed=-1), 1, "seed", ("0 to 9223372036854775807",), None),
    ("seed-too-big-jsonl", "c.jsonl", obj_line(seed=2**63), 1, "seed", ("0 to",), None),
    ("seed-float-jsonl", "c.jsonl", obj_line(seed=1.5), 1, "seed", ("whole number",), None),
    ("seed-huge-text", "c.csv", "id,title,color,seed\nA,Mug,red," + "9" * 5000 + "\n", 2, "seed", ("0 to",), None),
    (
        "duplicate-json-field",
        "c.jsonl",
        '{"id": "A", "title": "Mug", "color": "red", "color": "blue"}\n',
        1,
        "color",
        ("more than once",),
        None,
    ),
    (
        "duplicate-json-key-field",
        "c.jsonl",
        '{"id": "A", "id": "B", "title": "Mug", "color": "red"}\n',
        1,
        "id",
        ("more than once",),
        None,
    ),
    # caps
    ("cell-cap-csv", "c.csv", HEAD + "A,Mug," + "r" * 65 + "\n", 2, "color", ("65 bytes", "64", "CELL_BYTES"), SMALL),
    ("cell-cap-csv-multibyte", "c.csv", HEAD + "A,Mug," + "é" * 33 + "\n", 2, "color", ("66 bytes",), SMALL),
    ("cell-cap-jsonl", "c.jsonl", obj_line(title="t" * 100), 1, "title", ("100 bytes", "CELL_BYTES"), SMALL),
    (
        "row-cap-csv",
        "c.csv",
        HEAD + "A,Mug," + "r" * 300 + "\n",
        2,
        None,
        ("longer than 256 bytes", "ROW_BYTES"),
        SMALL,
    ),
    (
        "row-cap-csv-header",
        "c.csv",
        "id,title,color," + "x" * 300 + "\nA,Mug,red\n",
        1,
        None,
        ("header is longer than 256",),
        SMALL,
    ),
    ("row-cap-jsonl", "c.jsonl", obj_line(title="t" * 300), 1, None, ("longer than 256 bytes", "ROW_BYTES"), SMALL),
    (
        "columns-cap-csv",
        "c.csv",
        "id,title,color,a,b,c\nA,Mug,red,1,2,3\n",
        1,
        None,
        ("6 columns", "cap of 5", "COLUMNS"),
        SMALL,
    ),
    ("columns-cap-jsonl", "c.jsonl", obj_line(a=1, b=2, c=3), 1, None, ("6 fields", "cap of 5"), SMALL),
    (
        "items-cap",
        "c.csv",
        HEAD + "A,Mug,red\nB,Tee,blue\nC,Cap,green\nD,Hat,gold\nE,Bag,teal\n",
        6,
        None,
        ("more than 4 items", "MAX_ITEMS"),
        SMALL,
    ),
    (
        "items-cap-images",
        "c.csv",
        "id,title,color,images_per_item\nA,Mug,red,3\nB,Tee,blue,2\n",
        3,
        None,
        ("more than 4 items",),
        SMALL,
    ),
    (
        "prompt-cap",
        "c.csv",
        HEAD + "A,Mug," + "red " * 30 + "\n",
        2,
        "prompt",
        ("bytes after rendering", "cap of 120", "PROMPT_BYTES"),
        Limits(prompt_bytes=120),
    ),
    ("prompt-cap-own", "c.csv", "id,prompt\nA," + "word " * 500 + "\n", 2, "prompt", ("2,499 bytes", "2048"), None),
    (
        "negative-cap",
        "c.csv",
        "id,title,color,negative\nA,Mug,red," + "bad " * 40 + "\n",
        2,
        "negative",
        ("bytes after rendering",),
        Limits(prompt_bytes=120),
    ),
    # structure and syntax
    (
        "unclosed-quote-eof",
        "c.csv",
        HEAD + 'A,"Mug,red\nB,Tee,blue\nC,Cap,green\n',
        2,
        "title",
        ("unclosed quote", "line 4", "must close"),
        None,
    ),
    (
        "unclosed-quote-mid",
        "c.csv",
        HEAD + 'A,Mug,"red\nB,Tee,blue\nC,"Cap",green\n',
        2,
        "color",
        ("unclosed quote",),
        None,
    ),
    (
        "unclosed-quote-runaway",
        "c.csv",
        HEAD + 'A,"Mug,red\n' + "B,Tee,blue\n" * 40,
        2,
        "title",
        ("unclosed quote", "256 bytes"),
        replace(SMALL, cell_bytes=1024, quoted_lines=1000),  # the row cap, with the quoted-cell caps out of the way
    ),
    (
        "stray-quote-lines",
        "c.csv",
        HEAD + "A,Mug,red\n" + 'B,Tee,"blue\n' + "C,Cap,green\n" * 40,
        3,
        "color",
        ("likely a stray quote", "still open on line 13 (11 lines)", "PIXELMILL_CATALOGUE_QUOTED_LINES"),
        None,
    ),
    (
        "stray-quote-bytes",
        "c.csv",
        HEAD + 'A,"Mug,red\n' + "B,Tee,blue\n" * 40,
        2,
        "title",
        ("likely a stray quote", "over 64 bytes", "PIXELMILL_CATALOGUE_CELL_BYTES"),
        SMALL,
    ),
    (
        "quote-closed-then-text",
        "c.csv",
        HEAD + 'A,"Mug" large,red\n',
        2,
        "title",
        ("text after the closing quote", '""'),
        None,
    ),
    ("semicolons", "c.csv", "id;title;color\nA;Mug;red\n", 1, None, ("';'", "semicolon", "comma-separated"), None),
    ("tabs", "c.csv", "id\ttitle\tcolor\nA\tMug\tred\n", 1, None, ("tab",), None),
    ("pipes", "c.csv", "id|title|color\nA|Mug|red\n", 1, None, ("pipe",), None),
    ("duplicate-column", "c.csv", "id,title,color,title\nA,Mug,red,x\n", 1, "title", ("appears 2 times",), None),
    ("carriage-return", "c.csv", HEAD + "A,Mug\rx,red\n", 2, None, ("carriage return",), None),
    ("too-many-cells", "c.csv", HEAD + "A,Mug,red,extra\n", 2, None, ("4 cells", "double quotes"), None),
    (
        "pretty-json-object",
        "c.jsonl",
        json.dumps({"id": "A", "title": "Mug", "color": "red"}, indent=2),
        1,
        None,
        ("one JSON object per line", "pretty-printed"),
        None,
    ),
    (
        "pretty-json-array",
        "c.jsonl",
        json.dumps([{"id": "A", "title": "Mug", "color": "red"}], indent=2),
        1,
        None,
        ("one JSON object per line",),
        None,
    ),
    (
        "json-array-one-line",
        "c.jsonl",
        json.dumps([{"id": "A", "title": "Mug", "color": "red"}]) + "\n",
        1,
        None,
        ("one JSON object per line",),
        None,
    ),
    (
        "two-objects-one-line",
        "c.jsonl",
        obj_line().strip() + obj_line(id="B"),
        1,
        None,
        ("more than one JSON value", "one object per line"),
        None,
    ),
    (
        "deep-json",
        "c.jsonl",
        '{"id": "A", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
        1,
        None,
        ("nested too deeply",),
        Limits(row_bytes=1 << 20),
    ),
    (
        "huge-json-int",
        "c.jsonl",
        '{"id": "A", "title": "Mug", "color": ' + "9" * 5000 + "}\n",
        1,
        None,
        ("not valid JSON for a catalogue",),
        None,
    ),
    ("json-object-value", "c.jsonl", obj_line(color={"a": 1}), 1, "color", ("an object",), None),
    ("json-bad-override-type", "c.jsonl", obj_line(steps=[1]), 1, "steps", ("an array",), None),
    (
        "utf8-jsonl-offset",
        "c.jsonl",
        b'{"id": "A", "title": "\xc3(", "color": "red"}\n',
        1,
        None,
        ("UTF-8", "byte 0xc3", "byte 23"),
        None,
    ),
    ("utf8-header", "c.csv", b"id,ti\xfftle,color\nA,Mug,red\n", 1, None, ("header", "UTF-8"), None),
    ("bom-csv-then-bad", "c.csv", b"\xef\xbb\xbfid,title,color\nA,,red\n", 2, "title", ("is empty",), None),
    ("blank-lines-then-bad", "c.csv", HEAD + "\n\nA,Mug,\n", 4, "color", ("is empty",), None),
    ("header-only", "c.csv", HEAD, 1, None, ("no rows",), None),
    ("jsonl-blank-only", "c.jsonl", "\n\n", 1, None, ("no rows",), None),
]


@pytest.mark.parametrize(
    "name, content, line, field, words, limits", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_catalogue(
    tmp_path: Path, name: str, content: str, line: int, field: str | None, words: tuple[str, ...], limits: Limits | None
) -> None:
    expect(tmp_path, name, content, line, field, *words, limits=limits)


def test_bad_cases_are_many() -> None:
    assert len(BAD_CASES) >= 40


def test_long_json_line_is_skipped_and_later_lines_checked(tmp_path: Path) -> None:
    err = expect(
        tmp_path,
        "c.jsonl",
        obj_line(title="t" * 1000) + obj_line(id="B", color=""),
        1,
        None,
        "longer than 256",
        limits=SMALL,
    )
    assert_problem(err, tmp_path / "c.jsonl", 2, "color", "is empty")


def test_unclosed_quote_is_not_reported_as_missing_field(tmp_path: Path) -> None:
    err = expect(tmp_path, "c.csv", HEAD + 'A,"Mug,red\nB,Tee,blue\n', 2, "title", "unclosed quote")
    assert not any("missing" in p.message for p in err.problems)


def test_pretty_printed_json_is_one_problem_not_many(tmp_path: Path) -> None:
    content = json.dumps({"id": "A", "title": "Mug", "color": "red", "a": 1, "b": 2}, indent=2)
    err = expect(tmp_path, "c.jsonl", content, 1, None, "pretty-printed")
    assert len(err.problems) == 1


def test_problem_count_cap_stops_reading(tmp_path: Path) -> None:
    body = "".join(f"K{i},Mug,\n" for i in range(100))
    err = expect(
        tmp_path, "c.csv", HEAD + body, 11, None, "stopped reading after 10 problems", limits=Limits(problems=10)
    )
    assert len(err.problems) == 11


def test_key_limits_follow_the_store(tmp_path: Path) -> None:
    key = "k" * 300  # 300 bytes: too long for a path segment, fine in S3
    path = write(tmp_path, "c.jsonl", json.dumps({"id": key, "prompt": "a mug"}) + "\n")
    defaults = Defaults(template=None)
    with pytest.raises(CatalogueError, match="invalid item key"):
        read_catalogue(path, defaults)  # MAX_KEY_LENGTH characters
    long_ok = "k" * 200
    path = write(tmp_path, "d.jsonl", json.dumps({"id": long_ok, "prompt": "a mug"}) + "\n")
    assert read_catalogue(path, defaults, Limits.for_storage("s3://bucket"))[0].key == long_ok
    prefixed = Limits.for_storage("s3://bucket/" + "p" * 900)
    assert prefixed.key_bytes == 1024 - 901 - KEY_ROOM
    with pytest.raises(CatalogueError, match=r"over 86 \(the object key limit"):
        read_catalogue(path, defaults, prefixed)
    assert Limits.for_storage("file:///data").key_bytes == 255
    assert Limits().key_bytes == 255


def test_key_byte_length_matches_object_key() -> None:
    for key in ["MUG-001", "%" * 10, "界" * 3, "a b/c", "😀"]:
        segment = object_key(1, key, 0, "png").split("/")[2]
        assert key_bytes(key) == len(segment.encode())


def test_key_at_the_segment_limit(tmp_path: Path) -> None:
    ok, over = "界" * 28, "界" * 29  # 252 and 261 bytes once encoded
    path = write(tmp_path, "c.jsonl", obj_line(id=ok) + obj_line(id="B"))
    assert read_catalogue(path, DEFAULTS)[0].key == ok
    expect(tmp_path, "d.jsonl", obj_line(id=over), 1, "id", "261 bytes")


@pytest.mark.parametrize("bad", [-1, 2**63, 1.0, True, "1"])
def test_job_seed_uses_the_row_seed_range(bad: object) -> None:
    with pytest.raises(ValueError, match=str(SEED_MAX)):
        check_seed(bad)  # type: ignore[arg-type]  # wrong types on purpose: the check is at run time
    assert check_seed(0) == 0 and check_seed(SEED_MAX) == SEED_MAX == 2**SEED_BITS - 1
    assert parse_seed(str(SEED_MAX)) == SEED_MAX
    with pytest.raises(ValueError, match=str(SEED_MAX)):
        parse_seed(str(SEED_MAX + 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cell_bytes=0),
        dict(row_bytes=-1),
        dict(columns=1.5),
        dict(items=True),
        dict(key_segment_bytes=0),
        dict(key_prefix_bytes=-1),
        dict(key_prefix_bytes=2000),
    ],
)
def test_bad_limits_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Limits(**kwargs)


# --- sources: gzip, stdin, Python rows ------------------------------------------------------------------------

GOOD_CSV = HEAD + "A,Mug,red\nB,Tee,blue\n"
GOOD_JSONL = obj_line() + obj_line(id="B", title="Tee", color="blue")


@pytest.mark.parametrize("name, content", [("c.csv.gz", GOOD_CSV), ("c.jsonl.gz", GOOD_JSONL), ("C.CSV.GZ", GOOD_CSV)])
def test_gzip_catalogues(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, gzip.compress(content.encode()))
    rows = read_catalogue(path, DEFAULTS)
    assert [(r.line, r.key) for r in rows] == [
        (1 + name.lower().startswith("c.csv"), "A"),
        (2 + name.lower().startswith("c.csv"), "B"),
    ]


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress((GOOD_CSV * 200).encode())
    for name, content in [("bad.csv.gz", b"not gzip at all\n"), ("cut.csv.gz", data[: len(data) // 2])]:
        with pytest.raises(CatalogueError, match=r"\.csv\.gz:\d+: could not read the file.*gzip -t"):
            read_catalogue(write(tmp_path, name, content), DEFAULTS)


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize(
    "content, fmt",
    [
        (GOOD_CSV, None),
        (GOOD_JSONL, None),
        ("\ufeff" + GOOD_CSV, None),
        ("\n" + GOOD_JSONL, None),
        (GOOD_CSV, "csv"),
        (GOOD_JSONL, "jsonl"),
    ],
)
def test_stdin(monkeypatch: pytest.MonkeyPatch, content: str, fmt: Format | None) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(content.encode()))
    rows = read_catalogue("-", DEFAULTS, fmt=fmt)
    assert [r.key for r in rows] == ["A", "B"]
    assert not sys.stdin.buffer.closed


def test_stdin_problem_names_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"id,title,color\nA,Mug,\n"))
    with pytest.raises(CatalogueError, match=r"^<stdin>:2: field 'color': is empty"):
        read_catalogue("-", DEFAULTS)


def test_unsupported_types_name_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.json.*\.csv\.gz"):
        read_catalogue(write(tmp_path, "c.json", "{}"), DEFAULTS)


@pytest.mark.parametrize("jsonl", [True, False], ids=["jsonl", "python-rows"])
def test_a_wrong_key_or_field_in_json_is_one_problem_per_field_with_the_likely_fix(tmp_path: Path, jsonl: bool) -> None:
    """Without the first object's hint, every row said only "is missing" (1,000 lines for a big file)."""
    rows = [{"sku": f"A{i}", "titel": "Mug", "color": "red"} for i in range(3)]
    with pytest.raises(CatalogueError) as info:
        if jsonl:
            path = write(tmp_path, "c.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            read_catalogue(path, DEFAULTS)
        else:
            path = Path("api")
            list(iter_rows(rows, DEFAULTS, name="api"))
    assert len(info.value.problems) == 2
    assert_problem(info.value, path, 1, "id", "missing", "--key sku")
    assert_problem(info.value, path, 1, "title", "missing", "did you mean {titel}?")


@pytest.mark.parametrize(
    "name, words",
    [("c.tsv", "--delimiter tab"), ("c.txt", "--encoding utf-16"), ("c.xlsx", "as CSV"), ("c.json", "jq -c")],
)
def test_an_export_under_another_file_type_says_what_to_do(tmp_path: Path, name: str, words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        read_catalogue(write(tmp_path, name, "sku\tid\n"), DEFAULTS)


def test_nan_in_an_override_column_means_the_job_default() -> None:
    """pandas writes NaN for an empty cell: in an optional override column it is "not given", never 'nan'."""
    rows = list(iter_rows([{"id": "A", "title": "Mug", "color": "red", "seed": float("nan")}], DEFAULTS))
    assert [(r.prompt, r.seed) for r in rows] == [("studio photo of Mug, red, white background", None)]


def test_iter_rows_python_api() -> None:
    rows = list(
        iter_rows(
            [
                {"id": "A", "title": "Mug", "color": "red", "seed": 5},
                {"id": 2, "title": "Tee", "color": 1.5, "steps": 10},
            ],
            DEFAULTS,
        )
    )
    assert [(r.line, r.key, r.prompt, r.seed, r.steps) for r in rows] == [
        (1, "A", "studio photo of Mug, red, white background", 5, 30),
        (2, "2", "studio photo of Tee, 1.5, white background", None, 10),
    ]


@pytest.mark.parametrize(
    "rows, line, field, words",
    [
        ([{"id": "A", "title": "Mug", "color": b"red"}], 1, "color", ("got bytes",)),
        ([{"id": "A", "title": "Mug", "color": "red"}, ["B", "Tee"]], 2, None, ("mapping", "list")),
        (
            [{"id": "A", "title": "Mug", "color": "red"}, {"id": "A", "title": "Tee", "color": "red"}],
            2,
            "id",
            ("duplicate", "line 1"),
        ),
        ([{"id": "A", "title": "Mug", "color": "r\x00d"}], 1, "color", ("NUL",)),
        ([{"id": "A", "title": "Mug", "color": "r\ud83dd"}], 1, "color", ("lone surrogate", "U+D83D")),
        ([{"id": "A", "prompt": "a mug \udc00", "title": "Mug", "color": "red"}], 1, "prompt", ("U+DC00",)),
        ([{"id": "A", "title": "Mug", "color": "red", "negative": "\ud800"}], 1, "negative", ("U+D800",)),
        ([{"id": "A", "title": "x" * 20000, "color": "red"}], 1, "title", ("cap of 16,384",)),
        ([], 1, None, ("no rows",)),
        ([{"id": "A", "title": float("nan"), "color": "red"}], 1, "title", ("NaN", "missing")),  # pandas' missing
        ([{"id": float("nan"), "title": "Mug", "color": "red"}], 1, "id", ("NaN",)),
        ([{"id": "A", "title": "Mug", "color": float("-inf")}], 1, "color", ("finite",)),
        ([{"id": "A", "title": "Mug", "color": "red", "steps": float("inf")}], 1, "steps", ("finite",)),
    ],
)
def test_iter_rows_problems(
    rows: list[Mapping[str, object]], line: int, field: str | None, words: tuple[str, ...]
) -> None:
    with pytest.raises(CatalogueError) as info:
        list(iter_rows(rows, DEFAULTS, name="api"))
    assert_problem(info.value, Path("api"), line, field, *words)


# --- streaming and all-or-nothing --------------------------------------------------------------------------------


def test_iter_catalogue_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    body = "".join(f"K{i},Mug {i},red\n" for i in range(50_000))
    stdin = FakeStdin((HEAD + body).encode())
    monkeypatch.setattr(sys, "stdin", stdin)
    rows = iter_catalogue("-", DEFAULTS, fmt="csv")
    assert next(rows).key == "K0"
    assert stdin.buffer.tell() < len(body) // 4  # read a little, not the file
    assert sum(1 for _ in rows) == 49_999


def test_no_rows_after_the_first_problem_and_error_at_the_end(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", HEAD + "A,Mug,red\nB,Tee,\nC,Cap,blue\nD,Hat,\n")
    seen: list[str] = []
    with pytest.raises(CatalogueError) as info:
        for row in iter_catalogue(path, DEFAULTS):
            seen.append(row.key)
    assert seen == ["A"]  # yielded before the problem was found; the caller rolls back on the error
    assert [p.line for p in info.value.problems] == [3, 5]


def test_stats_and_long_prompt_warning(tmp_path: Path) -> None:
    long_title = " ".join(f"word{i}" for i in range(80))
    path = write(tmp_path, "c.csv", HEAD + f"A,Mug,red\nB,{long_title},blue\n")
    stats = Stats()
    rows = list(iter_catalogue(path, DEFAULTS, stats=stats))
    assert len(rows) == stats.rows == 2 and stats.items == 2
    assert stats.long_prompts == 1 and stats.long_prompt_lines == [3]
    [warning] = stats.warnings()
    assert "1 row(s)" in warning and "77-token" in warning and "estimated" in warning and "3" in warning
    assert Stats().warnings() == []


@pytest.mark.parametrize(
    "prompt, low, high",
    [
        ("a red mug", 5, 5),
        ("studio photo of a mug, red", 9, 9),
        ("SKU 12345", 8, 8),
        (" ".join(["photo"] * 100), 102, 102),
        ("a" * 200, 3, 3),
    ],
)
def test_estimate_tokens_is_a_lower_bound(prompt: str, low: int, high: int) -> None:
    assert low <= estimate_tokens(prompt) <= high


def test_csv_fast_and_full_paths_agree(tmp_path: Path) -> None:
    # The same rows through the fast path (plain columns) and the full path (an override column present).
    plain = HEAD + "A,Mug,red\nB, Tee  , blue\nC,{x},  green \n"
    with_seed = "id,title,color,seed\nA,Mug,red,\nB, Tee  , blue,\nC,{x},  green ,\n"
    fast = read_catalogue(write(tmp_path, "a.csv", plain), DEFAULTS)
    full = read_catalogue(write(tmp_path, "b.csv", with_seed), DEFAULTS)
    assert fast == full
    assert fast[2].prompt == "studio photo of {x}, green , white background"  # as before: values are not stripped


# --- linear time, flat memory -------------------------------------------------------------------------------------


def test_huge_header_is_refused_linearly(tmp_path: Path) -> None:
    # 200k distinct columns, caps raised so the header is parsed: refused at the column cap.
    path = write(tmp_path, "wide.csv", ",".join(f"c{i}" for i in range(200_000)) + "\n1\n")
    started = time.process_time()
    with pytest.raises(CatalogueError, match="200,000 columns"):
        read_catalogue(path, DEFAULTS, Limits(row_bytes=64 << 20))
    assert time.process_time() - started < 5  # quadratic duplicate detection took minutes


def test_duplicate_header_detection_is_linear(tmp_path: Path) -> None:
    # 200k columns all allowed, all duplicates: a quadratic check would take hours; this one is one pass.
    path = write(tmp_path, "dups.csv", "id," + ",".join(["a", "b"] * 100_000) + "\n")
    started = time.process_time()
    with pytest.raises(CatalogueError) as info:
        read_catalogue(path, Defaults(template="{a}"), Limits(row_bytes=64 << 20, columns=300_000))
    assert time.process_time() - started < 5
    assert {p.field for p in info.value.problems if "appears" in p.message} == {"a", "b"}


@pytest.mark.parametrize(
    "name, content",
    [
        ("big.jsonl", b'{"id": "' + b"x" * (20 << 20) + b'"}\n'),
        ("big.csv", b"id,title,color\nA,Mug," + b"r" * (20 << 20) + b"\n"),
    ],
)
def test_huge_line_is_not_held_in_memory(tmp_path: Path, name: str, content: bytes) -> None:
    path = write(tmp_path, name, content)
    tracemalloc.start()
    try:
        with pytest.raises(CatalogueError, match="longer than 1,048,576 bytes"):
            read_catalogue(path, DEFAULTS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # a 20 MB line, at most a little over the 1 MiB cap held


# --- any input: rows or CatalogueError, nothing else ------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400) | st.text(alphabet='id,tle"co\n\r\x00;{}[]:é界 \\', max_size=200).map(str.encode))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_any_bytes_give_rows_or_catalogue_error(monkeypatch: pytest.MonkeyPatch, fmt: Format, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(HEAD.encode() + data if fmt == "csv" and data[:1] != b"!" else data))
    try:
        rows = read_catalogue("-", DEFAULTS, Limits(cell_bytes=32, row_bytes=64, columns=8), fmt=fmt)
    except CatalogueError as exc:
        assert exc.problems and all(isinstance(p, Problem) and p.line >= 1 for p in exc.problems)
    else:
        assert rows and all(isinstance(r, Row) for r in rows)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["id", "title", "color", "seed", "steps", "size", "prompt"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats()
            | st.text(max_size=20)
            | st.lists(st.integers(), max_size=2),
        ),
        max_size=5,
    )
)
def test_any_python_rows_give_rows_or_catalogue_error(rows: list[dict[str, object]]) -> None:
    try:
        result = list(iter_rows(rows, DEFAULTS))
    except CatalogueError as exc:
        assert exc.problems
    else:
        assert len(result) == len(rows)


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(st.text(alphabet=" \t\u00a0\u3000a,{}x\n\x1c", max_size=5), min_size=3, max_size=3),
    template=st.sampled_from(
        ["{a} {b}", "{a}{b}", "x{a}y{b}z", "{a}, {b}", "{{{a}}} {b}", " {a} ", "{b}{{", "{a} {a}"]
    ),
)
def test_fast_path_agrees_with_the_full_check(values: list[str], template: str) -> None:
    defaults = Defaults(template=template)
    fast_v, full_v = (_Validator("p", defaults, Limits(), ["id", "a", "b"], 1, Stats()) for _ in range(2))
    assert fast_v.fast is not None
    cells = values if values[0].strip() else ["K", *values[1:]]
    fast, full = fast_v.fast(2, cells), full_v._row(2, cells)
    assert fast is None or fast == full  # the fast path accepts only what the full check accepts, identically
    if full is None:
        assert fast is None


def test_unsupported_type_is_refused_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unsupported catalogue type"):
        iter_catalogue(tmp_path / "c.xlsx", DEFAULTS)


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        (HEAD + 'A,"Mug,red', 2, "title", ("unclosed quote", "file ends")),  # the last line, no newline
        (HEAD + 'A,Mug,"red\n', 2, "color", ("unclosed quote",)),
        ("\nid,title,color\nA,Mug,red\n", 1, None, ("first line is blank", "header")),
    ],
)
def test_more_structure_messages(
    tmp_path: Path, content: str, line: int, field: str | None, words: tuple[str, ...]
) -> None:
    err = expect(tmp_path, "c.csv", content, line, field, *words)
    assert not any("missing" in p.message for p in err.problems)


def test_literal_quote_in_unquoted_cell_is_data(tmp_path: Path) -> None:
    rows = read_catalogue(write(tmp_path, "c.csv", HEAD + 'A,12" pizza,red\nB,Tee,blue\nC,Hat 6",red'), DEFAULTS)
    assert [r.prompt.split(",")[0] for r in rows] == [
        'studio photo of 12" pizza',
        "studio photo of Tee",
        'studio photo of Hat 6"',
    ]


def test_surrogate_pairs_are_text_and_lone_surrogates_are_refused(tmp_path: Path) -> None:
    """JSON's escaped pair for one character outside the BMP is fine; a template holding a lone surrogate (from
    a mis-decoded command line: Python maps each undecodable byte to one) is refused up front."""
    path = write(tmp_path, "c.jsonl", '{"id": "A", "title": "Mug \\ud83d\\ude00", "color": "red"}\n')
    (row,) = read_catalogue(path, DEFAULTS)
    assert "Mug \U0001f600" in row.prompt
    with pytest.raises(UsageError, match="template: contains a lone surrogate"):
        Defaults(template="photo of {title} \udcff")


def test_a_reserved_column_is_explained_once_not_on_every_row(tmp_path: Path) -> None:
    """A shop's own `size` column (S/M/XL) fails on every row: the first problem says why the column is read as
    an override and how to map it; the other 149 point back to it instead of repeating the paragraph."""
    rows = "".join(f"P-{i},Shirt {i},{('S', 'M', 'XL')[i % 3]}\n" for i in range(150))
    path = write(tmp_path, "c.csv", "id,title,size\n" + rows)
    err = problems_of(path, Defaults(template="{title}"))
    sizes = [p for p in err.problems if p.field == "size"]
    assert len(sizes) == 150
    assert "reserved as a per-row override of --size" in sizes[0].message and "--column size=" in sizes[0].message
    assert all(p.message.endswith("(a per-row override column: see line 2)") for p in sizes[1:])


@pytest.mark.parametrize("hidden", ["\u200b", "\u202e", "\ufeff"])
def test_a_key_with_an_invisible_character_is_refused(tmp_path: Path, hidden: str) -> None:
    """`Z1` and `Z1<ZERO WIDTH SPACE>` look the same to a person but would be two products: refused, named."""
    path = write(tmp_path, "c.csv", f"id,title,color\nZ1,Mug,red\nZ1{hidden},Mug,red\n")
    err = problems_of(path)
    assert_problem(err, path, 3, "id", "invisible character", f"U+{ord(hidden):04X}")
    assert len(err.problems) == 1
