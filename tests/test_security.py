"""Hostile inputs to today's reader, request fields, demo and routes: each bounded in time, memory and reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer import catalogue
from producer.catalogue import CatalogueError, Defaults, Limits, read_catalogue


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
