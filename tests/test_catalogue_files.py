"""Catalogue files a newcomer could produce, through the CLI: each is read exactly (a dry run's rows and prompts)
or refused with exit 2, `file:line: field 'x'`, no traceback, and nothing written (no job, no item, no
catalogue entry, no message). Stray and unclosed quotes in every position, Excel exports (semicolons, tabs,
cp1252, UTF-16), BOMs, line endings, reserved override columns, truncated files, wrong keys and templates."""

from __future__ import annotations

import gzip
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_bad_inputs import installation, state
from typer.testing import CliRunner

from conftest import Env
from contract.settings import get_settings
from contract.tenants import DEFAULT_TENANT_ID
from pixelmill.cli import app

__all__ = ["installation"]  # the fixture, shared with test_bad_inputs: one installation holding a job

HEAD = "sku,title,color\n"
ARGS = ["--key", "sku", "--template", "{title}, {color}"]


@dataclass(frozen=True)
class Read:
    """Read exactly: these prompts, in order."""

    prompts: list[str]


@dataclass(frozen=True)
class Refused:
    """Refused: a problem at this line (and field), its message holding `words`."""

    line: int
    field: str | None
    words: tuple[str, ...] = ()


def utf16(text: str, bom: bytes = b"\xff\xfe") -> bytes:
    codec = "utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"
    return bom + text.encode(codec)


TEE = "sku,title,size\nT-1,Tee,S\nT-2,Tee,M\nT-3,Tee,XL\n"
TEE_ARGS = ["--key", "sku", "--template", "{title} size {size}"]
TEES = Read(["Tee size S", "Tee size M", "Tee size XL"])
SWALLOWED = "".join(f"A-{i},Cup,blue\n" for i in range(2, 16)) + 'A-16,Cup,blue"\n'

