"""The quality gate and `pixelmill drift` on the trained scene model (models/scenes64): do they pick out better and
worse pictures, not only run?

Jobs are submitted with `pixelmill submit` (a catalogue of captions training never saw) and worked by the worker's
own chunk code, `worker.chunk.run_chunk`, in this process against the real ledger, embedded Redis and local storage
(as tests/test_worker_paths.py does; no worker process: a Celery worker's start-up would cost more than the
generation). Generation, judging, the gate's re-rolls, storing and recording are the worker's, unchanged. Prompt
match is measured on the stored pictures' pixels (`measure.background_colour`), independently of the scorer the
gate and drift use.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from conftest import Env
from contract.queue import Chunk, make_celery
from contract.schema import Image, Item, State
from contract.storage import open_storage
from worker.chunk import Context, run_chunk
from worker.engine.trained import measure, render
from worker.engine.trained.degrade import degraded_pipeline

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "scenes64"
pytestmark = pytest.mark.slow  # about 20 s each on a loaded machine: scheduled first (tests/conftest.py)


def degraded(tmp_path_factory: pytest.TempPathFactory, undone: float) -> Path:
    """The trained pipeline with its UNet `undone` of the way back to a fresh initialisation (degrade.py)."""
    if not (MODEL / "pipeline" / "model_index.json").exists():
        pytest.fail(f"the trained model is missing from {MODEL}; see {MODEL / 'README.md'}")
    return degraded_pipeline(MODEL / "pipeline", tmp_path_factory.mktemp("degraded") / "pipeline", undone=undone)


def installation(data_dir: Path) -> Env:
    """A pixelmill installation judging with the trained scorer (no safety checker: the scenes need none)."""
    data_dir.mkdir(parents=True)
    return Env(
        data_dir,
        MODEL / "pipeline",
        backend={
            "PIXELMILL_IMAGE_CHECKER": "none",
            "PIXELMILL_CLIP_MODEL": str(MODEL / "scorer"),
            "PIXELMILL_AESTHETIC_HEAD": str(MODEL / "aesthetic.safetensors"),
        },
    )


@pytest.fixture
def envs(tmp_path: Path) -> Iterator[list[Env]]:
    made: list[Env] = []
    yield made
    for env in made:
        env.close()


def catalogue(path: Path, scenes: list[render.Scene]) -> Path:
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["sku", "caption"])
        for i, scene in enumerate(scenes):
            out.writerow([f"S{i:03d}", scene.caption])
    return path


def submit(env: Env, path: Path, *args: str) -> int:
    proc = env.cli_submit(path, "--template", "{caption}", "--size", "64x64", "--json", *args)
    job: int = json.loads(proc.stdout)["job"]
    return job


def work(env: Env, job: int, model: Path, per_chunk: int = 25) -> None:
    """Every item of the job through `run_chunk`, as a worker serving `model` would take its messages."""
    settings = env.settings().model_copy(update={"model": str(model)})
    ctx = Context(
        settings=settings, ledger=env.ledger(), storage=open_storage(settings), app=make_celery(settings), node="tests"
    )
    try:
        with ctx.ledger.session() as session:
            ids = list(session.scalars(select(Item.id).where(Item.job_id == job).order_by(Item.id)))
        for start in range(0, len(ids), per_chunk):
            run_chunk(ctx, Chunk(job, tuple(ids[start : start + per_chunk]))).result(timeout=300)
    finally:
        ctx.close()


def kept(env: Env, job: int) -> list[tuple[str, Image, PILImage.Image]]:
    """(prompt, image row, picture) of each item of the job, in item order; every item must have succeeded."""
    storage, ledger = env.storage(), env.ledger()
    try:
        with ledger.session() as session:
            rows = session.execute(
                select(Item.prompt, Item.state, Image)
                .outerjoin(Image, Image.item_id == Item.id)
                .where(Item.job_id == job)
                .order_by(Item.id)
            ).all()
            assert all(state == State.succeeded for _, state, _ in rows), [state for _, state, _ in rows]
            return [
                (prompt, image, PILImage.open(io.BytesIO(storage.get(image.storage_key))).convert("RGB"))
                for prompt, _, image in rows
            ]
    finally:
        ledger.close()


def match_rate(pictures: list[tuple[str, Image, PILImage.Image]], scenes: list[render.Scene]) -> list[bool]:
    """Per picture: is its background the colour its caption names (the border's nearest named colour)?"""
    wanted = {s.caption: s.background for s in scenes}
    return [measure.background_colour(picture) == wanted[prompt] for prompt, _, picture in pictures]


# The gate's setting: a weak model, so that there is room to improve. At the demo's setting (the trained model, 12
# steps, guidance 2) 92 % of backgrounds match and the misses are white/beige and silver/gray confusions that come
# back at every seed: re-rolls cannot fix them. The copy 20 % undone without classifier-free guidance matches about
# 60 %, and a quarter to a half of its misses come right at another seed (bench/trained_gate.py).
GATE = "clip_score>=45"
GATE_ATTEMPTS = 4
GATE_STEPS, GATE_GUIDANCE = 6, 1.0
GATE_UNDONE = 0.2


def test_the_clip_score_gate_raises_its_score_but_not_measurably_the_prompt_match_of_a_100_item_job(
    tmp_path_factory: pytest.TempPathFactory, envs: list[Env], tmp_path: Path
) -> None:
    """The same 100-item job (held-out captions, same seeds) with and without the gate, each in its own
    installation (the second would otherwise skip the first's identical work): the gated job's first candidates
    are the ungated job's pictures, so every difference is a re-roll the gate asked for.

    What it shows (issue 27 asked for a measurable rise of prompt match, and this does not give one): the gate
    keeps pictures the scorer rates much higher (mean clip_score 38 -> 50), but the background colour matches
    about as often (60 -> 61 %: 6 pictures fixed, 5 broken). The scorer ranks captions for a picture well, and
    drawn pictures for a caption well (background colour 100 %), but it does not rank *generated* pictures of one
    caption by their colour: their blur and artefacts move clip_score more than the colour does. So this holds the
    gate to what it does (re-roll, raise its score) and to not costing prompt match, and prints both rates."""
    weak = degraded(tmp_path_factory, GATE_UNDONE)
    scenes = render.scenes(100, 2727, held_out=True)
    path = catalogue(tmp_path / "scenes.csv", scenes)
    options = ("--model", str(weak), "--steps", str(GATE_STEPS), "--guidance", str(GATE_GUIDANCE), "--seed", "7")
    results = {}
    for name, gate in (("plain", ()), ("gated", ("--gate", GATE, "--gate-attempts", str(GATE_ATTEMPTS)))):
        env = installation(tmp_path / name)
        envs.append(env)
        job = submit(env, path, *options, *gate)
        work(env, job, weak)
        results[name] = kept(env, job)
    plain, gated = (match_rate(results[name], scenes) for name in ("plain", "gated"))
    rerolled = sum(image.candidate > 0 for _, image, _ in results["gated"])
    fixed = sum(g and not p for p, g in zip(plain, gated, strict=True))
    broken = sum(p and not g for p, g in zip(plain, gated, strict=True))
    clip = {name: statistics.mean(image.scores["clip_score"] for _, image, _ in rows) for name, rows in results.items()}
    print(
        f"\nbackground colour match, 100 held-out captions, {GATE_STEPS} steps, guidance {GATE_GUIDANCE:g}, "
        f"UNet {GATE_UNDONE:.0%} undone: ungated {sum(plain)} %, gated ({GATE}, up to {GATE_ATTEMPTS} candidates) "
        f"{sum(gated)} %; {rerolled} items re-rolled, {fixed} fixed, {broken} broken; "
        f"mean clip_score {clip['plain']:.1f} -> {clip['gated']:.1f}"
    )
    assert all(image.candidate == 0 for _, image, _ in results["plain"])
    assert rerolled >= 20  # about half the first candidates are below the threshold
    assert clip["gated"] >= clip["plain"] + 5  # the gate does its own job
    assert sum(gated) >= sum(plain) - 3  # and re-rolling by this scorer does not cost prompt match


# The degraded model of the drift test: its UNet 30 % undone draws the named background colour in about 67 % of
# pictures instead of 95 % and lowers the median clip_score about 45 %. At 20 % undone (88-93 % colour) the drop was
# 10-23 % over three seeds, at the edge of drift's 10 %; normal runs of these 60 captions differ by up to 4 %.
DRIFT_UNDONE = 0.3


def test_drift_flags_a_run_of_a_degraded_model_and_not_the_normal_runs(
    tmp_path_factory: pytest.TempPathFactory, envs: list[Env], tmp_path: Path
) -> None:
    """Four nightly runs of one catalogue, different seeds: normal, normal, the degraded model, normal again.
    `pixelmill drift` flags the third only (its median clip_score fell), and the run after it is measured against
    the median of the three before, which one bad run does not move."""
    env = installation(tmp_path / "data")
    envs.append(env)
    path = catalogue(tmp_path / "scenes.csv", render.scenes(60, 31, held_out=True))
    bad = degraded(tmp_path_factory, DRIFT_UNDONE)
    runs = ((1, MODEL / "pipeline"), (2, MODEL / "pipeline"), (3, bad), (4, MODEL / "pipeline"))
    for seed, model in runs:
        options = ("--steps", "6", "--guidance", "2", "--seed", str(seed), "--model", str(model))
        work(env, submit(env, path, "--catalogue", "scenes", *options), model)
    shown = json.loads(env.cli("drift", "--catalogue", "scenes", "--json").stdout)
    medians = [run["scores"]["clip_score"]["median"] for run in shown]
    print(f"\nmedian clip_score of the runs: {medians}; reasons: {[run['reasons'] for run in shown]}")
    assert [run["flagged"] for run in shown] == [False, False, True, False]
    assert "clip_score" in shown[2]["reasons"][0]
    table = env.cli("drift", "--catalogue", "scenes").stdout
    assert "FLAGGED" in table and f"job {shown[2]['job']}: median clip_score" in table
