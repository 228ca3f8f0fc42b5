"""What a catalogue read reports: every problem located as `file:line: field 'x'`, and the settings that raise
each cap."""

from __future__ import annotations

from dataclasses import dataclass

MAX_LISTED = 50


class UsageError(ValueError):
    """A bad template, default or setting: the job's settings are wrong, not any one row."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalogue, located precisely enough to fix it in an editor."""

    path: str  # as the user named the file ("-" for stdin)
    line: int  # 1-based, as an editor counts
    field: str | None  # the column or option at fault; None for the whole line or file
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: "
        if self.field is not None:
            where += f"field {self.field!r}: "
        return where + self.message


class CatalogueError(Exception):
    """The catalogue has problems; all of them are in `problems`, the first 50 in the message."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


# The settings the lead wires to each cap; messages name them so a user knows what to raise.
ENV = {
    "cell_bytes": "PIXELMILL_CATALOGUE_CELL_BYTES",
    "row_bytes": "PIXELMILL_CATALOGUE_ROW_BYTES",
    "columns": "PIXELMILL_CATALOGUE_COLUMNS",
    "prompt_bytes": "PIXELMILL_PROMPT_BYTES",
    "items": "PIXELMILL_JOB_MAX_ITEMS",
    "problems": "PIXELMILL_CATALOGUE_MAX_PROBLEMS",
    "tokens": "PIXELMILL_PROMPT_TOKENS",
    "quoted_lines": "PIXELMILL_CATALOGUE_QUOTED_LINES",
    "input_bytes": "PIXELMILL_INPUT_MAX_BYTES",
    "input_pixels": "PIXELMILL_INPUT_MAX_PIXELS",
}
