"""Catalogue runs (`submit --catalogue`), end to end with a real worker: entries say what serves each key."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import Env, finished, write_catalogue
from contract.identity import resolve_model
from contract.ledger import Ledger
from contract.schema import CatalogueEntry, Event, Image, Item, Job, State
from contract.settings import Settings
from contract.tenants import DEFAULT_TENANT_ID
from producer.catalogue import Defaults, UsageError
from producer.catalogue_runs import RetireRefused, catalogue_entries
from producer.planning import Preview, preview_request
from producer.request import SubmitRequest
from producer.submit import Submission, submit_request


def test_second_run_generates_only_changed_and_added_and_retires_the_deleted(env: Env, tmp_path: Path) -> None:
    # Messages of 8 items: the worker cuts each into two GPU batches of 4.
    env.vars["PIXELMILL_ITEMS_PER_MESSAGE"] = "8"
    env.start_worker()
    first = env.submit(write_catalogue(tmp_path / "run1.csv", 40), "--catalogue", "mugs")
    assert (first["items"], first["changes"]["new"]) == (40, 40)
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
        entries = {e.key: e for e in catalogue_entries(session, DEFAULT_TENANT_ID, "mugs")}
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


def test_request_id_returns_the_first_job_for_the_same_request_and_refuses_another(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "c.csv", 3)
    first = env.submit(catalogue, "--request-id", "nightly-2026-11-30")
    again = env.submit(catalogue, "--request-id", "nightly-2026-11-30")
    assert again["job"] == first["job"] and again["existing"] and again["messages"] == 0
    other = write_catalogue(tmp_path / "d.csv", 5, start=10)
    refused = env.cli_submit(
        other, "--size", "64x64", "--steps", "4", "--request-id", "nightly-2026-11-30", check=False
    )
    assert refused.returncode == 2 and "request_id reused with a different request" in refused.stderr
    with env.ledger().session(readonly=True) as session:
        assert len(session.scalars(select(Item.id)).all()) == 3


def test_a_bad_last_row_writes_nothing_for_a_catalogue_run(env: Env, tmp_path: Path) -> None:
    catalogue = write_catalogue(tmp_path / "c.csv", 2500)  # more than one write batch before the bad row
    with open(catalogue, "a") as fh:
        fh.write("SKU-000,again,red\n")  # a duplicate key, found only at the very end
    proc = env.cli_submit(catalogue, "--catalogue", "mugs", check=False)
    assert proc.returncode == 2 and "nothing was submitted" in proc.stderr, proc.stderr
    assert f"{catalogue}:2502" in proc.stderr or ":2502" in proc.stderr, proc.stderr
    with env.ledger().session(readonly=True) as session:
        assert session.scalars(select(Item.id)).first() is None
        assert list(catalogue_entries(session, DEFAULT_TENANT_ID, "mugs")) == []


def test_identical_work_under_two_keys_is_generated_once(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "twins.csv"
    path.write_text("sku,title,color,seed\nA,mug,red,7\nB,mug,red,7\nC,cup,red,7\n")
    submitted = env.submit(path, "--catalogue", "twins")
    assert (submitted["items"], submitted["skipped"]) == (2, 1)
    with env.ledger().session(readonly=True) as session:
        entries = {e.key: e for e in catalogue_entries(session, DEFAULT_TENANT_ID, "twins")}
    assert entries["A"].item_id == entries["B"].item_id != entries["C"].item_id


# --- the retire guard and the change preview ----------------------------------------------------------------


def ledger_rows(env: Env) -> tuple[int, int, int, int, list[tuple[str, str, int]]]:
    """Jobs, items, events, entries, and every entry's (key, change, job): what a refused run must not touch."""
    ledger = env.ledger()
    try:
        with ledger.session(readonly=True) as session:
            count = [session.scalar(select(func.count()).select_from(t)) or 0 for t in (Job, Item, Event)]
            entries = session.execute(
                select(CatalogueEntry.item_key, CatalogueEntry.change, CatalogueEntry.job_id).order_by(
                    CatalogueEntry.id
                )
            ).all()
            return count[0], count[1], count[2], len(entries), [(key, change, job) for key, change, job in entries]
    finally:
        ledger.close()


