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
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import servers
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import Env, Servers, finished, missing_server, write_catalogue
from contract.ledger import Ledger
from contract.schema import Image, Item, Job, State, Worker
from contract.tenants import DEFAULT_TENANT_ID

SCORE_COLUMNS = [
    "clip_score",
    "aesthetic",
    "sharpness",
    "exposure",
    "clipped_dark",
    "clipped_light",
    "white_background",
]
COLUMNS = [
    "key",
    "variant",
    "change",
    "state",
    "object_key",
    "url",
    "sha256",
    "bytes",
    "width",
    "height",
    "format",
    "job",
    "item",
    "generated_at",
    "prompt",
    "seed",
    "model",
    "engine",
    *SCORE_COLUMNS,
    "safety",
    "provenance",
    "error",
    "input",
    "input_sha256",
]


def require(kind: str) -> None:
    reason = servers.unavailable(kind)
    if reason:
        missing_server(kind, reason)


def open_in_chromium(page: Path, screenshot: Path, profile: Path) -> str:
    """Load the page in headless Chromium, take a screenshot; returns the browser's log (console included)."""
    binary = servers.chromium_binary()
    assert binary is not None
    proc = subprocess.run(
        [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            f"--screenshot={screenshot}",
            "--window-size=1400,1000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.exists(), proc.stderr[-3000:]
    return proc.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def distinct_colours(png: Path) -> int:
    from PIL import Image as PILImage

    with PILImage.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24) or [])


