"""`pixelmill compare JOB_A JOB_B`: an A/B comparison of two finished jobs over the same catalogue rows
(producer/compare.py): paired score differences with intervals, win rates, blocked/failed rates, GPU-seconds per
image, and with `--sheet` a side-by-side HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from contract.settings import get_settings
from contract.storage import open_storage
from pixelmill.cli.common import caller_tenant, err, fail, out, read_ledger
from pixelmill.cli.reports import written


def compare(
    job_a: Annotated[int, typer.Argument(help="Job A: the baseline (the current model or settings).")],
    job_b: Annotated[int, typer.Argument(help="Job B: the candidate, the same rows under another model/setting.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as one JSON object.")] = False,
    sheet: Annotated[
        Optional[Path], typer.Option(help="Also write a side-by-side HTML page of every pair to this file.")
    ] = None,
) -> None:
    """Compare two finished jobs run on the same catalogue rows (paired by key and variant): for each score,
    B's mean minus A's with a 95 % bootstrap interval (* where it excludes 0) and B's win rate; each job's
    blocked and failed rates and GPU-seconds per image."""
    from producer.compare import CompareError, compare_jobs, table_lines, write_side_by_side

    ledger = read_ledger()
    tenant = caller_tenant(ledger)
    try:
        with ledger.session() as session:  # writes the run_stats cache, as `drift` does
            comparison, matched = compare_jobs(session, tenant.id, job_a, job_b)
    except CompareError as exc:
        fail(str(exc))
    if sheet is not None:
        with written(sheet) as stream:
            count = write_side_by_side(stream, comparison, matched, open_storage(get_settings()))
        err.print(f"{count} pairs written to {sheet}", highlight=False)
    if as_json:
        print(json.dumps(comparison.as_dict()))
        return
    summary = comparison.as_dict()
    table = Table(
        "score",
        "pairs",
        "mean A",
        "mean B",
        "B - A",
        "95 % interval",
        "B wins",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"job {job_a} (A) vs job {job_b} (B): {comparison.both_succeeded} pairs succeeded in both",
    )
    for cells in table_lines(comparison):
        table.add_row(*[escape(c) for c in cells])
    out.print(table)
    for side in ("a", "b"):
        s = summary[side]
        per_image = "-" if s["gpu_seconds_per_image"] is None else f"{s['gpu_seconds_per_image']:.3g}"
        out.print(
            f"{side.upper()}: job {s['job']} {escape(s['name'])}: blocked {s['blocked_rate']:.1%}, "
            f"failed {s['failed_rate']:.1%}, GPU-seconds per image {per_image}",
            highlight=False,
        )
    if comparison.only_a or comparison.only_b:
        out.print(f"rows in only one job: {comparison.only_a} in A, {comparison.only_b} in B (not compared)")
