"""Image checks: the safety checker's scores against diffusers' own, the shared CLIP tower, the scores, the
quality gate, quarantine and review. The end-to-end tests run real workers on the tiny model and tiny checks."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pwd
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageFilter
from PIL.PngImagePlugin import PngImageFile
from sqlalchemy import select

from conftest import Env, finished, tiny_checks, write_catalogue
from contract.checks import (
    Checks,
    ChecksError,
    Safety,
    Threshold,
    Verdict,
    candidate_seed,
    parse_gate,
    resolve_checks,
)
from contract.schema import Candidate as CandidateRow
from contract.schema import Image, Item, State
from contract.settings import Settings
from producer.status import percentile
from worker.quality import technical_scores


def noise(seed: int, size: int = 64) -> PILImage.Image:
    return PILImage.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8))


# --- settings and gate arithmetic ------------------------------------------------------------------------------


def test_gate_parsing_and_errors_name_the_setting() -> None:
    assert parse_gate(" clip_score>=28, sharpness>50 ,clipped_light<=0.2") == [
        Threshold("clip_score", ">=", 28.0),
        Threshold("sharpness", ">", 50.0),
        Threshold("clipped_light", "<=", 0.2),
    ]
    assert parse_gate("") == []
    with pytest.raises(ChecksError, match=r"PIXELMILL_GATE: unknown score 'beauty'"):
        parse_gate("beauty>=3")
    with pytest.raises(ChecksError, match=r"--gate: cannot read 'clip_score=>3'"):
        parse_gate("clip_score=>3", name="--gate")
    with pytest.raises(ChecksError, match="finite"):
        parse_gate("sharpness>=1e999")


def test_checks_must_be_configured_explicitly(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ChecksError, match="PIXELMILL_IMAGE_CHECKER is not set.*`none`"):
        resolve_checks(Settings(data_dir=tmp_path))
    unchecked = resolve_checks(Settings(data_dir=tmp_path, image_checker="none"))
    assert not unchecked.checked and Checks.from_json(unchecked.as_json()) == unchecked
    with pytest.raises(ChecksError, match="PIXELMILL_IMAGE_CHECKER: '/nope' is not a directory"):
        resolve_checks(Settings(data_dir=tmp_path, image_checker="/nope"))
    with pytest.raises(ChecksError, match="uses clip_score, which needs PIXELMILL_CLIP_MODEL"):
        resolve_checks(Settings(data_dir=tmp_path, image_checker="none"), gate="clip_score>=20")
    with pytest.raises(ChecksError, match="re-rolling needs a gate"):
        resolve_checks(Settings(data_dir=tmp_path, image_checker="none"), gate_attempts=3)
    configured: dict[str, Any] = {k.removeprefix("PIXELMILL_").lower(): v for k, v in tiny_checks(tiny_model).items()}
    checks = resolve_checks(Settings(data_dir=tmp_path, **configured), gate="clip_score>=20", best_of=2)
    assert (checks.gate_mode, checks.gate_n, checks.ranking_score) == ("best_of", 2, "clip_score")
    assert Checks.from_json(json.loads(json.dumps(checks.as_json()))) == checks
    with pytest.raises(ValueError, match="PIXELMILL_QUARANTINE must be a key prefix outside jobs/"):
        Settings(data_dir=tmp_path, quarantine="jobs/hidden")


def test_best_candidate_prefers_unblocked_then_passing_then_rank() -> None:
    checks = Checks(image_checker="none", gate=(Threshold("clip_score", ">=", 25.0), Threshold("sharpness", ">=", 10)))

    def cand(n: int, clip: float, sharp: float, blocked: bool = False) -> Verdict:
        return Verdict(
            scores={"clip_score": clip, "sharpness": sharp},
            safety=Safety(blocked=blocked, flagged=(), checker="t", scores={}),
        )

    assert checks.best([cand(0, 40, 50, blocked=True), cand(1, 20, 5)]) == 1  # unblocked beats everything
    assert checks.best([cand(0, 24, 50), cand(1, 26, 11)]) == 1  # passing beats a higher-ranked failure
    assert checks.best([cand(0, 30, 50), cand(1, 35, 11)]) == 1  # both pass: higher clip_score
    assert checks.best([cand(0, 20, 50), cand(1, 24, 5)]) == 0  # neither passes: more thresholds met
    assert checks.best([cand(0, 30, 50), cand(1, 30, 50)]) == 0  # a tie keeps the earlier candidate
    assert candidate_seed(2**63 - 1, 1) == 0 and candidate_seed(7, 2) == 9


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in np.random.RandomState(0).normal(size=37)]
    for q in (10, 50, 90):
        assert math.isclose(percentile(values, q), np.percentile(values, q), abs_tol=1e-4)


# --- the models -----------------------------------------------------------------------------------------------


def test_technical_scores_measure_what_they_say() -> None:
    white = technical_scores(PILImage.new("RGB", (64, 64), (255, 255, 255)))
    assert white == {
        "sharpness": 0.0,
        "exposure": 1.0,
        "clipped_dark": 0.0,
        "clipped_light": 1.0,
        "white_background": 1.0,
    }
    black = technical_scores(PILImage.new("RGB", (64, 64), (0, 0, 0)))
    assert black["clipped_dark"] == 1.0 and black["exposure"] == 0.0 and black["white_background"] == 0.0
    sharp = noise(0)
    assert (
        technical_scores(sharp)["sharpness"]
        > 20 * technical_scores(sharp.filter(ImageFilter.GaussianBlur(3)))["sharpness"]
    )
    half = PILImage.new("RGB", (64, 64), (250, 250, 248))
    half.paste((200, 30, 30), (0, 0, 64, 32))  # a red product on the top half
    assert technical_scores(half)["white_background"] == 0.5


def test_concept_scores_match_diffusers_safety_checker(tiny_model: Path, tmp_path: Path) -> None:
    """Our per-concept scores and decisions are diffusers' own, on thresholds that flag some images only."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    from worker.image_checks import Judge

    source = Path(tiny_checks(tiny_model)["PIXELMILL_IMAGE_CHECKER"])
    checker = StableDiffusionSafetyChecker.from_pretrained(source / "safety_checker", attn_implementation="eager")
    images = [noise(i) for i in range(6)] + [PILImage.new("RGB", (64, 64), c) for c in ((255, 255, 255), (9, 9, 9))]
    concepts = Judge(Checks(image_checker=str(source)), device="cpu").concepts
    assert concepts is not None
    pixels = concepts.processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        embeds = torch.nn.functional.normalize(checker.visual_projection(checker.vision_model(pixels)[1]))
        cosines = embeds @ torch.nn.functional.normalize(checker.concept_embeds).T
        # Concept 0's threshold at the images' median cosine: it flags some images and not others; the other
        # concepts' thresholds sit 0.01 above their highest cosine (close, but never reached).
        thresholds = cosines.max(dim=0).values + 0.01
        thresholds[0] = cosines[:, 0].median()
        checker.concept_embeds_weights.copy_(thresholds)
        checker.special_care_embeds_weights.fill_(0.9)
    edited = tmp_path / "checker"
    checker.save_pretrained(edited / "safety_checker")
    (edited / "feature_extractor").mkdir()
    (edited / "feature_extractor" / "preprocessor_config.json").write_bytes(
        (source / "feature_extractor" / "preprocessor_config.json").read_bytes()
    )

    ours = Judge(Checks(image_checker=str(edited)), device="cpu")(images, ["x"] * len(images))
    _, theirs = checker(clip_input=pixels, images=np.zeros((len(images), 8, 8, 3)))
    flagged = [verdict.blocked for verdict in ours]
    assert flagged == [bool(t) for t in theirs] and any(flagged) and not all(flagged)
    thresholds = checker.concept_embeds_weights.detach()
    for verdict, image_cosines in zip(ours, cosines):
        assert verdict.safety is not None
        for j in range(17):
            assert verdict.safety.scores[f"concept_{j}"] == pytest.approx(
                float(image_cosines[j] - thresholds[j]), abs=2e-4
            )


