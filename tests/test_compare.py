"""`pixelmill compare`: two finished jobs over the same 40 products, paired by key; the intervals, win rates,
rates and GPU-seconds; the side-by-side sheet in headless Chromium."""

from __future__ import annotations

import json
import os
import random
import statistics
from pathlib import Path

import pytest
from test_receipts import Chromium, browser, png, written_image, written_item, written_job

from conftest import Env
from contract.schema import State, utcnow
from producer.compare import EXACT_PAIRS, interval

__all__ = ["browser"]  # the fixture, used below

PRODUCTS = 40


def write_pair_of_jobs(env: Env, *, lift: float) -> tuple[int, int]:
    """Job A and job B over the same PRODUCTS keys (B also has one key A lacks), images in storage. B's
    clip_score is A's plus `lift` (and a little noise); aesthetic is the same noise around one value in both; A
    blocked SKU-00, B failed SKU-01; B's batches took half A's time."""
    rng = random.Random(7)
    storage, now = env.storage(), utcnow()
    jobs = []
    with env.ledger().session() as session:
        for side, extra in (("a", 0), ("b", 1)):
            job = written_job(session, f"mugs-{side}", "mugs", now)
            jobs.append(job.id)
            for n in range(PRODUCTS + extra):
                key = f"SKU-{n:02d}"
                state = State.succeeded
                if (side, n) == ("a", 0):
                    state = State.blocked
                elif (side, n) == ("b", 1):
                    state = State.failed
                item = written_item(session, job.id, key, n, state, now, content_hash=f"{side}{n}", prompt=f"mug {key}")
                if state != State.succeeded:
                    continue
                object_key = f"{side}/{n}.png"
                storage.create(object_key, png((30 + 5 * n, 120 if side == "a" else 200, 90)), "image/png")
                clip = 28 + n % 7 + (lift if side == "b" else 0) + rng.uniform(-0.3, 0.3)
                scores = {"clip_score": clip, "aesthetic": 5 + rng.uniform(-0.2, 0.2), "exposure": 0.5}
                timings = {"total": 0.8 if side == "a" else 0.4, "batch": 4}
                session.add(written_image(item, object_key, now, timings=timings, scores=scores))
    return jobs[0], jobs[1]


def test_the_interval_covers_the_mean_it_should_and_only_that() -> None:
    rng = random.Random(1)
    shifted = [1.0 + rng.gauss(0, 1) for _ in range(40)]
    low, high = interval(shifted)
    assert 0 < low < statistics.fmean(shifted) < high
    assert interval(shifted) == (low, high)  # a fixed seed: the same jobs give the same interval
    centred = [rng.gauss(0, 1) for _ in range(40)]
    low, high = interval(centred)
    assert low < 0 < high
    half = 1.96 * statistics.stdev(centred) / len(centred) ** 0.5
    assert abs((high - low) / 2 - half) < 0.25 * half  # the bootstrap's width is the textbook one, roughly
    # Coverage: over 60 samples of 40 from N(0.5, 1), the interval holds 0.5 about 95 % of the time.
    held = 0
    for trial in range(60):
        sample = [0.5 + rng.gauss(0, 1) for _ in range(40)]
        low, high = interval(sample, seed=trial)
        held += low <= 0.5 <= high
    assert held >= 52, held
    big = [0.01 + rng.gauss(0, 1) for _ in range(EXACT_PAIRS + 1)]  # the normal approximation, at once
    low, high = interval(big)
    assert low < statistics.fmean(big) < high and high - low < 0.06


@pytest.mark.slow
def test_compare_two_jobs_over_the_same_products(env: Env, tmp_path: Path, browser: Chromium) -> None:
    job_a, job_b = write_pair_of_jobs(env, lift=2.0)
    page = tmp_path / "compare.html"
    proc = env.cli("compare", str(job_a), str(job_b), "--json", "--sheet", str(page))
    result = json.loads(proc.stdout)
    assert (result["paired"], result["only_a"], result["only_b"]) == (PRODUCTS, 0, 1)
    assert result["both_succeeded"] == PRODUCTS - 2  # SKU-00 blocked in A, SKU-01 failed in B
    scores = {s["name"]: s for s in result["scores"]}
    clip = scores["clip_score"]
    assert clip["pairs"] == PRODUCTS - 2 and 1.8 < clip["diff"] < 2.2
    assert 1.5 < clip["low"] < clip["diff"] < clip["high"] < 2.5 and clip["significant"]
    assert clip["win_rate"] == 1.0
    aesthetic = scores["aesthetic"]
    assert aesthetic["low"] < 0 < aesthetic["high"] and not aesthetic["significant"]
    assert 0.2 < aesthetic["win_rate"] < 0.8
    assert scores["exposure"]["win_rate"] is None  # two-sided: no "better"
    assert result["a"]["blocked_rate"] == round(1 / PRODUCTS, 4) and result["a"]["failed_rate"] == 0
    assert result["b"]["failed_rate"] == round(1 / (PRODUCTS + 1), 4)
    assert result["a"]["gpu_seconds_per_image"] == pytest.approx(0.2, abs=0.001)  # 0.8 s per batch of 4
    assert result["b"]["gpu_seconds_per_image"] == pytest.approx(0.1, abs=0.001)

    table = env.cli("compare", str(job_a), str(job_b)).stdout
    assert "clip_score" in table and "*" in table and "100%" in table and "GPU-seconds per image" in table
    assert "rows in only one job: 0 in A, 1 in B" in table

    browser.open(page.as_uri(), width=1000, height=1400, ready="#pairs > .pair")
    assert browser.js("document.querySelectorAll('.pair').length") == PRODUCTS
    assert browser.js("document.querySelectorAll('.pair img').length") == 2 * PRODUCTS - 2
    first = browser.js("document.querySelector('.pair').textContent")
    assert "SKU-00" in first and "A: blocked" in first  # a blocked image is marked, never shown
    assert "job" in browser.js("document.getElementById('title').textContent")
    browser.screenshot(tmp_path / "compare.png")
    keep = os.environ.get("PIXELMILL_KEEP_SHEET")
    if keep:  # to look at it
        Path(keep).mkdir(parents=True, exist_ok=True)
        for path in (page, tmp_path / "compare.png"):
            (Path(keep) / path.name).write_bytes(path.read_bytes())


def test_compare_refuses_what_it_cannot_compare(env: Env) -> None:
    job_a, job_b = write_pair_of_jobs(env, lift=0.0)
    for args, message in [
        ((str(job_a), "999"), "job 999 not found"),
        (("999", str(job_b)), "job 999 not found"),
    ]:
        proc = env.cli("compare", *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    with env.ledger().session() as session:  # a job with an item still to do
        other = written_job(session, "late", "mugs", utcnow())
        written_item(session, other.id, "SKU-00", 0, State.queued, utcnow(), content_hash="q")
        late = other.id
    proc = env.cli("compare", str(job_a), str(late), check=False)
    assert proc.returncode == 2 and f"job {late} still has items to do" in proc.stderr
    with env.ledger().session() as session:
        lone = written_job(session, "lone", "cups", utcnow())
        written_item(session, lone.id, "CUP-1", 0, State.failed, utcnow(), content_hash="c")
        lone_id = lone.id
    proc = env.cli("compare", str(job_a), str(lone_id), check=False)
    assert proc.returncode == 2 and "share no catalogue key" in proc.stderr
