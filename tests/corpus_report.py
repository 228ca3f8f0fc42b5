"""Reading the generated prompt corpora (tests/data/make_*_corpora.py) and printing their rates: one reader and
one report for the filter's corpus and probe tests."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

Found = list[tuple[dict[str, str], bool]]
Table = dict[tuple[str, str], list[int]]


def rows(name: str) -> list[dict[str, str]]:
    """A generated corpus: split, category, technique, language, prompt."""
    with (DATA / name).open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def rates(found: Found, keys: tuple[str, ...], split: str | None = None) -> Table:
    """(column, value) → [blocked, total], over one split when `split` is given."""
    table: Table = defaultdict(lambda: [0, 0])
    for row, blocked in found:
        if split is None or row["split"] == split:
            for key in keys:
                table[(key, row[key])][0] += blocked
                table[(key, row[key])][1] += 1
    return table


def report(title: str, table: Table) -> str:
    lines = [title]
    for (key, value), (blocked, total) in sorted(table.items()):
        lines.append(f"  {key:<10}{value:<18}blocked {blocked:>4}/{total:<5}{100 * blocked / total:6.1f} %")
    return "\n".join(lines)
