"""Hostile inputs to today's reader, request fields, demo and routes: each bounded in time, memory and reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer import catalogue
from producer.catalogue import CatalogueError, Defaults, Limits, UsageError, read_catalogue
from producer.options import Options, option_problems


def test_a_record_of_many_multiline_cells_is_scanned_in_linear_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stray-quote span check ran every ~10 lines over the whole record so far: a 1 MiB row of 95k
    nine-line quoted cells took hours. Now each check resumes at the open cell: text scanned ~ the file."""
    cell = '"' + "\n" * 8 + '"'
    data = "id,title\n1," + ",".join([cell] * 2000) + "\n"
    path = tmp_path / "cells.csv"
    path.write_text(data)
    scanned = [0]
    real = catalogue._quoted_cells

    def counting(text: str, *args: object) -> object:
        scanned[0] += len(text)
        return real(text, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(catalogue, "_quoted_cells", counting)
    with pytest.raises(CatalogueError, match="row has 2001 cells for 2 columns"):
        read_catalogue(path, Defaults(template="{title}"), Limits())
    assert scanned[0] < 4 * len(data)


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ({"size": "\x00"}, "NUL byte"),
        ({"seed": "\ud800"}, "lone surrogate"),
        ({"\ud800": "x"}, "lone surrogate"),
    ],
)
def test_a_columns_value_the_ledger_cannot_store_is_refused(columns: dict[str, str], words: str) -> None:
    """A column name echoed into a rejection (`no such column ... --column size=\\x00`) must be storable: the
    text options were checked for NUL and lone surrogates, the `columns` map's names were not."""
    problems = option_problems(Options(columns=columns))
    assert [name for name, _ in problems] == ["columns"]
    assert words in problems[0][1]


def test_a_huge_columns_key_is_not_echoed_whole() -> None:
    """An unknown override name is quoted in the problem, which goes back in the 422 and into the stored
    job.rejected event: a 100 KB key made a 200 KB message."""
    problems = option_problems(Options(columns={"x" * 100_000: "a"}))
    assert [name for name, _ in problems] == ["columns"]
    assert len(problems[0][1]) < 300
    with pytest.raises(UsageError, match="not a per-row override column"):
        Defaults(template="{t}", columns=((["size"], "a"),))  # type: ignore[arg-type]