@pytest.mark.minute(1)
def test_a_truncated_nightly_export_is_refused_by_default_and_accepted_with_allow_retire(
    env: Env, tmp_path: Path
) -> None:
    """The nightly file cut to 30 % of its rows would retire 70 of 100 keys: refused (exit 2, nothing written)
    with the counts, the first keys and what to do; the dry run says so beforehand, with the same counts the
    run records once --allow-retire lets it through."""
    first = env.submit(write_catalogue(tmp_path / "full.csv", 100), "--catalogue", "shop-nightly")
    cut = write_catalogue(tmp_path / "cut.csv", 30)
    before = ledger_rows(env)

    args = ["submit", str(cut), "--template", "studio photo of {title}, {color}", "--key", "sku"]
    args += ["--size", "64x64", "--steps", "4", "--catalogue", "shop-nightly"]
    dry = env.cli(*args, "--dry-run", "--json", check=False)
    assert dry.returncode == 2 and "error: the real run would be refused" in dry.stderr, dry.stderr  # a gate
    preview = json.loads(dry.stdout)
    assert preview["changes"] == {"new": 0, "changed": 0, "unchanged": 30, "retired": 70}
    assert preview["first_keys"]["retired"] == [f"SKU-{i:03d}" for i in range(30, 35)]
    assert preview["first_keys"]["unchanged"] == [f"SKU-{i:03d}" for i in range(5)]
    assert preview["refused"] is True and preview["current"] == 100

    proc = env.cli(*args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "would retire 70 of its 100 current entries" in text, text
    assert "SKU-030, SKU-031" in text and "--allow-retire" in text and "--max-retire 70" in text, text
    assert ledger_rows(env) == before  # no job, no items, no entries touched, no outbox event

    accepted = env.submit(cut, "--catalogue", "shop-nightly", "--allow-retire")
    assert accepted["changes"] == preview["changes"] and accepted["job"] != first["job"]

    listed = json.loads(env.cli("catalogues", "--json").stdout)
    assert [(c["name"], c["runs"], c["current"], c["retired"], c["last_job"]) for c in listed] == [
        ("shop-nightly", 2, 30, 70, accepted["job"])
    ]
    assert listed[0]["last_changes"] == accepted["changes"]
    assert "shop-nightly" in env.cli("catalogues").stdout
    jobs = json.loads(env.cli("jobs", "--json").stdout)
    assert [(j["job"], j["catalogue"]) for j in jobs] == [
        (accepted["job"], "shop-nightly"),
        (first["job"], "shop-nightly"),
    ]

    for command in (["manifest", "--catalogue", "shop-nighty"], ["drift", "--catalogue", "shop-nighty"]):
        typo = env.cli(*command, check=False)
        assert typo.returncode == 2 and "no catalogue 'shop-nighty'; did you mean 'shop-nightly'?" in typo.stderr
    wrong = env.cli("submit", str(cut), "--key", "sku", "--template", "x {title}", "--max-retire", "5", check=False)
    assert wrong.returncode == 2 and "catalogue runs only (give catalogue, --catalogue" in wrong.stderr, wrong.stderr


def rows_of(keys: range, *, changed: Collection[int] = ()) -> list[dict[str, object]]:
    return [{"sku": f"SKU-{i:03d}", "title": f"mug {i}" + (" v2" if i in changed else "")} for i in keys]


class Runs:
    """Catalogue runs in this process, through `preview_request` and `submit_request`."""

    def __init__(self, env: Env, **settings: Any) -> None:
        self.settings: Settings = env.settings(**settings)
        self.ledger = Ledger(self.settings)
        self.model = resolve_model(str(env.model))

    def request(self, rows: list[dict[str, object]], catalogue: str, images: int = 1, **extra: Any) -> SubmitRequest:
        defaults = Defaults(
            template="photo of {title}", width=64, height=64, steps=4, key_column="sku", images_per_item=images
        )
        return SubmitRequest(
            rows=rows, defaults=defaults, model=self.model, catalogue=catalogue, tenant_id=DEFAULT_TENANT_ID, **extra
        )

    def both(self, rows: list[dict[str, object]], catalogue: str, **extra: Any) -> tuple[Preview, Submission]:
        """The dry run, then the run: the preview's counts must be the ones the run records."""
        preview = preview_request(self.settings, self.ledger, self.request(rows, catalogue, **extra))
        assert preview.refused is None, preview.refused
        submitted = submit_request(self.settings, self.ledger, self.request(rows, catalogue, **extra))
        assert preview.changes == submitted.changes, (preview.changes, submitted.changes)
        with self.ledger.session(readonly=True) as session:
            job = session.get(Job, submitted.job)
            assert job is not None and job.counts["changes"] == preview.changes
        return preview, submitted


def test_the_preview_counts_what_the_run_then_records(env: Env) -> None:
    runs = Runs(env)
    preview, _ = runs.both(rows_of(range(100)), "shop")  # first run
    assert preview.changes == {"new": 100, "changed": 0, "unchanged": 0, "retired": 0}
    assert preview.first_keys["new"] == ["SKU-000", "SKU-001", "SKU-002", "SKU-003", "SKU-004"]
    preview, _ = runs.both(rows_of(range(100)), "shop")  # rerun, unchanged
    assert preview.changes["unchanged"] == 100 and preview.current == 100
    preview, _ = runs.both(rows_of(range(100), changed={42}), "shop")  # 1 % changed
    assert preview.changes["changed"] == 1 and preview.first_keys["changed"] == ["SKU-042"]

    cut = runs.request(rows_of(range(30)), "shop")  # truncated: 30 % of the rows
    refused = preview_request(runs.settings, runs.ledger, cut).refused
    assert refused is not None and (refused.retired, refused.current, refused.limit) == (70, 100, 10)
    with pytest.raises(RetireRefused) as caught:
        submit_request(runs.settings, runs.ledger, cut)
    assert caught.value.as_dict() == refused.as_dict()
    preview, _ = runs.both(rows_of(range(30)), "shop", allow_retire=True)
    assert preview.changes == {"new": 0, "changed": 0, "unchanged": 30, "retired": 70}
    assert preview.first_keys["retired"] == ["SKU-030", "SKU-031", "SKU-032", "SKU-033", "SKU-034"]

    # Retired keys come back (ten of them changed) beside two new ones: nothing is retired.
    preview, _ = runs.both(rows_of(range(102), changed={42, *range(50, 60)}), "shop")
    assert preview.changes == {"new": 2, "changed": 10, "unchanged": 90, "retired": 0}
    assert preview.current == 30 and preview.first_keys["changed"][0] == "SKU-050"

    # Two images per key: the guard and the counts are in entries (key, variant).
    preview, _ = runs.both(rows_of(range(20)), "variants", images=2)
    assert preview.changes["new"] == 40
    preview, _ = runs.both(rows_of(range(15)), "variants", images=2)  # 10 of 40 entries: the floor allows it
    assert preview.changes == {"new": 0, "changed": 0, "unchanged": 30, "retired": 10}
    assert preview.first_keys["retired"] == [f"SKU-{i:03d}" for i in range(15, 20)]
    with pytest.raises(RetireRefused, match="would retire 12 of its 30"):
        submit_request(runs.settings, runs.ledger, runs.request(rows_of(range(9)), "variants", images=2))


def test_the_floor_for_small_catalogues_and_max_retire(env: Env) -> None:
    runs = Runs(env, catalogue_retire_floor=3)
    runs.both(rows_of(range(12)), "small")
    runs.both(rows_of(range(9)), "small")  # 3 of 12 (25 %): within the floor
    with pytest.raises(RetireRefused, match="would retire 4 of its 9 current entries"):
        submit_request(runs.settings, runs.ledger, runs.request(rows_of(range(5)), "small"))

    runs.both(rows_of(range(100)), "big")
    runs.both(rows_of(range(80)), "big", max_retire=20)  # 20 of 100: exactly the limit
    with pytest.raises(RetireRefused, match="more than --max-retire 20 %") as caught:
        submit_request(runs.settings, runs.ledger, runs.request(rows_of(range(60)), "big", max_retire=20))
    assert (caught.value.retired, caught.value.current, caught.value.limit) == (20, 80, 16)
    runs.both(rows_of(range(60)), "big", max_retire=25)
    lenient = Runs(env, catalogue_max_retire=50.0)  # PIXELMILL_CATALOGUE_MAX_RETIRE
    lenient.both(rows_of(range(30)), "big")  # 30 of 60
    with pytest.raises(UsageError, match="max_retire"):
        runs.request(rows_of(range(3)), "big", max_retire=101)
