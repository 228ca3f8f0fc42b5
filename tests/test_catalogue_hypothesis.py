"""The CSV reader never loses or invents a row: for every generated file (quoted cells with delimiters,
quotes, newlines and CRs; stray quotes at random places; mixed line endings; a BOM; a cut-off end) it either
yields exactly the rows Python's csv module reads with strict=True, or refuses the file with CatalogueError.
Nothing else: no third outcome, no other exception.

Documented normalisation: the BOM is dropped, blank lines are skipped, keys are stripped and prompts have
their whitespace collapsed (docs/catalogues.md, "Catalogue input")."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.catalogue import CatalogueError, Defaults, read_catalogue

COLUMNS = ["sku", "title", "color", "size_note"]
CHARS = st.sampled_from(list('ab é,;|\t"\n\r') + ["\r\n"])


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@st.composite
def catalogues(draw: st.DrawFn) -> tuple[str, str, int, bool]:
    """(text, delimiter, columns, clean): clean files are well formed and every row valid."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    width = draw(st.integers(2, 4))
    endings = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=3))
    lines = [delimiter.join(COLUMNS[:width])]
    for number in range(draw(st.integers(1, 6))):
        cells = [f"K{number}"]
        for _ in range(width - 1):
            body = "".join(draw(st.lists(CHARS, max_size=8)))
            word = draw(st.sampled_from(["x", "Mug", "cup é"]))
            value = word + body
            plain = not any(c in value for c in (delimiter, '"', "\n", "\r"))
            cells.append(value if plain and draw(st.booleans()) else _quote(value))
        lines.append(delimiter.join(cells))
        if draw(st.integers(0, 9)) == 0:
            lines.append("")  # a blank line
    text = "".join(line + draw(st.sampled_from(endings)) for line in lines)
    clean = set(endings) <= {"\n", "\r\n"}
    if draw(st.booleans()):  # stray quotes
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + '"' + text[at:]
        clean = False
    if draw(st.integers(0, 4)) == 0:  # a truncated export
        text = text[: draw(st.integers(0, len(text)))]
        clean = False
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text, delimiter, width, clean


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypothesis") / "c.csv"


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(catalogues())
def test_every_file_reads_exactly_as_the_csv_module_or_is_refused(
    scratch: Path, case: tuple[str, str, int, bool]
) -> None:
    text, delimiter, width, clean = case
    scratch.write_bytes(text.encode())
    template = " ".join("{" + name + "}" for name in COLUMNS[1:width])
    defaults = Defaults(template=template, key_column="sku", delimiter=delimiter)
    try:
        reference: list[list[str]] | None = list(
            csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=delimiter, strict=True)
        )
    except csv.Error:
        reference = None
    try:
        rows = read_catalogue(scratch, defaults)
    except CatalogueError as exc:
        assert exc.problems and all(p.path == str(scratch) and p.line >= 1 for p in exc.problems)
        assert not clean, f"a well-formed file was refused:\n{text!r}\n{exc}"
        return
    assert reference is not None, f"read a file the csv module refuses:\n{text!r}"
    expected = [
        (cells[0].strip(), " ".join(" ".join(cells[1:]).split()))
        for cells in reference[1:]
        if cells  # blank lines are skipped
    ]
    assert reference[0] == COLUMNS[:width]
    assert [(row.key, row.prompt) for row in rows] == expected