def test_one_clip_forward_serves_checker_and_scores(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the checker's tower equal to CLIP's, the checker's own tower is never run, and the verdicts equal
    those of a checker whose tower is a separate copy."""
    from worker.image_checks import Judge

    paths = tiny_checks(tiny_model)
    checks = Checks(
        image_checker=paths["PIXELMILL_IMAGE_CHECKER"],
        clip_model=paths["PIXELMILL_CLIP_MODEL"],
        aesthetic_head=paths["PIXELMILL_AESTHETIC_HEAD"],
        safety_shift=-0.9,
    )
    shared = Judge(checks, device="cpu")
    separate = Judge(Checks(image_checker=checks.image_checker, safety_shift=-0.9), device="cpu")
    assert shared.shared and not separate.shared
    calls: list[int] = []
    assert shared.clip is not None
    tower = shared.clip.vision_model

    def counted(*a: Any, _f: Any = tower.forward, **k: Any) -> Any:
        calls.append(1)
        return _f(*a, **k)

    monkeypatch.setattr(tower, "forward", counted)
    images = [noise(i) for i in range(3)]
    judged = shared(images, ["studio photo of a red mug"] * 3)
    assert len(calls) == 1
    reference = separate(images, ["x"] * 3)
    for verdict, expected in zip(judged, reference):
        assert {"clip_score", "aesthetic", "sharpness"} <= set(verdict.scores)
        assert verdict.safety is not None and expected.safety is not None
        assert verdict.safety.flagged == expected.safety.flagged
        assert verdict.safety.scores == pytest.approx(expected.safety.scores, abs=2e-4)


def test_aesthetic_head_loads_laion_state_dict_layout(tmp_path: Path) -> None:
    """The published predictor is a .pth state dict with keys layers.0/2/4/6/7; it loads unchanged."""
    from worker.image_checks import AestheticHead

    head = AestheticHead(24)
    state = head.state_dict()
    assert sorted({k.split(".")[1] for k in state}) == ["0", "2", "4", "6", "7"]
    torch.save(state, tmp_path / "head.pth")
    loaded = AestheticHead.load(tmp_path / "head.pth")
    x = torch.nn.functional.normalize(torch.randn(5, 24))
    assert torch.equal(loaded(x), head.eval()(x))


# --- end to end -----------------------------------------------------------------------------------------------


def rows_of(env: Env, job: int) -> list[tuple[Item, Image | None, list[CandidateRow]]]:
    ledger = env.ledger()
    with ledger.session() as session:
        items = session.scalars(select(Item).where(Item.job_id == job).order_by(Item.id)).all()
        out = [
            (
                item,
                session.scalars(select(Image).where(Image.item_id == item.id)).one_or_none(),
                list(
                    session.scalars(
                        select(CandidateRow).where(CandidateRow.item_id == item.id).order_by(CandidateRow.candidate)
                    )
                ),
            )
            for item in items
        ]
    ledger.close()
    return out


def rows_with_images(env: Env, job: int) -> list[tuple[Item, Image, list[CandidateRow]]]:
    """rows_of for a job whose every item kept an image (public or quarantined)."""
    rows = rows_of(env, job)
    assert all(image is not None for _, image, _ in rows)
    return [(item, image, candidates) for item, image, candidates in rows if image is not None]


@pytest.mark.e2e
@pytest.mark.minute(1)
def test_blocked_images_are_quarantined_and_review_publishes_them(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 4)
    env.start_worker()
    env.vars["PIXELMILL_SAFETY_SHIFT"] = "-1.0"  # every concept threshold below any cosine: all flagged
    job = env.submit(catalogue)["job"]
    assert env.wait_for(job, finished)["blocked"] == 4
    storage = env.storage()
    assert list(storage.keys(f"jobs/{job}/")) == []  # nothing public
    rows = rows_with_images(env, job)
    for item, image, candidates in rows:
        assert item.block_reason is not None and image.safety is not None
        assert item.state == State.blocked and item.block_reason["stage"] == "image"
        assert item.block_reason["flagged"] and item.block_reason["quarantined"] == image.storage_key
        assert image.visibility == "quarantine" and image.storage_key == f"quarantine/jobs/{job}/{item.item_key}/0.png"
        assert hashlib.sha256(storage.get(image.storage_key)).hexdigest() == image.sha256
        assert image.safety["blocked"] and len(image.safety["scores"]) == 20 and image.safety["shift"] == -1.0
        assert {"clip_score", "aesthetic", "sharpness"} <= set(image.scores)
        assert [(c.candidate, c.outcome, c.scores) for c in candidates] == [(0, "blocked", image.scores)]
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["blocked_by"] == {"image:nsfw": 4} and status["scores"] == {}

    listed = json.loads(env.cli("review", str(job), "--json").stdout)
    assert [r["item"] for r in listed] == [item.id for item, _, _ in rows]
    assert all(r["stage"] == "image" and r["quarantined"] and r["safety"]["flagged"] for r in listed)

    # A quarantined object swapped after judging is refused: nothing published, the ledger unchanged.
    second, second_image = rows[1][0].id, rows[1][1]
    swapped = env.data_dir / "images" / second_image.storage_key
    swapped.unlink()
    swapped.write_bytes(storage.get(rows[2][1].storage_key))  # a real PNG, just not this item's
    refused = env.cli("review", "approve", str(second), check=False)
    assert refused.returncode == 2 and "not the image the checker judged" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not storage.exists(f"jobs/{job}/{rows[1][0].item_key}/0.png")
    item, image, _ = rows_with_images(env, job)[1]
    assert (item.state, image.storage_key, image.sha256, image.approved_by) == (
        State.blocked,
        second_image.storage_key,
        second_image.sha256,
        None,
    )
    # The approver is the account that runs the command; free text cannot stand in for it.
    assert env.cli("review", "approve", str(rows[0][0].id), "--by", "alice", check=False).returncode == 2

    first = rows[0][0].id
    who = pwd.getpwuid(os.geteuid()).pw_name
    approved = json.loads(env.cli("review", "approve", str(first), "--note", "a mug, not nudity", "--json").stdout)
    public = f"jobs/{job}/{rows[0][0].item_key}/0.png"
    assert approved == {"item": first, "published": public, "approved_by": who}
    assert storage.get(public) == storage.get(f"quarantine/{public}")
    item, image, _ = rows_with_images(env, job)[0]
    assert item.block_reason is not None
    assert item.state == State.succeeded and item.block_reason["approved_by"] == who
    assert item.block_reason["approval_note"] == "a mug, not nudity"
    assert (image.storage_key, image.visibility, image.approved_by) == (public, "public", who)
    assert image.approved_at is not None
    assert env.cli("review", "approve", str(first), check=False).returncode == 2  # no longer blocked

    # Quarantine off: a blocked image is kept nowhere, its scores still are; approving it is refused.
    env.vars["PIXELMILL_QUARANTINE"] = "none"
    other = env.submit(write_catalogue(tmp_path / "more.csv", 2, start=10))["job"]
    assert env.wait_for(other, finished)["blocked"] == 2
    for _, unkept, candidates in rows_of(env, other):
        assert unkept is None and candidates[0].outcome == "blocked"
        assert candidates[0].safety is not None and candidates[0].safety["blocked"]
    assert list(storage.keys(f"quarantine/jobs/{other}/")) == list(storage.keys(f"jobs/{other}/")) == []
    refused = env.cli("review", "approve", str(rows_of(env, other)[0][0].id), check=False)
    assert refused.returncode == 2 and "PIXELMILL_QUARANTINE=none" in refused.stderr


@pytest.mark.e2e
def test_submit_refuses_without_an_explicit_image_checker(env: Env, tmp_path: Path) -> None:
    del env.vars["PIXELMILL_IMAGE_CHECKER"]
    proc = env.cli_submit(write_catalogue(tmp_path / "c.csv", 2), template="{title}", check=False)
    assert proc.returncode == 2 and "PIXELMILL_IMAGE_CHECKER is not set" in proc.stderr
    assert not (env.data_dir / "pixelmill.db").exists() or env.cli("jobs", "--json").stdout.strip() == "[]"
    env.vars["PIXELMILL_IMAGE_CHECKER"] = "none"
    env.start_worker()
    job = env.submit(write_catalogue(tmp_path / "c.csv", 2))["job"]
    assert env.wait_for(job, finished)["succeeded"] == 2
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["image_checker"] == "none"
    assert all(image.safety is None and image.scores for _, image, _ in rows_with_images(env, job))


@pytest.mark.e2e
def test_quality_gate_rerolls_a_weak_item_and_records_every_candidate(
    env: Env, tiny_model: Path, tmp_path: Path
) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue.csv", 4)
    # First without a gate, in a separate installation, to learn each item's first-candidate scores.
    probe = Env(tmp_path / "probe", tiny_model)
    probe.data_dir.mkdir()
    try:
        probe.start_worker()
        first = probe.submit(catalogue)["job"]
        assert probe.wait_for(first, finished)["succeeded"] == 4
        learned = {item.item_key: image.scores["sharpness"] for item, image, _ in rows_with_images(probe, first)}
    finally:
        probe.close()
    ordered = sorted(learned.values())
    weak = min(learned, key=learned.__getitem__)
    threshold = (ordered[0] + ordered[1]) / 2  # only the weakest item's first candidate falls below it
    assert ordered[0] < threshold < ordered[1]

    env.start_worker()
    job = env.submit(catalogue, "--gate", f"sharpness>={threshold}", "--gate-attempts", "4")["job"]
    assert env.wait_for(job, finished)["succeeded"] == 4
    for item, image, candidates in rows_with_images(env, job):
        assert [c.candidate for c in candidates] == list(range(len(candidates)))
        assert [c.seed for c in candidates] == [candidate_seed(item.seed, c.candidate) for c in candidates]
        assert candidates[0].scores["sharpness"] == pytest.approx(learned[item.item_key], rel=1e-6)
        kept = [c for c in candidates if c.outcome == "kept"]
        assert len(kept) == 1 and image.candidate == kept[0].candidate and image.scores == kept[0].scores
        if item.item_key != weak:
            assert len(candidates) == 1
            continue
        assert len(candidates) > 1 and candidates[0].scores["sharpness"] < threshold
        assert all(c.outcome == ("kept" if c is kept[0] else "rejected") for c in candidates)
        passing = [c for c in candidates if c.scores["sharpness"] >= threshold]
        if passing:  # re-rolling stops at the first candidate that passes, and keeps it
            assert passing == [candidates[-1]] and kept[0] is candidates[-1]
        else:  # all 4 failed: the best of them is kept
            assert len(candidates) == 4
            assert kept[0].scores["sharpness"] == max(c.scores["sharpness"] for c in candidates)
        with PILImage.open(env.data_dir / "images" / image.storage_key) as stored:
            assert isinstance(stored, PngImageFile)
            assert stored.text["seed"] == str(kept[0].seed) and stored.text["candidate"] == str(kept[0].candidate)
    status = json.loads(env.cli("status", str(job), "--json").stdout)
    assert status["gate"] == f"sharpness>={threshold:g} (reroll, up to 4 candidates)"

    # Best-of-n: always n candidates, the highest-ranked kept.
    best = env.submit(write_catalogue(tmp_path / "best.csv", 2, start=20), "--gate", "sharpness>=0", "--best-of", "3")[
        "job"
    ]
    assert env.wait_for(best, finished)["succeeded"] == 2
    for _, image, candidates in rows_with_images(env, best):
        assert len(candidates) == 3
        top = max(candidates, key=lambda c: (c.scores["sharpness"], -c.candidate))
        assert image.candidate == top.candidate and [c.outcome for c in candidates].count("kept") == 1