@pytest.mark.e2e
@pytest.mark.minute(1)
def test_manifest_and_contact_sheet_of_a_40_image_job(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 40)
    # A key and a prompt that would be markup if anything failed to escape them.
    text = catalogue.read_text().replace(
        "SKU-007,ceramic mug model 7", 'SKU-<b>7</b>,"ceramic mug </script><img src=x onerror=alert(1)>"'
    )
    catalogue.write_text(text)
    env.start_worker()
    job = env.submit(catalogue, "--catalogue", "nightly")["job"]
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

    # The next night: one product changed, one gone. The catalogue's manifest says so, row by row.
    night2 = tmp_path / "night2.csv"
    lines = catalogue.read_text().splitlines()
    night2.write_text(
        "\n".join(
            line.replace("ceramic mug model 12,", "stoneware mug model 12,")
            for line in lines
            if not line.startswith("SKU-039,")
        )
        + "\n"
    )
    second = env.submit(night2, "--catalogue", "nightly")
    assert second["items"] == 1 and second["skipped"] == 38
    assert env.wait_for(second["job"], finished)["succeeded"] == 1
    entries = list(csv.DictReader(io.StringIO(env.cli("manifest", "--catalogue", "nightly").stdout)))
    changes = {row["key"]: row["change"] for row in entries}
    assert len(entries) == 40 and changes["SKU-039"] == "retired" and changes["SKU-012"] == "changed"
    assert sum(c == "unchanged" for c in changes.values()) == 38
    by_key = {row["key"]: row for row in entries}
    assert by_key["SKU-012"]["job"] == str(second["job"]) and by_key["SKU-000"]["job"] == str(job)
    assert by_key["SKU-039"]["object_key"] and by_key["SKU-039"]["state"] == "succeeded"  # kept, marked
    missing = env.cli("manifest", "--catalogue", "nope", check=False)
    assert missing.returncode == 2 and "no catalogue 'nope'" in missing.stderr

    env.cli("sheet", "--catalogue", "nightly", "-o", str(tmp_path / "catalogue.html"))
    catalogue_sheet = (tmp_path / "catalogue.html").read_text()
    assert catalogue_sheet.count("data:image/jpeg;base64,") == 40 and '"ch":"retired"' in catalogue_sheet

    # Contact sheet: one file, thumbnails embedded, opens in a real browser without a console error.
    require("chromium")
    # The catalogue's: the second night's changes as filters; the retired product one click away, greyed out.
    browser = Chromium(tmp_path / "profile-catalogue")
    try:
        browser.open((tmp_path / "catalogue.html").as_uri())
        counts = browser.js(COUNTS)
        assert counts["current"] == 39 and counts["retired"] == 1 and counts["changed"] == 1
        assert counts["unchanged"] == 38 and counts["new"] == 0 and counts["all"] == 40
        browser.click("#show .f-retired")
        assert browser.js(VISIBLE_TILES) == [["SKU-039", "retired"]]
        assert browser.js("document.querySelector('.tile.retired .ribbon').innerText") == "RETIRED"
    finally:
        browser.close()
    assert browser.errors == []
    page = tmp_path / "sheet.html"
    env.cli("sheet", "--job", str(job), "-o", str(page))
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 40
    assert "<b>7</b>" not in html and "</script><img" not in html  # escaped, rendered as text
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # offline
    dom = subprocess.run(
        [
            str(servers.chromium_binary()),
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={tmp_path / 'profile-dom'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count('class="tile') == 40 and "SKU-&lt;b&gt;7&lt;/b&gt;" in dom and "<b>7</b>" not in dom
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


def image_count(env: Env, job: int) -> int:
    with env.ledger().session() as session:
        return session.scalars(select(func.count()).select_from(Image).join(Item).where(Item.job_id == job)).one()


@pytest.mark.e2e
@pytest.mark.minute(1)
def test_cancel_mid_job_stops_it_at_once(env: Env, tmp_path: Path) -> None:
    env.vars["PIXELMILL_BATCH_SIZE"] = "2"
    env.start_worker()
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 30), "--steps", "8")["job"]
    env.wait_for(job, lambda c: c["succeeded"] >= 4, timeout=240)
    result = json.loads(env.cli("cancel", str(job), "--json").stdout)
    stored = image_count(env, job)
    counts = env.wait_for(job, lambda c: True)
    assert counts["pending"] == counts["queued"] == counts["running"] == 0, counts
    assert counts["cancelled"] == result["cancelled"] > 0 and counts["succeeded"] == stored
    time.sleep(8)  # the chunk that was running ends; later messages claim nothing
    assert image_count(env, job) == stored
    assert env.wait_for(job, lambda c: True) == counts
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["cancelled"] == result["cancelled"] and status["finished"] is True
    assert json.loads(env.cli("jobs", "--json").stdout)[0]["cancelled"] == result["cancelled"]


@pytest.mark.e2e
def test_retry_succeeds_failed_items_with_fresh_attempts(env: Env, tmp_path: Path) -> None:
    env.vars["PIXELMILL_MAX_ATTEMPTS"] = "1"
    # A file in the way is a storage error, which backs off for PIXELMILL_INFRA_RETRY_BUDGET before it counts:
    # no budget, so the item fails now.
    env.vars["PIXELMILL_INFRA_RETRY_BUDGET"] = "0"
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 6))["job"]
    blockers = []
    for key in ("SKU-001", "SKU-004"):  # a file where the item's directory must go: storing it fails
        blocker = env.data_dir / "images" / "jobs" / str(job) / key
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("in the way")
        blockers.append(blocker)
    with env.ledger().session() as session:
        seeds = dict(session.execute(select(Item.item_key, Item.seed).where(Item.job_id == job)).all())
    env.start_worker()
    counts = env.wait_for(job, finished)
    assert counts["failed"] == 2 and counts["succeeded"] == 4, counts

    proc = env.cli("items", str(job), "--state", "failed", "--json")
    listed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["key"] for r in listed) == ["SKU-001", "SKU-004"]
    assert all(r["state"] == "failed" and r["attempts"] == 1 and "Error" in r["error"] for r in listed), listed
    table = env.cli("items", str(job), "--state", "failed").stdout
    assert "SKU-001" in table and "SKU-000" not in table

    for blocker in blockers:
        blocker.unlink()
    assert json.loads(env.cli("retry", str(job), "--json").stdout) == {"job": job, "requeued": 2}
    counts = env.wait_for(job, finished)
    assert counts["succeeded"] == 6 and counts["failed"] == 0, counts
    with env.ledger().session() as session:
        rows = session.execute(
            select(Item.item_key, Item.seed, Item.attempts, Item.error).where(Item.job_id == job)
        ).all()
    assert all(r.attempts == 1 and r.error is None for r in rows), rows  # counted again from 0
    assert {r.item_key: r.seed for r in rows} == seeds
    assert image_count(env, job) == 6
    manifest = list(csv.DictReader(io.StringIO(env.cli("manifest", "--job", str(job)).stdout)))
    assert {r["state"] for r in manifest} == {"succeeded"} and all(r["object_key"] for r in manifest)


