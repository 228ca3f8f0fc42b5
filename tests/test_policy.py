"""The operator's safety floor: a worker applies its own prompt lists and image checker to every job, whatever
the job (or the producer that wrote it) asked for, and records what was asked beside what was applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import Env, finished, tiny_checks, write_catalogue
from contract.checks import Checks, Policy, PolicyError
from contract.schema import Image, Item, State
from contract.settings import Settings


def test_policy_raises_a_job_to_the_floor(tmp_path: Path) -> None:
    checker = tmp_path / "checker"
    checker.mkdir()
    floor = Policy.from_settings(Settings(data_dir=tmp_path, policy_image_checker=str(checker), safety_shift=-0.1))
    assert floor.prompt_lists == ("builtin",)
    unchecked = Checks(image_checker="none", quarantine="none")
    raised = floor.apply(unchecked)
    assert raised.image_checker == str(checker.resolve()) and raised.safety_shift == -0.1
    lax = Checks(image_checker=str(tmp_path), safety_shift=0.5)  # a job may not loosen the thresholds
    assert floor.apply(lax).safety_shift == -0.1 and floor.apply(lax).image_checker == str(checker.resolve())
    strict = Checks(image_checker=str(tmp_path), safety_shift=-0.3)
    assert floor.apply(strict).safety_shift == -0.3

    default = Policy.from_settings(Settings(data_dir=tmp_path))
    assert default.image_checker is None and not default.allow_checker_off
    with pytest.raises(PolicyError, match="PIXELMILL_POLICY_IMAGE_CHECKER"):
        default.apply(unchecked)
    assert default.apply(strict) == strict
    assert (
        Policy.from_settings(Settings(data_dir=tmp_path, policy_allow_checker_off=True)).apply(unchecked) == unchecked
    )


@pytest.mark.e2e
def test_worker_floor_blocks_and_checks_a_job_that_switched_both_off(
    env: Env, tmp_path: Path, tiny_model: Path
) -> None:
    catalogue = write_catalogue(tmp_path / "c.csv", 4)
    catalogue.write_text(catalogue.read_text().replace("ceramic mug model 1,", "n.u.d.e model 1,"))
    # The producer asks for nothing: no prompt lists, no image checker.
    env.vars.update({"PIXELMILL_PROMPT_BLOCKLISTS": "", "PIXELMILL_IMAGE_CHECKER": "none"})
    submitted = env.submit(catalogue)
    assert (submitted["items"], submitted["blocked"]) == (4, 0)
    checker = tiny_checks(tiny_model)["PIXELMILL_IMAGE_CHECKER"]
    env.start_worker(PIXELMILL_POLICY_IMAGE_CHECKER=checker, PIXELMILL_POLICY_ALLOW_CHECKER_OFF="false")
    counts = env.wait_for(submitted["job"], finished)
    assert counts["blocked"] == 1 and counts["succeeded"] == 3
    with env.ledger().session() as session:
        items = {i.item_key: i for i in session.scalars(select(Item).where(Item.job_id == submitted["job"]))}
        images = {
            i.item_id: i
            for i in session.scalars(select(Image).where(Image.item_id.in_([i.id for i in items.values()])))
        }
    refused = items["SKU-001"]
    assert refused.state == State.blocked and refused.block_reason is not None
    assert refused.block_reason["policy"] == "worker" and refused.block_reason["category"] == "sexual"
    assert refused.id not in images  # never generated
    for key, item in items.items():
        if key == "SKU-001":
            continue
        safety = images[item.id].safety
        assert safety is not None and safety["checker"] and safety["asked"] == "none"  # checked at the floor
        assert len(safety["scores"]) == 20


@pytest.mark.e2e
def test_worker_without_a_checker_refuses_an_unchecked_job(env: Env, tmp_path: Path) -> None:
    env.vars["PIXELMILL_IMAGE_CHECKER"] = "none"
    job = env.submit(write_catalogue(tmp_path / "c.csv", 2))["job"]
    env.start_worker(PIXELMILL_POLICY_ALLOW_CHECKER_OFF="false")
    counts = env.wait_for(job, finished)
    assert counts["failed"] == 2
    with env.ledger().session() as session:
        rows = session.scalars(select(Item).where(Item.job_id == job)).all()
    assert all(r.attempts == 1 and "PIXELMILL_POLICY_IMAGE_CHECKER" in (r.error or "") for r in rows)
