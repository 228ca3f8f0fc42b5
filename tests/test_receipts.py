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
]


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
        return int(session.scalar(select(func.count()).select_from(Image).join(Item).where(Item.job_id == job)))


@pytest.mark.e2e
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
    proc = env.cli(
        "submit",
        str(write_catalogue(tmp_path / "catalogue.csv", 2)),
        "--template",
        "photo of {title}",
        "--key",
        "sku",
        "--model",
        "acme/typo-model",
    )
    from pixelmill.queue import queue_for

    queue = queue_for("acme/typo-model")
    assert f"warning: no live worker serves this job's model queue {queue}" in proc.stderr
    assert "pixelmill worker --model acme/typo-model" in proc.stderr
    job = int(proc.stdout.split()[1])
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["no_worker"].startswith(f"no worker has served this model's queue {queue} for ")
    assert "no worker has served" in env.cli("status", str(job)).stdout
    from pixelmill.schema import Meta

    with env.ledger().session() as session:  # where this ledger's data directory is, for whoever reads it
        assert session.get(Meta, "data_dir").value == str(env.data_dir.resolve())  # type: ignore[union-attr]


@pytest.mark.e2e
def test_a_worker_whose_model_cannot_load_does_not_take_its_queue(env: Env, tmp_path: Path) -> None:
    from pixelmill.queue import make_celery, queue_depth, queue_for

    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')  # nothing to load
    worker = env.start_worker("--model", str(broken))
    job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 4), "--model", str(broken))["job"]
    assert worker.wait(timeout=240) == 1, env.worker_logs()[-3000:]
    assert "worker stopped: model" in env.worker_logs()
    time.sleep(1)
    counts = env.wait_for(job, lambda c: True)
    assert counts["queued"] == 4, counts  # not claimed: no attempt used, nothing failed
    assert queue_depth(make_celery(env.settings()), queue_for(str(broken))) >= 1  # + a reconciler re-publish
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
def test_submit_wait_exit_codes(env: Env, tmp_path: Path) -> None:
    env.start_worker(PIXELMILL_POLICY_ALLOW_CHECKER_OFF="false")  # refuses jobs without an image checker
    ok = env.cli(
        "submit",
        str(write_catalogue(tmp_path / "a.csv", 3)),
        "--template",
        "photo of {title}",
        "--key",
        "sku",
        "--size",
        "64x64",
        "--steps",
        "2",
        "--wait",
        "--timeout",
        "240",
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "3 succeeded, 0 blocked, 0 failed" in ok.stderr
    env.vars["PIXELMILL_IMAGE_CHECKER"] = "none"
    failed = env.cli(
        "submit",
        str(write_catalogue(tmp_path / "b.csv", 2, start=10)),
        "--template",
        "photo of {title}",
        "--key",
        "sku",
        "--size",
        "64x64",
        "--steps",
        "2",
        "--wait",
        check=False,
    )
    assert failed.returncode == 3, failed.stderr
    timeout = env.cli(
        "submit",
        str(write_catalogue(tmp_path / "c.csv", 2, start=20)),
        "--template",
        "photo of {title}",
        "--key",
        "sku",
        "--model",
        "acme/nobody",
        "--wait",
        "--timeout",
        "2",
        check=False,
    )
    assert timeout.returncode == 4 and "unfinished after --timeout 2 s" in timeout.stderr, timeout.stderr
    assert "no worker has served this model's queue" in timeout.stderr
    job = int(timeout.stdout.split()[1])
    env.cli("cancel", str(job))
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["cancelled"] == 2 and status["finished"] is True

    # Earlier nights of catalogue "mugs" were far sharper: tonight's run drifted, exit 5.
    from pixelmill.schema import Job, RunStats

    with env.ledger().session() as session:
        for night in range(3):
            earlier = Job(name=f"mugs-{night}", model=str(env.model), params={}, counts={}, catalogue="mugs")
            session.add(earlier)
            session.flush()
            session.add(
                RunStats(
                    job_id=earlier.id,
                    catalogue="mugs",
                    items=10,
                    succeeded=10,
                    blocked=0,
                    failed=0,
                    cancelled=0,
                    gpu_seconds=1.0,
                    scores={"sharpness": {"n": 10, "median": 1e9, "p10": 1e9, "p90": 1e9}},
                )
            )
    env.vars.pop("PIXELMILL_IMAGE_CHECKER")
    env.vars.update(env.backend)
    drifted = env.cli(
        "submit",
        str(write_catalogue(tmp_path / "d.csv", 2, start=30)),
        "--template",
        "photo of {title}",
        "--key",
        "sku",
        "--size",
        "64x64",
        "--steps",
        "2",
        "--catalogue",
        "mugs",
        "--wait",
        "--fail-on-drift",
        check=False,
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


def make_run(ledger, catalogue: str, *, scale: float = 1.0, failed: int = 0, items: int = 20) -> int:
    """A finished run of `catalogue` written straight into the ledger: `items` items, `failed` of them failed,
    the others succeeded with scores around fixed medians times `scale`."""
    from pixelmill.schema import Job, utcnow

    now = utcnow()
    with ledger.session() as session:
        job = Job(name=f"{catalogue}-run", model="m", params={}, counts={}, catalogue=catalogue, created=now)
        session.add(job)
        session.flush()
        for n in range(items):
            state = State.failed if n < failed else State.succeeded
            item = Item(
                job_id=job.id,
                item_key=f"K{n}",
                variant=0,
                prompt="p",
                negative="",
                params={},
                seed=n,
                content_hash=f"{job.id}-{n}",
                state=state,
                attempts=1,
                created=now,
                finished_at=now,
            )
            session.add(item)
            session.flush()
            if state == State.succeeded:
                wobble = 1 + (n % 5 - 2) / 100
                session.add(
                    Image(
                        item_id=item.id,
                        storage_key=f"k{item.id}",
                        sha256="0" * 64,
                        width=64,
                        height=64,
                        bytes=1,
                        format="png",
                        engine_id="e",
                        timings={"total": 0.8, "batch": 4},
                        scores={
                            "clip_score": 30 * scale * wobble,
                            "aesthetic": 5.5 * scale * wobble,
                            "sharpness": 400 * wobble,
                            "exposure": 0.6,
                        },
                        created=now,
                    )
                )
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
        report = drift_report(session, "shop", lowered)
        assert report is not None and report.flagged and [r.job for r in report.earlier] == normal
        assert not drift_report(session, None, normal[-1]).flagged  # type: ignore[union-attr]
    env.cli("sheet", "--job", str(lowered), "--link", "-o", str(env.data_dir / "linked.html"))
    linked = (env.data_dir / "linked.html").read_text()  # large jobs: the objects' URLs, nothing embedded
    assert linked.count('"src":"file://') == 20 and "data:image" not in linked
    loose = env.cli("drift", "--catalogue", "shop", "--json", check=False)
    assert loose.returncode == 0
    env.vars["PIXELMILL_DRIFT_SCORE_DROP"] = "0.3"  # a looser threshold: the lowered run passes
    rows = json.loads(env.cli("drift", "--catalogue", "shop", "--json").stdout)
    assert rows[4]["flagged"] is False


def test_manifest_and_drift_on_postgresql(test_servers, tmp_path: Path) -> None:
    """The manifest's JSON extraction, timestamps and server-side cursor, and run statistics, on PostgreSQL."""
    from pixelmill.ledger import Ledger, make_engine, upgrade
    from pixelmill.settings import Settings
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
            rows = list(iter_manifest(session, job=first))
            out = io.StringIO()
            write_csv(iter_manifest(session, job=first), out)
        assert len(rows) == 20 and [r.state for r in rows[:3]] == ["failed", "failed", "succeeded"]
        ok = rows[2]
        assert ok.safety == "ok" and ok.provenance == "CN=shop" and ok.clip_score is not None
        assert ok.generated_at is not None and ok.generated_at.endswith("+00:00") and rows[0].error is None
        assert len(out.getvalue().splitlines()) == 21
        with ledger.session() as session:
            report = drift_report(session, "pg", lowered)
            assert report is not None and report.flagged and [r.job for r in report.earlier] == [first]
    finally:
        ledger.close()


def test_parquet_without_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.manifest import ManifestError, parquet_schema

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ManifestError, match=r"pip install 'pixelmill\[parquet\]'"):
        parquet_schema()