def test_a_job_nobody_serves_says_so(env: Env, tmp_path: Path) -> None:
    proc = env.cli_submit(
        write_catalogue(tmp_path / "catalogue.csv", 2), "--model", "acme/typo-model", template="photo of {title}"
    )
    from contract.queue import queue_for

    queue = queue_for("acme/typo-model")
    assert f"warning: no live worker serves this job's model queue {queue}" in proc.stderr
    assert "pixelmill worker --model acme/typo-model" in proc.stderr
    job = int(proc.stdout.split()[1])
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["no_worker"].startswith(f"no worker has served this model's queue {queue} for ")
    assert "no worker has served" in env.cli("status", str(job)).stdout
    from contract.schema import Meta

    with env.ledger().session() as session:  # where this ledger's data directory is, for whoever reads it
        assert session.get(Meta, "data_dir").value == str(env.data_dir.resolve())  # type: ignore[union-attr]


@pytest.mark.e2e
def test_a_worker_whose_model_cannot_load_does_not_take_its_queue(env: Env, tmp_path: Path) -> None:
    from contract.queue import queue_for

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')  # nothing to load
    worker = env.start_worker("--model", str(broken))
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 4), "--model", str(broken))["job"]
    assert worker.wait(timeout=240) == 1, env.worker_logs()[-3000:]
    assert "worker stopped: model" in env.worker_logs()
    time.sleep(1)
    counts = env.wait_for(job, lambda c: True)
    # Not claimed: no attempt used, nothing failed. Whether the stopping worker's scheduler sent them first (and its
    # reconciler put them back while the failed child held the message) depends on timing: pending or queued.
    assert counts["queued"] + counts["pending"] == 4, counts
    with env.ledger().session() as session:
        assert session.scalars(select(Item.attempts).where(Item.job_id == job)).all() == [0] * 4
        assert session.scalars(select(Worker.state).where(Worker.queue == queue_for(str(broken)))).all() == ["failed"]
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert "no worker has served" in status["no_worker"] and "failed to load" in status["no_worker"]

    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"weights")
    proc = env.cli("worker", "--model", str(a_file), check=False)
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    proc = env.cli("worker", "--model", "acme/no-such-model", check=False)
    assert proc.returncode == 2 and "hub id 'acme/no-such-model' cannot be resolved" in proc.stderr