# (id, file name, content, extra arguments (default ARGS), expected)
CASES: list[tuple[str, str, str | bytes, list[str] | None, Read | Refused]] = [
    # quotes that are right
    ("quoted-comma", "c.csv", HEAD + 'A-1,"Mug, large",red\n', None, Read(["Mug, large, red"])),
    ("doubled-quote", "c.csv", HEAD + 'A-1,"12"" pipe",red\n', None, Read(['12" pipe, red'])),
    (
        "multiline-cell",
        "c.csv",
        HEAD + 'A-1,"Mug\nlarge",red\nA-2,Cup,blue\n',
        None,
        Read(["Mug large, red", "Cup, blue"]),
    ),
    ("crlf-in-quoted-cell", "c.csv", HEAD + 'A-1,"Mug\r\nlarge",red\r\n', None, Read(["Mug large, red"])),
    ("quote-inside-unquoted", "c.csv", HEAD + 'A-1,12" pipe,red\n', None, Read(['12" pipe, red'])),
    ("space-before-quote", "c.csv", HEAD + 'A-1, "Mug",red\n', None, Read(['"Mug", red'])),
    ("quote-in-key", "c.csv", HEAD + 'A-"1,Mug,red\n', None, Read(["Mug, red"])),
    # unclosed quotes: first, middle, last column; first, middle, last line; the header
    (
        "unclosed-last-column-issue",
        "q.csv",
        'sku,title,color\nA-1,Mug,red\nA-2,Cup 12 oz,"blue\nA-3,Plate,green\nA-4,Bowl,white\nA-5,Jug,black\n',
        ["--key", "sku", "--template", "photo of {title}, {color}"],
        Refused(3, "color", ("unclosed quote", "line 6")),
    ),
    ("unclosed-last-column-last-line", "c.csv", HEAD + 'A-1,Mug,red\nA-2,Cup,"blue\n', None, Refused(3, "color")),
    ("unclosed-last-line-no-newline", "c.csv", HEAD + 'A-1,Mug,red\nA-2,Cup,"blue', None, Refused(3, "color")),
    ("unclosed-first-column-first-line", "c.csv", HEAD + '"A-1,Mug,red\nA-2,Cup,blue\n', None, Refused(2, "sku")),
    (
        "unclosed-middle-column-middle-line",
        "c.csv",
        HEAD + 'A-1,Mug,red\nA-2,"Cup,blue\nA-3,Plate,green\n',
        None,
        Refused(3, "title", ("unclosed quote",)),
    ),
    ("unclosed-in-header", "c.csv", 'sku,"title,color\nA-1,Mug,red\n', None, Refused(1, None, ("unclosed quote",))),
    ("unclosed-whole-row", "c.csv", HEAD + 'A-1,Mug,red\n"A-2,Cup,blue\n', None, Refused(3, "sku")),
    ("unclosed-empty-cell", "c.csv", HEAD + 'A-1,Mug,"\n', None, Refused(2, "color")),
    ("unclosed-doubled-at-end", "c.csv", HEAD + 'A-1,Mug,"red""\n', None, Refused(2, "color")),
    # stray quotes that close early: text follows the closing quote
    ("stray-first-column", "c.csv", HEAD + '"A-1"x,Mug,red\n', None, Refused(2, "sku", ("text after the closing",))),
    ("stray-middle-column", "c.csv", HEAD + 'A-1,"Mug" large,red\n', None, Refused(2, "title")),
    ("stray-last-column", "c.csv", HEAD + 'A-1,Mug,"red"dish\n', None, Refused(2, "color")),
    ("stray-space-after-quote", "c.csv", HEAD + 'A-1,"Mug" ,red\n', None, Refused(2, "title")),
    ("stray-in-header", "c.csv", 'sku,"title"x,color\nA-1,Mug,red\n', None, Refused(1, None, ("closing quote",))),
    # a stray quote opens line 2's title; the rest of the file closes it later, or never
    *[
        (name, "c.csv", HEAD + 'A-1,"Mug,red\n' + rest, None, Refused(2, "title", words))
        for name, rest, words in [
            ("stray-pair-wrong-count", 'A-2,Cup,blue"\nA-3,Plate,green\n', ("unclosed quote?", "line 3")),
            ("stray-pair-closes-later", 'A-2,Cup,"blue\nA-3,Plate,green\n', ("unclosed quote?",)),
            ("stray-pair-swallows-many-lines", SWALLOWED, ("likely a stray quote", "PIXELMILL_CATALOGUE_QUOTED_LINES")),
            (
                "stray-pair-swallows-two-rows",
                'A-2,Cup,blue\nA-3,Bowl",green\nA-4,Plate,white\n',
                ("likely a stray quote", "lines 2-4"),
            ),
            ("stray-pair-with-an-inch-mark", 'A-2,Monitor 27",black\nA-3,Plate,white\n', ("likely a stray quote",)),
        ]
    ],
    (
        "multiline-cell-shaped-like-rows-but-no-keys",
        "c.csv",
        HEAD + 'A-1,"Soft, warm\nwashable, dry",red\n',
        None,
        Read(["Soft, warm washable, dry, red"]),
    ),
    # truncated exports
    (
        "cut-mid-row-unused-columns",
        "c.csv",
        "sku,title,color,price\nA-1,Mug,red,12\nA-2,Bowl wi",
        ["--key", "sku", "--template", "{title}"],
        Refused(3, None, ("cut short",)),
    ),
    ("cut-mid-quote", "c.csv", HEAD + 'A-1,Mug,red\nA-2,"Cup with', None, Refused(3, "title", ("unclosed quote",))),
    ("cut-mid-row", "c.csv", HEAD + "A-1,Mug,red\nA-2,Cu", None, Refused(3, "color", ("missing",))),
    ("cut-in-header", "c.csv", "sku,tit", None, Refused(1, "title", ("no such column",))),
    ("cut-gzip", "c.csv.gz", b"", None, Refused(1, None, ("gzip",))),
    # not text: a workbook or an archive under a .csv name, UTF-16 JSONL
    ("xlsx-named-csv", "c.csv", b"PK\x03\x04\x14\x00\x06\x00" + bytes(200), None, Refused(1, None, ("Excel",))),
    ("gzip-named-csv", "c.csv", gzip.compress(HEAD.encode()), None, Refused(1, None, ("name it .csv.gz",))),
    (
        "utf16-jsonl",
        "c.jsonl",
        utf16('{"sku": "A-1", "title": "Mug", "color": "red"}\n'),
        None,
        Refused(1, None, ("UTF-16",)),
    ),
    # Excel exports
    (
        "blank-looking-row-with-a-value",
        "c.csv",
        HEAD + "A-1,Mug,red\r\n,,\r\n,Cup,\r\n",
        None,
        Refused(4, "sku", ("empty",)),
    ),
    (
        "excel-blank-rows-only-delimiters",
        "c.csv",
        HEAD + "A-1,Mug,red\r\n,,\r\n, ,\r\nA-2,Cup,blue\r\n,,\r\n,\r\n",
        None,
        Read(["Mug, red", "Cup, blue"]),
    ),
    (
        "excel-trailing-unnamed-columns",
        "c.csv",
        "sku,title,color,,,\r\nA-1,Mug,red,,,\r\nA-2,Cup,blue,,,\r\n",
        None,
        Read(["Mug, red", "Cup, blue"]),
    ),
    ("semicolons", "c.csv", "sku;title;color\nA-1;Mug;red\n", None, Refused(1, None, ("--delimiter ';'",))),
    ("semicolons-option", "c.csv", "sku;title;color\nA-1;Mug;red\n", [*ARGS, "--delimiter", ";"], Read(["Mug, red"])),
    (
        "semicolons-decimal-comma",
        "c.csv",
        "sku;title;color;guidance\nA-1;Mug;red;7,5\n",
        [*ARGS, "--delimiter", ";"],
        Refused(2, "guidance", ("reserved", "--column guidance=")),
    ),
    ("tabs", "c.tsv.csv", "sku\ttitle\tcolor\nA-1\tMug\tred\n", None, Refused(1, None, ("--delimiter tab",))),
    ("tabs-option", "c.csv", "sku\ttitle\tcolor\nA-1\tMug\tred\n", [*ARGS, "--delimiter", "tab"], Read(["Mug, red"])),
    ("tabs-escape", "c.csv", "sku\ttitle\tcolor\nA-1\tMug\tred\n", [*ARGS, "--delimiter", "\\t"], Read(["Mug, red"])),
    ("pipes-option", "c.csv", "sku|title|color\nA-1|Mug|red\n", [*ARGS, "--delimiter", "|"], Read(["Mug, red"])),
    ("cp1252", "c.csv", (HEAD + "A-1,Café,red\n").encode("cp1252"), None, Refused(2, "title", ("--encoding",))),
    (
        "cp1252-option",
        "c.csv",
        (HEAD + "A-1,Café “best”,red\n").encode("cp1252"),
        [*ARGS, "--encoding", "windows-1252"],
        Read(["Café “best”, red"]),
    ),
    (
        "latin-1-option",
        "c.csv",
        (HEAD + "A-1,Café,red\n").encode("latin-1"),
        [*ARGS, "--encoding", "latin-1"],
        Read(["Café, red"]),
    ),
    (
        "utf16",
        "c.csv",
        utf16("sku\ttitle\tcolor\r\nA-1\tCafé\tred\r\n"),
        None,
        Refused(1, None, ("--encoding utf-16",)),
    ),
    (
        "utf16-options",
        "c.csv",
        utf16('sku\ttitle\tcolor\r\nA-1\tCafé\tred\r\nA-2\t"Cup\nlarge"\tblue\r\n'),
        [*ARGS, "--encoding", "utf-16", "--delimiter", "tab"],
        Read(["Café, red", "Cup large, blue"]),
    ),
    (
        "utf16-big-endian",
        "c.csv",
        utf16("sku\ttitle\tcolor\nA-1\tMug\tred\n", b"\xfe\xff"),
        [*ARGS, "--encoding", "utf-16", "--delimiter", "tab"],
        Read(["Mug, red"]),
    ),
    (
        "utf16-no-delimiter",
        "c.csv",
        utf16("sku\ttitle\tcolor\nA-1\tMug\tred\n"),
        [*ARGS, "--encoding", "utf-16"],
        Refused(1, None, ("--delimiter tab",)),
    ),
    (
        "utf16-odd-bytes",
        "c.csv",
        utf16("sku\ttitle\tcolor\nA-1\tMug\tred\n") + b"\x00",
        [*ARGS, "--encoding", "utf-16", "--delimiter", "tab"],
        Refused(3, None, ("--encoding",)),
    ),
    # BOMs
    ("utf8-bom", "c.csv", b"\xef\xbb\xbf" + (HEAD + "A-1,Mug,red\n").encode(), None, Read(["Mug, red"])),
    (
        "utf8-bom-sig",
        "c.csv",
        b"\xef\xbb\xbf" + (HEAD + "A-1,Mug,red\n").encode(),
        [*ARGS, "--encoding", "utf-8-sig"],
        Read(["Mug, red"]),
    ),
    (
        "utf8-bom-said-cp1252",
        "c.csv",
        b"\xef\xbb\xbf" + (HEAD + "A-1,Café,red\n").encode(),
        [*ARGS, "--encoding", "cp1252"],
        Refused(1, None, ("UTF-8", "drop --encoding")),
    ),
    # line endings
    (
        "crlf",
        "c.csv",
        HEAD.replace("\n", "\r\n") + "A-1,Mug,red\r\nA-2,Cup,blue\r\n",
        None,
        Read(["Mug, red", "Cup, blue"]),
    ),
    ("mixed-lf-crlf", "c.csv", HEAD + "A-1,Mug,red\r\nA-2,Cup,blue\n", None, Read(["Mug, red", "Cup, blue"])),
    ("cr-only", "c.csv", HEAD.replace("\n", "\r") + "A-1,Mug,red\r", None, Refused(1, None, ("carriage return",))),
    ("cr-inside-row", "c.csv", HEAD + "A-1,Mug\rx,red\n", None, Refused(2, None, ("carriage return",))),
    ("no-final-newline", "c.csv", HEAD + "A-1,Mug,red", None, Read(["Mug, red"])),
    ("blank-lines", "c.csv", HEAD + "\nA-1,Mug,red\n\n\nA-2,Cup,blue\n\n", None, Read(["Mug, red", "Cup, blue"])),
    # reserved (per-row override) columns
    ("size-words", "t.csv", TEE, TEE_ARGS, Refused(2, "size", ("reserved", "--column size=", "--no-row-overrides"))),
    ("size-words-no-overrides", "t.csv", TEE, [*TEE_ARGS, "--no-row-overrides"], TEES),
    ("size-words-switched-off", "t.csv", TEE, [*TEE_ARGS, "--column", "size="], TEES),
    (
        "size-mapped",
        "t.csv",
        "sku,title,size,render_size\nT-1,Tee,S,768x768\n",
        [*TEE_ARGS, "--column", "size=render_size"],
        Read(["Tee size S"]),
    ),
    (
        "size-mapped-bad-value",
        "t.csv",
        "sku,title,size,render_size\nT-1,Tee,S,big\n",
        [*TEE_ARGS, "--column", "size=render_size"],
        Refused(2, "render_size", ("--column size=render_size",)),
    ),
    (
        "size-mapped-missing",
        "t.csv",
        TEE,
        [*TEE_ARGS, "--column", "size=render_size"],
        Refused(1, "render_size", ("--column size=render_size",)),
    ),
    (
        "seed-as-text",
        "c.csv",
        "sku,title,color,seed\nA-1,Mug,red,lucky\n",
        None,
        Refused(2, "seed", ("reserved", "--column seed=")),
    ),
    (
        "seed-as-text-off",
        "c.csv",
        "sku,title,color,seed\nA-1,Mug,red,lucky\n",
        [*ARGS, "--column", "seed="],
        Read(["Mug, red"]),
    ),
    (
        "steps-words",
        "c.csv",
        "sku,title,color,steps\nA-1,Mug,red,many\n",
        None,
        Refused(2, "steps", ("reserved", "--no-row-overrides")),
    ),
    (
        "steps-words-in-template",
        "c.csv",
        "sku,title,color,steps\nA-1,Mug,red,three easy steps\n",
        ["--key", "sku", "--template", "{title} in {steps}", "--no-row-overrides"],
        Read(["Mug in three easy steps"]),
    ),
    (
        "prompt-column-wins",
        "c.csv",
        "sku,title,prompt\nA-1,Mug,a red mug\n",
        ["--key", "sku", "--template", "{title}"],
        Read(["a red mug"]),
    ),
    (
        "prompt-column-off",
        "c.csv",
        "sku,title,prompt\nA-1,Mug,a red mug\n",
        ["--key", "sku", "--template", "{title}", "--column", "prompt="],
        Read(["Mug"]),
    ),
    (
        "images-per-item-words",
        "c.csv",
        "sku,title,color,images_per_item\nA-1,Mug,red,two\n",
        None,
        Refused(2, "images_per_item", ("reserved",)),
    ),
    # keys and templates
    ("no-key-option", "c.csv", HEAD + "A-1,Mug,red\n", ["--template", "{title}"], Refused(1, "id", ("--key sku",))),
    (
        "key-typo",
        "c.csv",
        HEAD + "A-1,Mug,red\n",
        ["--key", "skuu", "--template", "{title}"],
        Refused(1, "skuu", ("--key sku",)),
    ),
    (
        "template-typo",
        "c.csv",
        HEAD + "A-1,Mug,red\n",
        ["--key", "sku", "--template", "{titel}, {color}"],
        Refused(1, "titel", ("did you mean {title}",)),
    ),
    ("duplicate-keys", "c.csv", HEAD + "A-1,Mug,red\nA-1,Cup,blue\n", None, Refused(3, "sku", ("duplicate", "line 2"))),
    ("empty-key", "c.csv", HEAD + ",Mug,red\n", None, Refused(2, "sku", ("empty",))),
    ("empty-value", "c.csv", HEAD + "A-1,,red\n", None, Refused(2, "title", ("empty",))),
    ("too-many-cells", "c.csv", HEAD + "A-1,Mug,red,extra\n", None, Refused(2, None, ("4 cells",))),
    ("duplicate-column", "c.csv", "sku,title,color,title\nA-1,Mug,red,x\n", None, Refused(1, "title", ("2 times",))),
    # empty files
    ("empty-file", "c.csv", "", None, Refused(1, None, ("empty",))),
    ("blank-file", "c.csv", "\n\n", None, Refused(1, None, ("blank",))),
    ("header-only", "c.csv", HEAD, None, Refused(1, None, ("no rows",))),
    # JSONL
    ("jsonl", "c.jsonl", '{"sku": "A-1", "title": "Mug", "color": "red"}\n', None, Read(["Mug, red"])),
    (
        "jsonl-size-words",
        "t.jsonl",
        '{"sku": "T-1", "title": "Tee", "size": "XL"}\n',
        TEE_ARGS,
        Refused(1, "size", ("reserved",)),
    ),
    (
        "jsonl-size-words-off",
        "t.jsonl",
        '{"sku": "T-1", "title": "Tee", "size": "XL"}\n',
        [*TEE_ARGS, "--no-row-overrides"],
        Read(["Tee size XL"]),
    ),
    ("jsonl-pretty", "c.jsonl", '{\n  "sku": "A-1"\n}\n', None, Refused(1, None, ("one object per line",))),
    (
        "jsonl-cut",
        "c.jsonl",
        '{"sku": "A-1", "title": "Mug", "color": "red"}\n{"sku": "A-2", "title": "Cu',
        None,
        Refused(2, None, ("not valid JSON",)),
    ),
    ("jsonl-nan", "c.jsonl", '{"sku": "A-1", "title": NaN, "color": "red"}\n', None, Refused(1, "title", ("NaN",))),
    (
        "jsonl-infinity",
        "c.jsonl",
        '{"sku": "A-1", "title": "Mug", "color": -Infinity}\n',
        None,
        Refused(1, "color", ("finite",)),
    ),
    (
        "jsonl-wrong-key",
        "c.jsonl",
        '{"id": "A-1", "title": "Mug", "color": "red"}\n',
        None,
        Refused(1, "sku", ("missing",)),
    ),
]


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    data = content.encode() if isinstance(content, str) else content
    if name.endswith(".gz"):
        rows = "".join(f"A-{i},Mug,red\n" for i in range(200))
        data = gzip.compress((HEAD + rows).encode())[:15]  # a download cut short
    path.write_bytes(data)
    return path


