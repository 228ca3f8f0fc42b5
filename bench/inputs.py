"""Catalogue reader benchmark: hostile inputs are refused fast with flat memory; good ones read at speed.

Each case runs in a fresh subprocess, which reports its own wall time, CPU time and peak RSS
(`resource.getrusage`), next to the RSS of the same interpreter after imports only, so "flat memory" is
a measured difference, not a claim. A script, not a timed test: figures depend on the machine.

    python bench/inputs.py                  # every case; files under a temporary directory
    python bench/inputs.py --cases read-100k,read-1m --dir /tmp/pm-bench

Cases:
  header-1m-columns      1,000,000-column CSV header (6.9 MB), default limits: refused at the row cap
  header-1m-columns-raw  the same with the row cap raised to 64 MiB: parsed, refused at the column cap
  jsonl-100mb-line       a 100 MB JSONL line followed by a good one: refused (skipped unread), default limits
  csv-100mb-line         a 100 MB CSV row: refused at the row cap
  read-100k / read-1m    id,title,color rows, template "studio photo of {title}, {color}": read + validate +
                         render, rows consumed as they stream (as submit does)
  read-100k-jsonl        the same rows as JSONL
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "studio photo of {title}, {color}"
COLORS = ["red", "sea green", "matte black", "off white", "navy blue"]


def _write_rows(path: Path, rows: int, jsonl: bool = False) -> None:
    """Typical product rows, written as they would be exported."""
    with path.open("w", encoding="utf-8") as out:
        if not jsonl:
            out.write("id,title,color\n")
        for i in range(rows):
            title, color = f"Ceramic mug model {i}", COLORS[i % len(COLORS)]
            if jsonl:
                out.write(json.dumps({"id": f"SKU-{i:07d}", "title": title, "color": color}) + "\n")
            else:
                out.write(f"SKU-{i:07d},{title},{color}\n")


def _write_wide_header(path: Path) -> None:
    """The outside tester's million-column header."""
    with path.open("w") as out:
        out.write(",".join(f"c{i}" for i in range(1_000_000)) + "\nx\n")


def _write_long_line(path: Path, jsonl: bool) -> None:
    """A 100 MB cell, written in 1 MiB pieces so the writer stays small too."""
    chunk = b"x" * (1 << 20)
    with path.open("wb") as out:
        out.write(b'{"id": "A", "title": "' if jsonl else b"id,title,color\nA,Mug,")
        for _ in range(100):
            out.write(chunk)
        out.write(b'", "color": "red"}\n{"id": "B", "title": "Tee", "color": "blue"}\n' if jsonl else b"\n")


# case -> (file name, writer, expect refusal, limits overrides)
CASES: dict[str, tuple[str, Callable[[Path], None], bool, dict[str, int]]] = {
    "header-1m-columns": ("wide.csv", _write_wide_header, True, {}),
    "header-1m-columns-raw": ("wide.csv", _write_wide_header, True, {"row_bytes": 64 << 20}),
    "jsonl-100mb-line": ("long.jsonl", lambda p: _write_long_line(p, True), True, {}),
    "csv-100mb-line": ("long.csv", lambda p: _write_long_line(p, False), True, {}),
    "read-100k": ("rows-100k.csv", lambda p: _write_rows(p, 100_000), False, {}),
    "read-1m": ("rows-1m.csv", lambda p: _write_rows(p, 1_000_000), False, {}),
    "read-100k-jsonl": ("rows-100k.jsonl", lambda p: _write_rows(p, 100_000, jsonl=True), False, {}),
}


def _peak_mb() -> float:
    """This process's peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(path: str, limits: dict[str, Any]) -> None:
    """Run one read in this process and print its figures as JSON."""
    from producer.catalogue import CatalogueError, Defaults, Limits, Stats, iter_catalogue

    baseline = _peak_mb()
    stats = Stats()
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = "read"
    try:
        for _row in iter_catalogue(path, Defaults(template=TEMPLATE), Limits(**limits), stats=stats):
            pass  # a caller inserts each row and keeps nothing
    except CatalogueError as exc:
        outcome = f"refused: {exc.problems[0].message[:110]}"
    print(
        json.dumps(
            {
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "peak_rss_mb": _peak_mb(),
                "baseline_rss_mb": baseline,
                "rows": stats.rows,
                "outcome": outcome,
            }
        )
    )


def main() -> None:
    """Write the inputs (in subprocesses), run each case in a fresh subprocess, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--dir", type=Path, help="where to write the inputs (default: a temporary directory)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    if args.make:
        CASES[args.make[0]][1](Path(args.make[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        print("| case | input | outcome | wall s | CPU s | rows/s | peak RSS MB | RSS after imports MB |")
        print("|---|---|---|---|---|---|---|---|")
        for name in args.cases.split(","):
            file_name, _writer, refused, limits = CASES[name]
            path = directory / file_name
            if not path.exists():  # in a subprocess: a child's peak RSS starts from its parent's at fork
                subprocess.run([sys.executable, __file__, "--make", name, str(path)], check=True)
            run = subprocess.run(
                [sys.executable, __file__, "--child", str(path), json.dumps(limits)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            result = json.loads(run.stdout)
            rate = f"{result['rows'] / result['wall_s']:,.0f}" if not refused else "-"
            size = f"{path.stat().st_size / 1e6:,.1f} MB"
            if refused != result["outcome"].startswith("refused"):
                result["outcome"] = "UNEXPECTED " + result["outcome"]
            print(
                f"| {name} | {size} | {result['outcome']} | {result['wall_s']:.3f} | {result['cpu_s']:.3f} | "
                f"{rate} | {result['peak_rss_mb']:.1f} | {result['baseline_rss_mb']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