@pytest.mark.e2e
@pytest.mark.minute(1)
def test_submit_wait_exit_codes(env: Env, tmp_path: Path) -> None:
    env.start_worker(PIXELMILL_POLICY_ALLOW_CHECKER_OFF="false")  # refuses jobs without an image checker
    tiny = ("--size", "64x64", "--steps", "2")

    def submit_wait(catalogue: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return env.cli_submit(catalogue, *args, "--wait", template="photo of {title}", check=False)

    ok = submit_wait(write_catalogue(tmp_path / "a.csv", 3), *tiny, "--timeout", "240")
    assert ok.returncode == 0, ok.stderr
    assert "3 succeeded, 0 blocked, 0 failed" in ok.stderr
    env.vars["PIXELMILL_IMAGE_CHECKER"] = "none"
    failed = submit_wait(write_catalogue(tmp_path / "b.csv", 2, start=10), *tiny)
    assert failed.returncode == 3, failed.stderr
    timeout = submit_wait(write_catalogue(tmp_path / "c.csv", 2, start=20), "--model", "acme/nobody", "--timeout", "2")
    assert timeout.returncode == 4 and "unfinished after --timeout 2 s" in timeout.stderr, timeout.stderr
    assert "no worker has served this model's queue" in timeout.stderr
    job = int(timeout.stdout.split()[1])
    env.cli("cancel", str(job))
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["cancelled"] == 2 and status["finished"] is True

    # Earlier nights of catalogue "mugs" were far sharper: tonight's run drifted, exit 5.
    from contract.schema import Job, RunStats

    with env.ledger().session() as session:
        for night in range(3):
            earlier = Job(
                tenant_id=DEFAULT_TENANT_ID,
                name=f"mugs-{night}",
                model=str(env.model),
                params={},
                counts={},
                catalogue="mugs",
            )
            session.add(earlier)
            session.flush()
            session.add(
                RunStats(
                    job_id=earlier.id,
                    catalogue="mugs",
                    gpu_seconds=1.0,
                    scores={"sharpness": {"n": 10, "median": 1e9, "p10": 1e9, "p90": 1e9}},
                    **dict(items=10, succeeded=10, blocked=0, failed=0, cancelled=0),
                )
            )
    env.vars.pop("PIXELMILL_IMAGE_CHECKER")
    env.vars.update(env.backend)
    drifted = submit_wait(
        write_catalogue(tmp_path / "d.csv", 2, start=30), *tiny, "--catalogue", "mugs", "--fail-on-drift"
    )
    assert drifted.returncode == 5 and "drift: median sharpness" in drifted.stderr, drifted.stderr


def test_read_commands_on_a_directory_without_a_ledger_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {**os.environ, "PIXELMILL_DATA_DIR": str(empty / "pixelmill-data")}
    env.pop("PIXELMILL_DATABASE_URL", None)
    for args in (
        ["status", "1"],
        ["jobs"],
        ["items", "1"],
        ["manifest", "--job", "1"],
        ["sheet", "--job", "1", "-o", str(tmp_path / "s.html")],
        ["url", "1", "K"],
        ["review", "1"],
        ["cancel", "1"],
        ["retry", "1"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "pixelmill", *args], env=env, cwd=empty, text=True, capture_output=True, timeout=60
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert (
            f"no ledger at {empty / 'pixelmill-data' / 'pixelmill.db'} "
            "(set PIXELMILL_DATA_DIR or PIXELMILL_DATABASE_URL)"
        ) in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert list(empty.iterdir()) == []  # nothing created


def written_item(
    session: Session,
    job_id: int,
    key: str,
    n: int,
    state: State,
    now: datetime,
    *,
    content_hash: str,
    prompt: str = "p",
    error: str | None = None,
) -> Item:
    """A finished item row written straight into the ledger (set-up, not a transition), flushed for its id."""
    item = Item(
        job_id=job_id,
        item_key=key,
        variant=0,
        prompt=prompt,
        negative="",
        params={},
        seed=n,
        content_hash=content_hash,
        state=state,
        attempts=1,
        error=error,
        created=now,
        finished_at=now,
    )
    session.add(item)
    session.flush()
    return item


def written_job(session: Session, name: str, catalogue: str, now: datetime) -> Job:
    """A job row of the default tenant for `catalogue`, written straight into the ledger."""
    job = Job(tenant_id=DEFAULT_TENANT_ID, name=name, model="m", params={}, counts={}, catalogue=catalogue, created=now)
    session.add(job)
    session.flush()
    return job


def written_image(
    item: Item, storage_key: str, now: datetime, *, timings: dict[str, float], scores: dict[str, float]
) -> Image:
    """The image row of a succeeded item, written straight into the ledger beside it."""
    stored = dict(sha256="0" * 64, width=64, height=64, bytes=1, format="png", engine_id="e")
    return Image(item_id=item.id, storage_key=storage_key, timings=timings, scores=scores, created=now, **stored)


def make_run(ledger: Ledger, catalogue: str, *, scale: float = 1.0, failed: int = 0, items: int = 20) -> int:
    """A finished run of `catalogue` written straight into the ledger: `items` items, `failed` of them failed,
    the others succeeded with scores around fixed medians times `scale`."""
    from contract.schema import utcnow

    now = utcnow()
    with ledger.session() as session:
        job = written_job(session, f"{catalogue}-run", catalogue, now)
        for n in range(items):
            state = State.failed if n < failed else State.succeeded
            item = written_item(session, job.id, f"K{n}", n, state, now, content_hash=f"{job.id}-{n}")
            if state == State.succeeded:
                wobble = 1 + (n % 5 - 2) / 100
                scores = {
                    "clip_score": 30 * scale * wobble,
                    "aesthetic": 5.5 * scale * wobble,
                    "sharpness": 400 * wobble,
                    "exposure": 0.6,
                }
                session.add(written_image(item, f"k{item.id}", now, timings={"total": 0.8, "batch": 4}, scores=scores))
        return job.id


def test_drift_flags_the_run_whose_scores_were_lowered_and_not_the_normal_ones(env: Env) -> None:
    from producer.drift import drift_report

    ledger = env.ledger()
    normal = [make_run(ledger, "shop", scale=s) for s in (1.0, 1.02, 0.98, 1.01)]
    lowered = make_run(ledger, "shop", scale=0.8)  # clip_score and aesthetic medians 20 % down
    after = make_run(ledger, "shop", failed=3)  # normal scores, failed rate 15 % against 0 %
    rows = json.loads(env.cli("drift", "--catalogue", "shop", "--json").stdout)
    assert [r["job"] for r in rows] == [*normal, lowered, after]
    assert [r["flagged"] for r in rows] == [False] * 4 + [True, True]
    assert any("median clip_score" in reason for reason in rows[4]["reasons"])
    assert any("median aesthetic" in reason for reason in rows[4]["reasons"])
    assert [r.split()[0] for r in rows[5]["reasons"]] == ["failed"]
    assert rows[0]["gpu_seconds"] == 20 * 0.8 / 4
    table = env.cli("drift", "--catalogue", "shop").stdout
    assert "FLAGGED" in table and f"job {lowered}: median clip_score" in table
    with ledger.session() as session:
        report = drift_report(session, DEFAULT_TENANT_ID, "shop", lowered)
        assert report is not None and report.flagged and [r.job for r in report.earlier] == normal
        assert not drift_report(session, DEFAULT_TENANT_ID, None, normal[-1]).flagged  # type: ignore[union-attr]
    env.cli("sheet", "--job", str(lowered), "--link", "-o", str(env.data_dir / "linked.html"))
    linked = (env.data_dir / "linked.html").read_text()  # large jobs: the objects' URLs, nothing embedded
    assert linked.count('"src":"file://') == 20 and "data:image" not in linked
    loose = env.cli("drift", "--catalogue", "shop", "--json", check=False)
    assert loose.returncode == 0
    env.vars["PIXELMILL_DRIFT_SCORE_DROP"] = "0.3"  # a looser threshold: the lowered run passes
    rows = json.loads(env.cli("drift", "--catalogue", "shop", "--json").stdout)
    assert rows[4]["flagged"] is False


def test_manifest_and_drift_on_postgresql(test_servers: Servers, tmp_path: Path) -> None:
    """The manifest's JSON extraction, timestamps and server-side cursor, and run statistics, on PostgreSQL."""
    from contract.ledger import Ledger, make_engine, upgrade
    from contract.settings import Settings
    from producer.drift import drift_report
    from producer.manifest import iter_manifest, write_csv

    url = test_servers.get("postgres").create_database(test_servers.next_name("pm"))
    settings = Settings(data_dir=tmp_path, database_url=url)
    engine = make_engine(settings)
    upgrade(engine)
    engine.dispose()
    ledger = Ledger(settings)
    try:
        first = make_run(ledger, "pg", failed=2)
        lowered = make_run(ledger, "pg", scale=0.5)
        with ledger.session() as session:
            session.execute(
                Image.__table__.update().values(  # type: ignore[attr-defined]
                    safety={"checker": "sd", "blocked": False, "flagged": [], "scores": {}},
                    provenance={"xmp": True, "c2pa": True, "signer": "CN=shop"},
                )
            )
        with ledger.session(readonly=True) as session:
            rows = list(iter_manifest(session, tenant_id=DEFAULT_TENANT_ID, job=first))
            out = io.StringIO()
            write_csv(iter_manifest(session, tenant_id=DEFAULT_TENANT_ID, job=first), out)
        assert len(rows) == 20 and [r.state for r in rows[:3]] == ["failed", "failed", "succeeded"]
        ok = rows[2]
        assert ok.safety == "ok" and ok.provenance == "CN=shop" and ok.clip_score is not None
        assert ok.generated_at is not None and ok.generated_at.endswith("+00:00") and rows[0].error is None
        assert len(out.getvalue().splitlines()) == 21
        with ledger.session() as session:
            report = drift_report(session, DEFAULT_TENANT_ID, "pg", lowered)
            assert report is not None and report.flagged and [r.job for r in report.earlier] == [first]
    finally:
        ledger.close()


def test_parquet_without_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.manifest import ManifestError, parquet_schema

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ManifestError, match=r"pip install 'pixelmill\[parquet\]'"):
        parquet_schema()


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fd 3 in, fd 4
    out, NUL-terminated JSON), so a test clicks with the mouse and reads the rendered page, with no driver and
    no package. Errors the page logs or throws are kept in `errors`."""

    def __init__(self, profile: Path) -> None:
        import fcntl

        binary = servers.chromium_binary()
        assert binary is not None
        to_browser, from_browser = os.pipe(), os.pipe()
        # Above 4, so that moving them to 3 and 4 in the child cannot overwrite one with the other.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser[0], from_browser[1])]

        def child() -> None:
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        args = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--remote-debugging-pipe"]
        self.proc = subprocess.Popen(
            [binary, *args, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=child,  # noqa: PLW1509 (single-threaded here: the test's own process)
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in (to_browser[0], from_browser[1], *ends):
            os.close(fd)
        self.out, self.inp = to_browser[1], from_browser[0]
        self.errors: list[str] = []
        self.buffer, self.next_id = b"", 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime.enable", "Page.enable", "Log.enable"):
            self.send(domain, session=self.session)

    def send(self, method: str, *, session: str | None = None, **params: Any) -> dict[str, Any]:
        import select as select_fd

        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self.buffer:
                ready, _, _ = select_fd.select([self.inp], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"no answer to {method} from Chromium"
                chunk = os.read(self.inp, 1 << 20)
                assert chunk, f"Chromium closed the pipe during {method}"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, (method, reply["error"])
                return dict(reply["result"])
            self._event(reply)

    def _event(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(json.dumps(params.get("args"))[:500])
        elif event.get("method") == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", "")[:500])

    def js(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def open(self, url: str, width: int = 1280, height: int = 900, *, ready: str = "#grid > *") -> None:
        """Load `url` at this viewport and wait until the page has rendered an element matching `ready`."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session=self.session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", session=self.session, url=url)
        deadline = time.monotonic() + 30
        probe = f"document.readyState + ':' + !!document.querySelector({json.dumps(ready)})"
        while self.js(probe) != "complete:true":
            assert time.monotonic() < deadline, f"the page did not render {ready}"
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A real left click (mouse pressed and released) in the middle of the element."""
        box = self.js(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
            " var r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                session=self.session,
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def screenshot(self, path: Path) -> None:
        import base64

        data = self.send("Page.captureScreenshot", session=self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except AssertionError:
            pass
        self.proc.wait(timeout=30)
        os.close(self.out)
        os.close(self.inp)


HOSTILE_KEY = "SKU-\"'<script>document.title='pwned'</script>"
HOSTILE_PROMPT = "mug \"</script><img src=x onerror=\"document.title='pwned'\"> & 'quoted'"
LONG_PROMPT = "studio photo of a hand-thrown stoneware mug, speckled glaze " * 5


def png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return buffer.getvalue()


ENTRIES = {  # key: its catalogue entry's change in the latest run
    "SKU-A": "new",
    "SKU-B": "new",
    "SKU-C": "changed",
    "SKU-D": "unchanged",
    HOSTILE_KEY: "unchanged",
    "SKU-LONG": "unchanged",
    "SKU-OLD1": "retired",
    "SKU-OLD2": "retired",
    "SKU-F": "new",  # its item failed: the sheet and the manifest say "failed"
}
CHANGES = {key: "failed" if key == "SKU-F" else change for key, change in ENTRIES.items()}


def make_catalogue_runs(env: Env, name: str) -> None:
    """Two nightly runs of catalogue `name` written into the ledger (`ENTRIES`), real images in storage: 2 new,
    1 changed, 3 unchanged (one with a hostile key and prompt, one with a long prompt), 2 retired, 1 whose new
    item failed. Scores rise with the key's position."""
    from contract.schema import CatalogueEntry, utcnow

    storage, now = env.storage(), utcnow()
    with env.ledger().session() as session:
        jobs = [written_job(session, f"{name}-{night}", name, now) for night in (1, 2)]
        for n, (key, change) in enumerate(ENTRIES.items()):
            job = jobs[1] if change in ("new", "changed") else jobs[0]
            failed = key == "SKU-F"
            prompt = {HOSTILE_KEY: HOSTILE_PROMPT, "SKU-LONG": LONG_PROMPT}.get(key, f"ceramic mug {key}")
            state = State.failed if failed else State.succeeded
            error = "storage: disk full" if failed else None
            item = written_item(session, job.id, key, n, state, now, prompt=prompt, content_hash=f"h{n}", error=error)
            if not failed:
                storage.create(f"img/{n}.png", png((40 * n % 256, 90, 200 - 20 * n)), "image/png")
                scores = {"clip_score": 30 + n, "aesthetic": 5 + n / 10, "sharpness": 400 + n}
                session.add(written_image(item, f"img/{n}.png", now, timings={}, scores=scores))
            session.add(
                CatalogueEntry(
                    tenant_id=DEFAULT_TENANT_ID,
                    catalogue=name,
                    item_key=key,
                    variant=0,
                    content_hash=f"h{n}",
                    item_id=item.id,
                    job_id=jobs[1].id,
                    change=change,
                    updated=now,
                )
            )