def entries(env: Env) -> int:
    db = sqlite3.connect(f"file:{env.data_dir / 'pixelmill.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM catalogue_entries").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize(("name", "content", "args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_file_is_read_exactly_or_refused_with_its_line_and_field(
    installation: Env,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    content: str | bytes,
    args: list[str] | None,
    expected: Read | Refused,
) -> None:
    env = installation
    for key in [k for k in os.environ if k.startswith("PIXELMILL_")]:
        monkeypatch.delenv(key)
    for key, value in env.vars.items():
        if key.startswith(("PIXELMILL_", "OMP_")):
            monkeypatch.setenv(key, value)
    path = write(tmp_path, name, content)
    options = ARGS if args is None else args
    get_settings.cache_clear()
    try:
        if isinstance(expected, Read):
            result = CliRunner().invoke(app, ["submit", str(path), *options, "--dry-run", "--json"])
            assert result.exit_code == 0, result.output
            import json

            shown = json.loads(result.stdout.strip().splitlines()[-1])
            assert (shown["rows"], shown["prompts"]) == (len(expected.prompts), expected.prompts[:5])
            return
        before, listed = state(env), entries(env)
        result = CliRunner().invoke(app, ["submit", str(path), *options, "--catalogue", "nightly"])
    finally:
        get_settings.cache_clear()
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert "Traceback" not in output and (result.exception is None or isinstance(result.exception, SystemExit))
    where = f"{path}:{expected.line}: " + (f"field {expected.field!r}: " if expected.field else "")
    lines = [line for line in output.splitlines() if line.startswith(where)]
    assert lines, f"no {where!r} in:\n{output}"
    assert any(all(w in line for w in expected.words) for line in lines), f"{expected.words} not in {lines}"
    assert state(env) == before and entries(env) == listed


def test_the_table_holds_at_least_60_files() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (["--size", "500x1"], "--size"),
        (["--delimiter", "x"], "--delimiter"),
        (["--encoding", "ebcdic"], "--encoding"),
        (["--column", "colour=paint"], "--column colour"),
        (["--column", "size"], "--column"),
        (["--column", "size=a", "--column", "size=b"], "more than once"),
        (["--delimiter", ";", "--jsonl"], "JSONL is always UTF-8"),
    ],
    ids=["size", "delimiter", "encoding", "column-name", "column-no-equals", "column-twice", "jsonl-delimiter"],
)
def test_bad_reader_options_name_the_option(
    installation: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, options: list[str], names: str
) -> None:
    env = installation
    for key, value in env.vars.items():
        if key.startswith(("PIXELMILL_", "OMP_")):
            monkeypatch.setenv(key, value)
    jsonl = "--jsonl" in options
    path = write(tmp_path, "c.jsonl" if jsonl else "c.csv", HEAD + "A-1,Mug,red\n")
    options = [o for o in options if o != "--jsonl"]
    before = state(env)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["submit", str(path), *ARGS, *options])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and names in result.output and "Traceback" not in result.output, result.output
    assert state(env) == before


