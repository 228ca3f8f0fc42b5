"""Catalogue reading (all problems, precise locations, never a partial list) and item identities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelmill.identity import SEED_BITS, derive_seed, object_key
from pixelmill.identity import content_hash as identity_hash
from pixelmill.params import GenerationParams
from producer.catalogue import (
    CatalogueError,
    Defaults,
    Problem,
    Row,
    UsageError,
    parse_size,
    read_catalogue,
    render,
    template_fields,
)

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

def test_good_csv_with_overrides(tmp_path):
    path = write(tmp_path, "c.csv",
                 "id,title,color,size,steps,guidance,seed,images_per_item,negative\n"
                 "A1,Mug,red,,,,,,\n"
                 "A2,Tee,blue,768x512,50,4.5,42,3,blurry  text\n")
    rows = read_catalogue(path, Defaults(template=TEMPLATE, negative="ugly", steps=20))
    assert rows == [
        Row(line=2, key="A1", prompt="studio photo of Mug, red, white background", negative="ugly",
            width=512, height=512, steps=20, guidance=7.5, images_per_item=1, seed=None),
        Row(line=3, key="A2", prompt="studio photo of Tee, blue, white background", negative="blurry text",
            width=768, height=512, steps=50, guidance=4.5, images_per_item=3, seed=42),
    ]


def test_good_jsonl_with_overrides_and_numbers(tmp_path):
    lines = [
        {"id": 7, "title": "Lamp", "color": 3},
        {},  # replaced by a blank line below
        {"id": "B", "title": "Chair", "color": 2.5, "prompt": "a  chair\n on grass", "size": "1024X1024",
         "steps": 12, "guidance": 0, "seed": 2**63 - 1, "images_per_item": 16, "negative": "dark"},
    ]
    text = "\n".join("" if not obj else json.dumps(obj) for obj in lines) + "\n\n"
    rows = read_catalogue(write(tmp_path, "c.jsonl", text), DEFAULTS)
    assert [r.line for r in rows] == [1, 3]
    assert rows[0].key == "7" and rows[0].prompt == "studio photo of Lamp, 3, white background"
    assert rows[1] == Row(line=3, key="B", prompt="a chair on grass", negative="dark", width=1024, height=1024,
                          steps=12, guidance=0.0, images_per_item=16, seed=2**63 - 1)


def test_bom_is_stripped(tmp_path):
    path = write(tmp_path, "c.csv", b"\xef\xbb\xbfid,title,color\nX,Mug,red\n")
    [row] = read_catalogue(path, DEFAULTS)
    assert row.key == "X"


def test_multiline_quoted_cell_keeps_physical_line_numbers(tmp_path):
    path = write(tmp_path, "c.csv",
                 'id,title,color\nA,"Mug\nwith\nhandle",red\n\nB,Tee,\nC,Cap,blue\n')
    err = problems_of(path)
    assert_problem(err, path, 6, "color", "is empty")
    assert len(err.problems) == 1
    rows = read_catalogue(write(tmp_path, "ok.csv", 'id,title,color\nA,"Mug\nwith\nhandle",red\nC,Cap,blue\n'),
                          DEFAULTS)
    assert [(r.key, r.line) for r in rows] == [("A", 2), ("C", 5)]
    assert rows[0].prompt == "studio photo of Mug with handle, red, white background"


def test_ordinary_content_passes(tmp_path):
    # Substrings like "sex" in "Sussex", SQL-ish or brace characters are ordinary data.
    path = write(tmp_path, "c.csv",
                 'id,title,color\nS1,Sussex Tea Mug,"duck-egg blue, glossy"\nS2,{title} Scunthorpe; DROP,ok\n')
    rows = read_catalogue(path, DEFAULTS)
    assert rows[0].prompt == "studio photo of Sussex Tea Mug, duck-egg blue, glossy, white background"
    assert rows[1].prompt == "studio photo of {title} Scunthorpe; DROP, ok, white background"


def test_example_catalogue_parses():
    rows = read_catalogue(EXAMPLE, Defaults(
        template="studio photo of {title}, {color}, {material}, white background", key_column="sku"))
    assert len(rows) == 40
    assert len({r.key for r in rows}) == 40
    assert any("Speckled Camp Mug, 12 oz," in r.prompt for r in rows)  # quoted comma
    assert any("Café" in r.prompt for r in rows)


def test_prompt_column_without_template(tmp_path):
    path = write(tmp_path, "c.csv", "id,prompt\nA,  a red   mug \n")
    [row] = read_catalogue(path, Defaults(template=None))
    assert row.prompt == "a red mug"


# --- bad input: one test per class ---------------------------------------------------------------------------

def test_non_utf8_reports_line_and_column(tmp_path):
    path = write(tmp_path, "c.csv", b"id,title,color\nA,Mug,red\nB,Caf\xe9,blue\n")
    err = problems_of(path)
    assert_problem(err, path, 3, "title", "UTF-8")


def test_non_utf8_inside_multiline_cell(tmp_path):
    path = write(tmp_path, "c.csv", b'id,title,color\nA,Mug,"red\nand \xc3(blue"\n')
    assert_problem(problems_of(path), path, 3, "color", "UTF-8")


def test_non_utf8_in_jsonl(tmp_path):
    path = write(tmp_path, "c.jsonl", b'{"id": "A", "title": "x", "color": "y"}\n{"id": "B", "title": "\xff"}\n')
    err = problems_of(path)
    assert_problem(err, path, 2, None, "UTF-8")


@pytest.mark.parametrize("cell, how", [("", "is empty"), ("   ", "is empty")])
def test_missing_field_csv(tmp_path, cell, how):
    path = write(tmp_path, "c.csv", f"id,title,color\nA,Mug,{cell}\n")
    assert_problem(problems_of(path), path, 2, "color", how)


def test_missing_field_short_csv_row(tmp_path):
    path = write(tmp_path, "c.csv", "id,title,color\nA,Mug\n")
    assert_problem(problems_of(path), path, 2, "color", "missing")


@pytest.mark.parametrize("obj, how", [({"id": "A", "title": "Mug"}, "is missing"),
                                      ({"id": "A", "title": "Mug", "color": None}, "is null"),
                                      ({"id": "A", "title": "Mug", "color": " "}, "is empty")])
def test_missing_field_jsonl(tmp_path, obj, how):
    path = write(tmp_path, "c.jsonl", json.dumps(obj) + "\n")
    assert_problem(problems_of(path), path, 1, "color", how)


def test_missing_key(tmp_path):
    path = write(tmp_path, "c.csv", "id,title,color\n,Mug,red\n")
    assert_problem(problems_of(path), path, 2, "id", "is empty")


def test_unknown_template_column_csv_is_one_header_problem(tmp_path):
    path = write(tmp_path, "c.csv", "id,title,colour\nA,Mug,red\nB,Tee,blue\n")
    err = problems_of(path)
    assert_problem(err, path, 1, "color", "'colour'", "'title'")
    assert len(err.problems) == 1


def test_missing_key_column_csv(tmp_path):
    path = write(tmp_path, "c.csv", "title,color\nMug,red\n")
    err = problems_of(path)
    assert_problem(err, path, 1, "id", "no such column")
    assert len(err.problems) == 1


def test_empty_prompt_without_template(tmp_path):
    path = write(tmp_path, "c.csv", "id,prompt\nA,a mug\nB, \n")
    err = problems_of(path, Defaults(template=None))
    assert_problem(err, path, 3, "prompt", "empty")


def test_prompt_column_absent_without_template(tmp_path):
    path = write(tmp_path, "c.csv", "id,title\nA,a mug\n")
    assert_problem(problems_of(path, Defaults(template=None)), path, 1, "prompt", "no such column")


def test_whitespace_only_value_is_missing_not_rendered(tmp_path):
    path = write(tmp_path, "c.jsonl", '{"id": "A", "t": "\\u00a0"}\n{"id": "B", "t": "x"}\n')
    # A value that is all whitespace is a missing field before it can render an empty prompt.
    assert_problem(problems_of(path, Defaults(template="{t}")), path, 1, "t", "is empty")


@pytest.mark.parametrize("column, value, words", [
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
])
def test_bad_override_values(tmp_path, column, value, words):
    path = write(tmp_path, "c.csv", f"id,title,color,{column}\nA,Mug,red,64x64\nB,Tee,blue,{value}\n"
                 if column == "size" else f"id,title,color,{column}\nA,Mug,red,1\nB,Tee,blue,{value}\n")
    err = problems_of(path)
    assert_problem(err, path, 3, column, *words)
    assert len(err.problems) == 1


def test_duplicate_key_names_first_line(tmp_path):
    path = write(tmp_path, "c.csv", "id,title,color\nA,Mug,red\nB,Tee,blue\nA,Cap,green\n")
    err = problems_of(path)
    assert_problem(err, path, 4, "id", "duplicate", "line 2")


@pytest.mark.parametrize("key", [".", "..", "a\tb", "x" * 201])
def test_invalid_item_key(tmp_path, key):
    path = write(tmp_path, "c.jsonl", json.dumps({"id": key, "title": "Mug", "color": "red"}) + "\n")
    assert_problem(problems_of(path), path, 1, "id", "invalid item key")


def test_long_but_allowed_key(tmp_path):
    path = write(tmp_path, "c.jsonl", json.dumps({"id": "x" * 200, "title": "Mug", "color": "red"}) + "\n")
    assert read_catalogue(path, DEFAULTS)[0].key == "x" * 200


def test_csv_row_with_too_many_cells(tmp_path):
    path = write(tmp_path, "c.csv", "id,title,color\nA,Mug, large,red\n")
    err = problems_of(path)
    assert_problem(err, path, 2, None, "4 cells", "3 columns")
    assert err.problems[0].field is None


@pytest.mark.parametrize("line, words", [("{not json", ("not valid JSON",)), ("[1, 2]", ("JSON object",)),
                                         ('"text"', ("JSON object",))])
def test_jsonl_bad_line(tmp_path, line, words):
    path = write(tmp_path, "c.jsonl", '{"id": "A", "title": "Mug", "color": "red"}\n' + line + "\n")
    err = problems_of(path)
    assert_problem(err, path, 2, None, *words)


def test_jsonl_nested_value_used_by_template(tmp_path):
    path = write(tmp_path, "c.jsonl", '{"id": "A", "title": ["Mug"], "color": "red", "extra": {"ok": 1}}\n')
    err = problems_of(path)
    assert_problem(err, path, 1, "title", "an array")
    assert len(err.problems) == 1


@pytest.mark.parametrize("name, content", [("c.csv", ""), ("c.csv", "id,title,color\n\n"), ("c.jsonl", "\n \n")])
def test_empty_catalogue(tmp_path, name, content):
    path = write(tmp_path, name, content)
    err = problems_of(path)
    assert_problem(err, path, 1, None, "no rows")


def test_unsupported_extension(tmp_path):
    with pytest.raises(UsageError, match=".txt"):
        read_catalogue(write(tmp_path, "c.txt", "id\nA\n"), DEFAULTS)


def test_all_problems_reported(tmp_path):
    path = write(tmp_path, "c.csv", "id,title,color,steps\n"
                                    "A,Mug,,\n"
                                    "A,Tee,blue,\n"
                                    "B,,red,999\n"
                                    "C,Cap,red,1,extra\n"
                                    "D,Hat,red,5\n")
    err = problems_of(path)
    assert_problem(err, path, 2, "color", "is empty")
    assert_problem(err, path, 3, "id", "duplicate", "line 2")
    assert_problem(err, path, 4, "title", "is empty")
    assert_problem(err, path, 4, "steps", "1 to 200")
    assert_problem(err, path, 5, None, "5 cells")
    assert len(err.problems) == 5
    assert [p.line for p in err.problems] == sorted(p.line for p in err.problems)


def test_problem_listing_is_capped(tmp_path):
    body = "".join(f"K{i},Mug,\n" for i in range(60))
    err = problems_of(write(tmp_path, "c.csv", "id,title,color\n" + body))
    text = str(err)
    assert len(err.problems) == 60
    assert len(text.splitlines()) == 51
    assert text.splitlines()[-1] == "... and 10 more"


def test_problem_str():
    assert str(Problem("catalogue.csv", 12, "color", "is empty")) == "catalogue.csv:12: field 'color': is empty"
    assert str(Problem("catalogue.csv", 3, None, "bad")) == "catalogue.csv:3: bad"


# --- templates, defaults, sizes ----------------------------------------------------------------------------------

def test_render_and_fields():
    assert template_fields("{a} and {b}, {a}") == ["a", "b"]
    assert template_fields("no fields {{here}}") == []
    assert render("{a}  x\n{b}", {"a": " hi ", "b": "3"}) == "hi x 3"
    assert render("{{lit}} {a}", {"a": "{b}"}) == "{lit} {b}"
    with pytest.raises(KeyError):
        render("{a} {b}", {"a": "x"})


@pytest.mark.parametrize("template", ["{}", "{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{a", "a}", "{ }"])
def test_bad_templates_are_usage_errors(template):
    with pytest.raises(UsageError):
        template_fields(template)
    with pytest.raises(UsageError):
        Defaults(template=template)


def test_bad_template_is_usage_error_not_row_error(tmp_path):
    path = write(tmp_path, "c.csv", "id,title\nA,Mug\n")
    with pytest.raises(UsageError):
        read_catalogue(path, Defaults(template="{title!s}"))


@pytest.mark.parametrize("kwargs", [dict(width=500), dict(height=4096), dict(steps=0), dict(steps=201),
                                    dict(guidance=-1), dict(guidance=float("inf")), dict(images_per_item=17),
                                    dict(steps=2.5), dict(template="  "), dict(key_column="")])
def test_bad_defaults_are_usage_errors(kwargs):
    kwargs.setdefault("template", TEMPLATE)
    with pytest.raises(UsageError):
        Defaults(**kwargs)


@pytest.mark.parametrize("text, size", [("512x512", (512, 512)), ("768X1024", (768, 1024)),
                                        (" 64x2048 ", (64, 2048))])
def test_parse_size_good(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["512", "512x", "x512", "56x512", "512x2056", "513x512", "512*512", "-512x512",
                                  "512x512x3", ""])
def test_parse_size_bad(text):
    with pytest.raises(ValueError):
        parse_size(text)


# --- pixelmill.identity ---------------------------------------------------------------------------------------

def test_derive_seed_is_deterministic_and_sensitive():
    seed = derive_seed(1234, "MUG-001", 0)
    assert seed == derive_seed(1234, "MUG-001", 0)
    others = {derive_seed(1235, "MUG-001", 0), derive_seed(1234, "MUG-002", 0), derive_seed(1234, "MUG-001", 1)}
    assert seed not in others and len(others) == 3


def test_derive_seed_fits_63_bits():
    seeds = [derive_seed(j, f"K{i}", v) for j in (0, 2**63 - 1) for i in range(200) for v in range(3)]
    assert all(0 <= s < 2**SEED_BITS for s in seeds)
    assert SEED_BITS == 63
    assert max(seeds) > 2**62  # uses the whole range, not a small slice


HASH_FIELDS = dict(prompt="a mug", negative="", width=512, height=512, steps=30, guidance=7.5, seed=1, model="m")


def content_hash(**fields):
    """The identity's hash over flat fields, the generation parameters gathered into their typed value."""
    params = GenerationParams(**{name: fields.pop(name) for name in ("width", "height", "steps", "guidance")})
    return identity_hash(params=params, **fields)


def test_content_hash_stable_across_order():
    reordered = dict(reversed(list(HASH_FIELDS.items())))
    assert content_hash(**HASH_FIELDS) == content_hash(**reordered)
    assert content_hash(**{**HASH_FIELDS, "guidance": 7}) == content_hash(**{**HASH_FIELDS, "guidance": 7.0})


@pytest.mark.parametrize("field, value", [("prompt", "a cup"), ("negative", "x"), ("width", 768), ("height", 768),
                                          ("steps", 31), ("guidance", 7.0), ("seed", 2), ("model", "n")])
def test_content_hash_changes_with_each_field(field, value):
    assert content_hash(**HASH_FIELDS) != content_hash(**{**HASH_FIELDS, field: value})


@pytest.mark.parametrize("key, segment", [("a/b", "a%2Fb"), ("two words", "two%20words"), ("Café", "Caf%C3%A9"),
                                          (".", "%2E"), ("..", "%2E%2E"), ("MUG-001", "MUG-001"),
                                          ("v1.2", "v1.2")])
def test_object_key_encodes_segment(key, segment):
    result = object_key(9, key, 2, "png")
    assert result == f"jobs/9/{segment}/2.png"
    assert all(part not in (".", "..", "") for part in result.split("/"))