VISIBLE_TILES = (
    "Array.prototype.map.call(document.querySelectorAll('#grid .tile'), function (t) {"
    " return [t.querySelector('.key').textContent, t.getAttribute('data-change')]; })"
)
COUNTS = (
    "Object.fromEntries(Array.prototype.map.call(document.querySelectorAll('#show input'), function (i) {"
    " return [i.value, Number(i.parentNode.querySelector('.n').textContent)]; }))"
)


@pytest.fixture
def catalogue_sheet(env: Env, tmp_path: Path) -> Iterator[Path]:
    """The sheet of `make_catalogue_runs`' catalogue "shop", written by the CLI; kept with its screenshots
    under PIXELMILL_KEEP_SHEET when set, to look at."""
    make_catalogue_runs(env, "shop")
    page = tmp_path / "sheet.html"
    env.cli("sheet", "--catalogue", "shop", "-o", str(page))
    yield page
    keep = os.environ.get("PIXELMILL_KEEP_SHEET")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for path in (page, *tmp_path.glob("*.png")):
            (Path(keep) / f"catalogue-{path.name}").write_bytes(path.read_bytes())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    require("chromium")
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()
    assert chromium.errors == []  # nothing thrown or logged as an error by the page


def test_catalogue_sheet_filters_by_change_with_counts(catalogue_sheet: Path, browser: Chromium) -> None:
    """A filter per change of the latest run, with its count; a real click shows that view and only it; the
    default view is the live catalogue, and says how many retired tiles it leaves out; a view can be linked."""
    text = catalogue_sheet.read_text()
    for value in ("current", "new", "changed", "unchanged", "retired", "failed", "all", "problems"):
        assert f'name="show" value="{value}"' in text  # the controls are markup, not made by the script
    browser.open(catalogue_sheet.as_uri())
    counts = browser.js(COUNTS)
    assert counts == {
        "current": 7,
        "new": 2,
        "changed": 1,
        "unchanged": 3,
        "retired": 2,
        "failed": 1,
        "all": 9,
        "problems": 2,  # SKU-F failed; SKU-A scores lowest of all, below the catalogue's p10
    }
    shown = browser.js(VISIBLE_TILES)
    assert sorted(k for k, _ in shown) == sorted(k for k, c in CHANGES.items() if c != "retired")
    assert "2 retired not shown" in browser.js("document.getElementById('page').textContent")
    browser.screenshot(catalogue_sheet.parent / "current-1280.png")
    browser.click("#show .f-new")
    assert sorted(browser.js(VISIBLE_TILES)) == [["SKU-A", "new"], ["SKU-B", "new"]]
    assert browser.js("location.hash") == "#show=new"  # a view can be linked
    highlighted = "Array.prototype.map.call(document.querySelectorAll('#show .on input'), i => i.value)"
    assert browser.js(highlighted) == ["new"]  # the chosen chip, and only it
    for value, count in counts.items():  # each count is the number of tiles its view shows
        browser.click(f"#show .f-{value}")
        shown = browser.js(VISIBLE_TILES)
        assert len(shown) == count, value
        if value in CHANGES.values():
            assert {c for _, c in shown} == {value}
    browser.open(catalogue_sheet.as_uri() + "#show=changed", width=800)
    assert browser.js(VISIBLE_TILES) == [["SKU-C", "changed"]]