def test_the_python_api_and_the_request_maker_take_the_reader_options(
    installation: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pixelmill.api import Client, SubmitError
    from producer.request import Options, RequestProblems, make_request

    settings = installation.settings()
    request = make_request(
        settings,
        Options(template="{title}", key="sku", delimiter="tab", encoding="latin-1", columns={"size": None}),
        source="-",
        tenant_id=DEFAULT_TENANT_ID,
    )
    assert (request.defaults.delimiter, request.defaults.encoding) == ("\t", "iso8859-1")
    assert request.defaults.override_columns()["size"] is None
    with pytest.raises(RequestProblems) as bad:
        make_request(
            settings, Options(template="{title}", key="sku", delimiter="x"), source="-", tenant_id=DEFAULT_TENANT_ID
        )
    assert bad.value.problems[0].startswith("request: field 'delimiter': --delimiter must be one of")
    path = write(tmp_path, "t.csv", "sku;title;size\nT-1;Tée;XL\n".encode("cp1252"))
    with Client(settings) as client:
        with pytest.raises(SubmitError) as refused:
            client.submit(path, key="sku", template="{title} {size}", delimiter=";", encoding="cp1252")
        assert "reserved as a per-row override" in refused.value.problems[0]
        job = client.submit(
            path, key="sku", template="{title} {size}", delimiter=";", encoding="cp1252", columns={"size": None}
        )
        assert [i.key for i in job.items()] == ["T-1"]
