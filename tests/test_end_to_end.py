"""End to end: real `pixelmill` CLI processes, real worker processes and the tiny model. The core tests run on
every combination in `COMBOS`: the embedded defaults (SQLite, embedded Redis, a local directory),
PostgreSQL + a Redis server + S3 (moto_server over HTTP), and SQLite + RabbitMQ + a local directory. Nothing
is mocked."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import string
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import COMBOS, Env, finished, settled_depth, write_catalogue
from contract.ledger import Ledger
from contract.queue import Chunk, make_celery, publish, queue_depth
from contract.scheduling import Scheduler
from contract.schema import Image, Item, State

pytestmark = pytest.mark.e2e

# Every score the tiny checks produce: technical ones always, clip_score and aesthetic from the tiny models.
SCORES = {"sharpness", "exposure", "clipped_dark", "clipped_light", "white_background", "clip_score", "aesthetic"}


def ledger_rows(ledger: Ledger, job: int) -> list[tuple[Item, Image | None]]:
    with ledger.session() as session:
        rows = session.execute(
            select(Item, Image).outerjoin(Image, Image.item_id == Item.id).where(Item.job_id == job).order_by(Item.id)
        ).all()
        return [(item, image) for item, image in rows]


def assert_exactly_once(env: Env, job: int, expected: int) -> list[tuple[Item, Image]]:
    """Every item succeeded once: one image row each, one object each whose sha256 and size match, and
    nothing else under the job's prefix."""
    ledger = env.ledger()
    rows = ledger_rows(ledger, job)
    assert len(rows) == expected
    assert {item.state for item, _ in rows} == {State.succeeded}
    storage = env.storage()
    keys = set()
    for item, image in rows:
        assert image is not None, f"item {item.item_key} succeeded without an image row"
        assert image.storage_key == f"jobs/{job}/{item.item_key}/{item.variant}.png"
        data = storage.get(image.storage_key)
        assert hashlib.sha256(data).hexdigest() == image.sha256 and len(data) == image.bytes
        assert image.visibility == "public" and set(image.scores) == SCORES, image.scores
        assert image.safety is not None and image.safety["blocked"] is False and len(image.safety["scores"]) == 20
        keys.add(image.storage_key)
    with ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(Image).join(Item).where(Item.job_id == job)) == expected
    assert sorted(storage.keys(f"jobs/{job}/")) == sorted(keys), "stray or temporary objects in storage"
    ledger.close()
    return [(item, image) for item, image in rows if image is not None]


def ledger_snapshot(env: Env, job: int) -> list[tuple[object, ...]]:
    """What must come out the same whatever the servers: identities, prompts, seeds, states, object bytes and
    every score."""
    return [
        (
            item.item_key,
            item.variant,
            item.prompt,
            item.seed,
            item.content_hash,
            item.state.value,
            item.attempts,
            image.storage_key if image else None,
            image.sha256 if image else None,
            json.dumps(image.scores, sort_keys=True) if image else None,
            json.dumps(image.safety, sort_keys=True) if image else None,
        )
        for item, image in ledger_rows(env.ledger(), job)
    ]


# Filled and compared in one process: conftest.SAME_PROCESS keeps these tests together under pytest-xdist.
FINAL_LEDGERS: dict[str, list[tuple[object, ...]]] = {}


@pytest.mark.minute(1)
def test_catalogue_end_to_end_then_resubmit_skips(any_env: Env, tmp_path: Path) -> None:
    env = any_env
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 16)
    env.start_worker()
    first = env.submit(catalogue)
    assert first["items"] == 16 and first["skipped"] == 0

    counts = env.wait_for(first["job"], finished)
    assert counts["succeeded"] == 16, counts
    rows = assert_exactly_once(env, first["job"], 16)
    assert all(item.attempts == 1 for item, _ in rows)
    assert {image.engine_id for _, image in rows} == {"torch-fp32-cpu"}

    status = json.loads(env.cli("status", str(first["job"]), "--json").stdout)
    assert {
        k: status[k] for k in ("job", "total", "pending", "queued", "running", "succeeded", "blocked", "failed")
    } == {
        "job": first["job"],
        "total": 16,
        "pending": 0,
        "queued": 0,
        "running": 0,
        "succeeded": 16,
        "blocked": 0,
        "failed": 0,
    }
    assert set(status["scores"]) == SCORES and all(d["n"] == 16 for d in status["scores"].values())
    assert all(d["p10"] <= d["median"] <= d["p90"] for d in status["scores"].values())
    assert status["image_checker"] == env.backend["PIXELMILL_IMAGE_CHECKER"]

    FINAL_LEDGERS[env.name] = ledger_snapshot(env, first["job"])

    objects_before = env.objects()
    again = env.submit(catalogue)
    assert again["items"] == 0 and again["skipped"] == 16
    time.sleep(2)  # give a (wrongly) queued duplicate the chance to run
    assert env.objects() == objects_before
    with env.ledger().session() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 16

    # A changed row is new work; the unchanged ones are still skipped.
    changed = write_catalogue(tmp_path / "changed.csv", 16)
    changed.write_text(changed.read_text().replace("ceramic mug model 3,", "stoneware mug model 3,"))
    third = env.submit(changed)
    assert third["items"] == 1 and third["skipped"] == 15
    assert env.wait_for(third["job"], finished)["succeeded"] == 1


