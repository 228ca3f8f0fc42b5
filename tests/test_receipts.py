"""Receipts for nightly catalogues: the manifest hand-off, the contact sheet in a real browser, cancel, retry,
items, jobs nobody can run, `submit --wait` exit codes, read commands on an empty directory, drift."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import servers
from sqlalchemy import func, select

from conftest import Env, finished, write_catalogue
from pixelmill.schema import Image, Item, State, Worker

SCORE_COLUMNS = ["clip_score", "aesthetic", "sharpness", "exposure", "clipped_dark", "clipped_light",
                 "white_background"]
COLUMNS = ["key", "variant", "change", "state", "object_key", "url", "sha256", "bytes", "width", "height", "format",
           "job", "item", "generated_at", "prompt", "seed", "model", "engine", *SCORE_COLUMNS, "safety",
           "provenance", "error"]


def require(kind: str) -> None:
    reason = servers.unavailable(kind)
    if reason and os.environ.get("REQUIRE_TEST_SERVERS"):  # .ci/run: a missing tool fails, never skips
        pytest.fail(f"{kind} is required (REQUIRE_TEST_SERVERS is set) but {reason}")
    if reason:
        pytest.skip(reason)


def open_in_chromium(page: Path, screenshot: Path, profile: Path) -> str:
    """Load the page in headless Chromium, take a screenshot; returns the browser's log (console included)."""
    binary = servers.chromium_binary()
    assert binary is not None
    proc = subprocess.run(
        [binary, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={profile}", "--virtual-time-budget=5000", f"--screenshot={screenshot}",
         "--window-size=1400,1000", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert screenshot.exists(), proc.stderr[-3000:]
    return proc.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def distinct_colours(png: Path) -> int:
    from PIL import Image as PILImage

    with PILImage.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24) or [])


@pytest.mark.e2e
def test_manifest_and_contact_sheet_of_a_40_image_job(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 40)
    # A key and a prompt that would be markup if anything failed to escape them.
    text = catalogue.read_text().replace("SKU-007,ceramic mug model 7",
                                         'SKU-<b>7</b>,"ceramic mug </script><img src=x onerror=alert(1)>"')
    catalogue.write_text(text)
    env.start_worker()
    job = env.submit(catalogue)["job"]
    assert env.wait_for(job, finished, timeout=400)["succeeded"] == 40

    # Manifest: CSV, JSONL and Parquet carry the same 40 rows, with what a shop system needs.
    csv_rows = list(csv.DictReader(io.StringIO(env.cli("manifest", "--job", str(job), "--urls").stdout)))
    assert len(csv_rows) == 40 and list(csv_rows[0]) == COLUMNS
    objects = env.objects()
    for row in csv_rows:
        assert row["state"] == "succeeded" and row["safety"] == "ok" and row["provenance"] == "xmp"
        assert objects[row["object_key"]] == row["sha256"] and row["url"].startswith("file://")
        assert row["width"] == row["height"] == "64" and row["format"] == "png" and row["engine"]
        assert all(row[c] != "" for c in SCORE_COLUMNS) and row["error"] == ""
    env.cli("manifest", "--job", str(job), "--format", "jsonl", "-o", str(tmp_path / "m.jsonl"))
    jsonl = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["key"] for r in jsonl] == [r["key"] for r in csv_rows] and jsonl[0]["url"] is None
    env.cli("manifest", "--job", str(job), "--format", "parquet", "-o", str(tmp_path / "m.parquet"))
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "m.parquet")
    assert table.num_rows == 40 and table.column_names == COLUMNS
    assert table.column("sha256").to_pylist() == [r["sha256"] for r in csv_rows]

    # Contact sheet: one file, thumbnails embedded, opens in a real browser without a console error.
    require("chromium")
    page = tmp_path / "sheet.html"
    env.cli("sheet", "--job", str(job), "-o", str(page))
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 40
    assert "<b>7</b>" not in html and "</script><img" not in html  # escaped, rendered as text
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # offline
    log = open_in_chromium(page, tmp_path / "sheet.png", tmp_path / "profile")
    assert console_errors(log) == [], log[-3000:]
    empty = tmp_path / "empty.html"
    empty.write_text("<!doctype html><html><body></body></html>")
    open_in_chromium(empty, tmp_path / "empty.png", tmp_path / "profile2")
    assert distinct_colours(tmp_path / "sheet.png") > 50 * distinct_colours(tmp_path / "empty.png")
    keep = os.environ.get("PIXELMILL_KEEP_SHEET")  # to look at it: PIXELMILL_KEEP_SHEET=/tmp/sheet
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("sheet.html", "sheet.png"):
            (Path(keep) / name).write_bytes((tmp_path / name).read_bytes())