def test_catalogue_sheet_retired_tiles_are_unmistakable_and_last(catalogue_sheet: Path, browser: Chromium) -> None:
    """Retired tiles: greyed-out image under a diagonal "retired" band, their own class, after every current
    tile whatever the sort, below a divider."""
    browser.open(catalogue_sheet.as_uri())
    browser.click("#show .f-retired")
    assert sorted(browser.js(VISIBLE_TILES)) == [["SKU-OLD1", "retired"], ["SKU-OLD2", "retired"]]
    look = browser.js(
        "Array.prototype.map.call(document.querySelectorAll('#grid .tile'), function (t) {"
        " var img = t.querySelector('img'), band = t.querySelector('.ribbon');"
        " return [t.className, getComputedStyle(img).filter, Number(getComputedStyle(img).opacity),"
        " band && band.innerText, band && getComputedStyle(band).transform]; })"
    )
    for classes, image_filter, opacity, band, transform in look:
        assert "retired" in classes.split() and "grayscale(1)" in image_filter and opacity < 0.6
        assert band == "RETIRED" and transform.startswith("matrix(")  # rotated across the image
    current = browser.js("getComputedStyle(document.querySelector('.tile')).filter")
    browser.click("#show .f-all")
    assert browser.js("getComputedStyle(document.querySelector('.tile:not(.retired) img')).filter") == "none"
    assert current == "none"
    for _ in range(2):  # ascending, then descending: retired last both times
        shown = [c for _, c in browser.js(VISIBLE_TILES)]
        assert len(shown) == 9 and shown[-2:] == ["retired", "retired"] and "retired" not in shown[:-2]
        assert browser.js(
            "var d = document.querySelector('#grid .divider');"
            " d !== null && d.nextElementSibling.getAttribute('data-change') === 'retired'"
            " && d.previousElementSibling.getAttribute('data-change') !== 'retired'"
        )
        browser.click("#desc")
    browser.js("window.scrollTo(0, 0)")
    browser.screenshot(catalogue_sheet.parent / "all-1280.png")
    browser.open(catalogue_sheet.as_uri() + "#show=all", width=800)
    browser.screenshot(catalogue_sheet.parent / "all-800.png")


