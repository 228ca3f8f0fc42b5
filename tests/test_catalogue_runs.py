"""Catalogue runs (`submit --catalogue`), end to end with a real worker: entries say what serves each key."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from sqlalchemy import select

from conftest import Env, finished, write_catalogue
from pixelmill.schema import Image, Item, State
from producer.catalogues import catalogue_entries


def test_second_run_generates_only_changed_and_added_and_retires_the_deleted(env: Env, tmp_path: Path) -> None:
    # Messages of 8 items: the worker cuts each into two GPU batches of 4.
    env.vars["PIXELMILL_ITEMS_PER_MESSAGE"] = "8"
    env.start_worker()
    first = env.submit(write_catalogue(tmp_path / "run1.csv", 40), "--catalogue", "mugs")
    assert (first["items"], first["messages"], first["changes"]["new"]) == (40, 5, 40)
    assert env.wait_for(first["job"], finished)["succeeded"] == 40

    # Run 2: SKU-000..002 changed, SKU-039 deleted, SKU-040 and SKU-041 added.
    rows = list(csv.reader((tmp_path / "run1.csv").open()))
    header, body = rows[0], rows[1:]
    body = [[sku, f"{title} v2" if i < 3 else title, color] for i, (sku, title, color) in enumerate(body)][:39]
    body += [["SKU-040", "enamel mug model 40", "red"], ["SKU-041", "enamel mug model 41", "navy"]]
    with open(tmp_path / "run2.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *body])
    second = env.submit(tmp_path / "run2.csv", "--catalogue", "mugs")
    assert second["items"] == 5 and second["skipped"] == 36
    assert second["changes"] == {"new": 2, "changed": 3, "unchanged": 36, "retired": 1}
    assert env.wait_for(second["job"], finished)["succeeded"] == 5

    storage = env.storage()
    with env.ledger().session(readonly=True) as session:
        entries = {e.key: e for e in catalogue_entries(session, "mugs")}
        assert set(entries) == {f"SKU-{i:03d}" for i in range(42)}
        live = {k: e for k, e in entries.items() if e.change != "retired"}
        assert len(live) == 41 and entries["SKU-039"].change == "retired"
        assert {k for k, e in live.items() if e.change == "changed"} == {"SKU-000", "SKU-001", "SKU-002"}
        assert {k for k, e in live.items() if e.change == "new"} == {"SKU-040", "SKU-041"}
        assert all(e.job_id == second["job"] for e in entries.values())
        generated = set(session.scalars(select(Item.id).where(Item.job_id == second["job"])))
        assert len(generated) == 5
        for key, entry in entries.items():
            item = session.get(Item, entry.item_id)
            assert item is not None and item.content_hash == entry.content_hash
            assert (item.job_id == second["job"]) == (entry.change in ("new", "changed")), key
            assert item.state == State.succeeded, key  # the retired one keeps its item and image too
            image = session.scalars(select(Image).where(Image.item_id == item.id)).one()
            assert hashlib.sha256(storage.get(image.storage_key)).hexdigest() == image.sha256, key
        assert entries["SKU-039"].job_id == second["job"]
        assert session.get(Item, entries["SKU-039"].item_id).job_id == first["job"]  # type: ignore[union-attr]


def test_request_id_returns_the_first_job_and_writes_nothing(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "c.csv", 3)
    first = env.submit(catalogue, "--request-id", "nightly-2026-11-30")
    again = env.submit(write_catalogue(tmp_path / "d.csv", 5, start=10), "--request-id", "nightly-2026-11-30")
    assert again["job"] == first["job"] and again["existing"] and again["messages"] == 0
    with env.ledger().session(readonly=True) as session:
        assert len(session.scalars(select(Item.id)).all()) == 3


def test_a_bad_last_row_writes_nothing_for_a_catalogue_run(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "c.csv", 2500)  # more than one write batch before the bad row
    with open(catalogue, "a") as fh:
        fh.write("SKU-000,again,red\n")  # a duplicate key, found only at the very end
    proc = env.cli(
        "submit",
        str(catalogue),
        "--template",
        "studio photo of {title}, {color}",
        "--key",
        "sku",
        "--catalogue",
        "mugs",
        check=False,
    )
    assert proc.returncode == 2 and "nothing was submitted" in proc.stderr, proc.stderr
    assert f"{catalogue}:2502" in proc.stderr or ":2502" in proc.stderr, proc.stderr
    with env.ledger().session(readonly=True) as session:
        assert session.scalars(select(Item.id)).first() is None
        assert list(catalogue_entries(session, "mugs")) == []


def test_identical_work_under_two_keys_is_generated_once(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "twins.csv"
    path.write_text("sku,title,color,seed\nA,mug,red,7\nB,mug,red,7\nC,cup,red,7\n")
    submitted = env.submit(path, "--catalogue", "twins")
    assert (submitted["items"], submitted["skipped"]) == (2, 1)
    with env.ledger().session(readonly=True) as session:
        entries = {e.key: e for e in catalogue_entries(session, "twins")}
    assert entries["A"].item_id == entries["B"].item_id != entries["C"].item_id
