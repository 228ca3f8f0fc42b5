"""Hostile catalogues through the real `pixelmill submit` command: refused with exit 2, fast, memory flat.

Each case runs `python -m pixelmill submit FILE` in a fresh process (embedded defaults in a temporary data
dir) and reports its exit code, wall time, and the child's peak RSS next to that of `pixelmill --help` (the
interpreter plus the CLI's imports), so "memory flat" is a measured difference. Nothing may be written: the
data dir must hold no ledger and no broker afterwards.

    python bench/hostile_submit.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _measure(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run one command in a wrapper process that reports the child's wall time and peak RSS."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': p.returncode, 'wall_s': round(wall, 3), 'peak_rss_mb': round(rss, 1),"
        " 'stderr': p.stderr.strip().splitlines()[:2]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(out.stdout))


def _in_process(env: dict[str, str], paths: list[Path]) -> dict[str, object]:
    """The refusal itself, without interpreter start-up and imports: `submit` through Typer's CliRunner in a
    process that has already imported the CLI (one warm-up run first)."""
    code = (
        "import json, sys, time, resource\n"
        "from typer.testing import CliRunner\n"
        "from pixelmill.cli import app\n"
        "runner = CliRunner()\n"
        "runner.invoke(app, ['submit', sys.argv[1], '--template', '{title}'])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "out = {}\n"
        "for path in sys.argv[1:]:\n"
        "    t = time.perf_counter()\n"
        "    r = runner.invoke(app, ['submit', path, '--template', '{title}'])\n"
        "    out[path.rsplit('/', 1)[-1]] = {'rc': r.exit_code, 'seconds': round(time.perf_counter() - t, 3)}\n"
        "out['peak_rss_growth_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, 1)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pm-hostile-") as tmp:
        work = Path(tmp)
        wide = work / "wide.csv"
        with wide.open("w") as out:
            out.write(",".join(f"c{i}" for i in range(1_000_000)) + "\nx\n")
        long_csv, long_jsonl = work / "long.csv", work / "long.jsonl"
        chunk = b"x" * (1 << 20)
        for path, head, tail in (
            (long_csv, b"id,title\nA-1,", b"\nA-2,cup\n"),
            (long_jsonl, b'{"id": "A-1", "title": "', b'"}\n{"id": "A-2", "title": "cup"}\n'),
        ):
            with path.open("wb") as fh:
                fh.write(head)
                for _ in range(100):
                    fh.write(chunk)
                fh.write(tail)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PIXELMILL_DATA_DIR": str(work / "data"),
            "PIXELMILL_IMAGE_CHECKER": "none",
            "OMP_NUM_THREADS": "1",
        }
        cli = [sys.executable, "-m", "pixelmill"]
        baseline = _measure([*cli, "--help"], env)
        rows = {"baseline (pixelmill --help)": baseline}
        for name, path in (
            ("1M-column header (6.9 MB)", wide),
            ("100 MB CSV line", long_csv),
            ("100 MB JSONL line", long_jsonl),
        ):
            started = time.perf_counter()
            rows[name] = _measure([*cli, "submit", str(path), "--template", "{title}"], env)
            rows[name]["file_mb"] = round(path.stat().st_size / 1e6, 1)
            rows[name]["outer_s"] = round(time.perf_counter() - started, 2)
        rows["in-process refusal (CliRunner, imports done)"] = _in_process(env, [wide, long_csv, long_jsonl])
        rows["data dir afterwards"] = {
            "entries": sorted(p.name for p in (work / "data").glob("*")) if (work / "data").exists() else []
        }
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