def test_catalogue_sheet_tiles_show_key_and_prompt_as_text(catalogue_sheet: Path, browser: Chromium) -> None:
    """Key and prompt are visible on the tile without hovering, cut to two lines; the whole text is in the
    tooltip; hostile text stays text."""
    text = catalogue_sheet.read_text()
    assert "<script>document" not in text and "<img src=x" not in text
    browser.open(catalogue_sheet.as_uri())
    titles = browser.js(
        "Array.prototype.map.call(document.querySelectorAll('#grid .tile'), function (t) {"
        " var k = t.querySelector('.key'), p = t.querySelector('.title'), r = p.getBoundingClientRect();"
        " return [k.innerText, p.innerText, p.title, r.height, parseFloat(getComputedStyle(p).lineHeight),"
        " p.scrollHeight, k.title]; })"
    )
    by_key = {row[0]: row[1:] for row in titles}
    assert len(by_key) == 7 and HOSTILE_KEY in by_key
    for key, (shown, tooltip, height, line, _, key_tooltip) in by_key.items():
        assert shown and shown == tooltip.strip() and height >= line and key_tooltip == key  # not hover-only
    assert by_key[HOSTILE_KEY][0] == HOSTILE_PROMPT and by_key["SKU-C"][0] == "ceramic mug SKU-C"
    assert browser.js("document.title") == "catalogue shop"  # no injected script ran
    assert browser.js("document.querySelectorAll('#grid script, #grid img[src=x]').length") == 0
    _, tooltip, height, line, full, _ = by_key["SKU-LONG"]
    assert tooltip == LONG_PROMPT[:300] and height <= 2 * line + 1 and full > 2 * line  # two lines, rest on hover


def test_job_sheet_filters_by_state_with_counts(env: Env, browser: Chromium, tmp_path: Path) -> None:
    """A plain job's sheet filters by state (failed, blocked, low scores, problems), each with its count."""
    job = make_run(env.ledger(), "shop", failed=3)
    page = tmp_path / "job.html"
    env.cli("sheet", "--job", str(job), "-o", str(page))
    browser.open(page.as_uri())
    counts = browser.js(COUNTS)
    assert list(counts) == ["all", "succeeded", "failed", "blocked", "low", "problems"]  # no "cancelled": none
    assert counts["all"] == 20 and counts["succeeded"] == 17 and counts["failed"] == 3 and counts["blocked"] == 0
    assert counts["problems"] == 3 + counts["low"]
    assert len(browser.js(VISIBLE_TILES)) == 20  # a job's sheet opens on all of it
    for value, count in counts.items():
        browser.click(f"#show .f-{value}")
        assert len(browser.js(VISIBLE_TILES)) == count, value
    browser.click("#show .f-failed")
    assert (
        browser.js(
            "Array.prototype.map.call(document.querySelectorAll('#grid .tile'), function (t) {"
            " return t.getAttribute('data-state'); })"
        )
        == ["failed"] * 3
    )