def test_every_combination_reaches_the_same_final_ledger() -> None:
    """Runs after the parametrised end-to-end test above (pytest keeps file order)."""
    if len(FINAL_LEDGERS) < 2:
        pytest.skip(f"only {sorted(FINAL_LEDGERS)} ran; nothing to compare")
    reference = FINAL_LEDGERS[COMBOS[0]] if COMBOS[0] in FINAL_LEDGERS else next(iter(FINAL_LEDGERS.values()))
    assert len(reference) == 16
    for name, snapshot in FINAL_LEDGERS.items():
        assert snapshot == reference, f"{name} ended with a different ledger"


def test_duplicate_delivery_makes_one_row_and_one_file(any_env: Env, tmp_path: Path) -> None:
    env = any_env
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 16)
    first = env.submit(catalogue)  # no worker yet; submit publishes nothing (the scheduler will)
    settings = env.settings()
    app = make_celery(settings)
    ledger = env.ledger()
    with ledger.session() as session:
        ids = session.scalars(select(Item.id).where(Item.job_id == first["job"]).order_by(Item.id)).all()
    assert queue_depth(app, env.queue) == 0
    # Deliver every chunk ahead of the scheduler (which sends them all once more), and one of them a third time in
    # a different shape.
    assert publish(app, [Chunk(first["job"], tuple(ids[i : i + 4])) for i in range(0, 16, 4)], env.queue) == 4
    publish(app, [Chunk(first["job"], tuple(ids[2:6]))], env.queue)
    assert settled_depth(app, env.queue, 5) == 5

    env.start_worker()
    env.wait_for(first["job"], finished)
    deadline = time.monotonic() + 60
    while queue_depth(app, env.queue) and time.monotonic() < deadline:  # let the duplicates be consumed too
        time.sleep(0.2)
    time.sleep(1.5)
    assert queue_depth(app, env.queue) == 0
    rows = assert_exactly_once(env, first["job"], 16)
    assert all(item.attempts == 1 for item, _ in rows), "a duplicate message re-ran a finished item"


@pytest.mark.minute(2)
def test_sigkill_mid_job_loses_and_duplicates_nothing(any_env: Env, tmp_path: Path) -> None:
    env = any_env
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 16)
    slow = {"PIXELMILL_BATCH_SIZE": "2"}
    env.vars.update(slow)
    worker = env.start_worker()
    job = env.submit(catalogue, "--steps", "30")["job"]

    # Kill while an item is being generated and some are already done.
    ledger = env.ledger()
    deadline = time.monotonic() + 180
    victims: list[int] = []
    while not victims:
        assert time.monotonic() < deadline, env.worker_logs()[-4000:]
        with ledger.session() as session:
            done = session.scalars(select(func.count()).where(Item.job_id == job, Item.state == State.succeeded)).one()
            running = session.scalars(select(Item.id).where(Item.job_id == job, Item.state == State.running)).all()
        if done >= 2 and running:
            victims = list(running)
        else:
            time.sleep(0.05)
    env.kill(worker, signal.SIGKILL)
    assert worker.returncode == -signal.SIGKILL
    with ledger.session() as session:
        states = dict(session.execute(select(Item.id, Item.state).where(Item.job_id == job)).all())
    assert any(states[i] == State.running for i in victims), "the kill came too late to interrupt an item"
    assert sum(s == State.succeeded for s in states.values()) < 16

    env.start_worker()  # same node name: it reclaims what its dead predecessor held
    counts = env.wait_for(job, finished)
    assert counts["succeeded"] == 16, counts
    rows = assert_exactly_once(env, job, 16)
    interrupted = [item for item, _ in rows if item.id in victims and states[item.id] == State.running]
    assert interrupted and all(item.attempts == 2 for item in interrupted)
    ledger.close()


def test_bad_catalogue_touches_neither_ledger_nor_queue(env: Env, tmp_path: Path) -> None:
    good = write_catalogue(tmp_path / "good.csv", 4)
    first = env.submit(good)  # gives the ledger and the queue some state to compare against
    app = make_celery(env.settings())
    ledger = env.ledger()
    try:  # one scheduler pass sends a message, as a worker's would (no worker runs here)
        assert Scheduler(env.settings(), ledger, app).run_pass().messages == 1
    finally:
        ledger.close()
    depth = settled_depth(app, env.queue, 1)
    assert depth == 1

    bad = tmp_path / "bad.csv"
    bad.write_text("sku,title,color\nA-1,mug,red\nA-2,,blue\nA-3,cup,green\n")
    proc = env.cli_submit(bad, template="photo of {title}, {color}", check=False)
    assert proc.returncode == 2
    assert f"{bad}:3: field 'title'" in proc.stderr
    assert "nothing was submitted" in proc.stderr

    with env.ledger().session() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 4
        assert session.scalar(select(func.max(Item.job_id))) == first["job"]
    assert queue_depth(app, env.queue) == depth


def test_producer_does_not_import_the_gpu_stack() -> None:
    code = (
        "import sys, producer, producer.catalogue, producer.submit, producer.status, pixelmill.cli; "
        "bad = {'torch', 'diffusers', 'transformers'} & set(sys.modules); assert not bad, bad"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.minute(3)
def test_batch_over_the_soft_time_limit_is_retried_then_failed(env: Env, tmp_path: Path) -> None:
    """Celery's soft time limit interrupts a real prefork child mid-batch; attempts bound the retries.
    (The limit is set by settings: workers refuse the `time_limit` control command, see worker/control.py.
    The child loads its model, checks and prompt floor before taking tasks, so only generation counts against it:
    the floor here has 5,000 extra terms, whose index takes seconds to build, longer than the 1 s limit.)"""
    floor = tmp_path / "extra-terms.txt"
    rng = random.Random(5)
    floor.write_text("\n".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(6, 12))) for _ in range(5000)))
    env.start_worker(
        PIXELMILL_MAX_ATTEMPTS="2",
        PIXELMILL_TASK_SOFT_TIME_LIMIT="1",
        PIXELMILL_TASK_TIME_LIMIT="25",
        PIXELMILL_POLICY_PROMPT_LISTS=f"builtin,{floor}",
    )

    catalogue = write_catalogue(tmp_path / "catalogue.csv", 2, start=100)
    job = env.submit(catalogue, "--steps", "200", "--size", "128x128")["job"]  # ≫ 1 s on any CPU
    counts = env.wait_for(job, finished, timeout=240)
    assert counts["failed"] == 2, counts
    rows = ledger_rows(env.ledger(), job)
    # Each item ends on its second attempt with the soft limit's message, or (a known gap, seen only on a loaded
    # machine: the soft limit's exception is sometimes lost before generation ends, place not found yet) with the
    # hard limit as the backstop: the child killed, the item's attempt counted by the reconciler as a lost worker.
    errors = [(item.attempts, item.error or "") for item, _ in rows]
    hard_stops = env.worker_logs().count("Hard time limit (25s) exceeded")
    for attempts, error in errors:
        assert attempts == 2, errors
        assert "PIXELMILL_TASK_SOFT_TIME_LIMIT" in error or ("worker lost on attempt 2" in error and hard_stops), errors
    assert all(image is None for _, image in rows)
    assert not (env.data_dir / "images" / "jobs" / str(job)).exists()
    assert "raised unexpected" not in env.worker_logs()  # the limit struck inside the chunk's handling only


def test_dry_run_writes_nothing_and_watch_follows_a_job(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 6)
    proc = env.cli_submit(catalogue, "--images-per-item", "2", "--dry-run")
    assert "studio photo of ceramic mug model 0, red" in proc.stdout
    assert "6 rows → 12 items to generate" in proc.stdout
    assert list(env.data_dir.iterdir()) == []  # no ledger, no broker, no images

    env.start_worker()
    job = env.submit(catalogue)["job"]
    watched = env.cli("status", str(job), "--watch", "--json", "--interval", "0.2")
    final = json.loads(watched.stdout)
    assert final["finished"] and final["succeeded"] == 6 and final["total"] == 6
    listed = json.loads(env.cli("jobs", "--json").stdout)
    assert [j["job"] for j in listed] == [job]
