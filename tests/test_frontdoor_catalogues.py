"""Catalogue runs through every door other than the CLI (tests/test_catalogue_runs.py has the CLI): the retire
guard and its dry run in the Python API, the intake and HTTP, the catalogue listing and manifest routes,
`Client.jobs()` and the names of jobs submitted as `rows=`. In process, no worker: items stay pending."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from conftest import DEFAULT_TENANT, LOOPBACK, Env
from contract.schema import Item, Job
from contract.tenants import DEFAULT_TENANT_ID
from pixelmill.api import Client, Preview, SubmitError
from pixelmill.api.http import create_app
from producer.request import Options, RequestProblems, make_request
from producer.request_v1 import intake

OPTIONS: dict[str, Any] = {"key": "sku", "template": "photo of {title}", "size": "64x64", "steps": 4}


def rows_of(count: int) -> list[dict[str, object]]:
    return [{"sku": f"SKU-{i:03d}", "title": f"mug {i}"} for i in range(count)]


def v1(rid: str, rows: list[dict[str, object]], **extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "request_id": rid,
        "rows": rows,
        "key": "sku",
        "template": "photo of {title}",
        "options": {"size": "64x64", "steps": 4},
        "catalogue": "shop",
        **extra,
    }


def written(client: Client) -> tuple[int, int]:
    with client.ledger.session(readonly=True) as session:
        return (
            session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(Item)) or 0,
        )


def test_the_retire_guard_and_its_dry_run_on_every_door(env: Env) -> None:
    settings = env.settings()
    with Client(settings) as client:
        first = client.submit(rows=rows_of(100), catalogue="shop", **OPTIONS)
        assert first.submission is not None and first.submission.name.startswith("shop-")
        before = written(client)

        preview = client.submit(rows=rows_of(30), catalogue="shop", dry_run=True, **OPTIONS)
        assert isinstance(preview, Preview) and written(client) == before
        assert preview.changes == {"new": 0, "changed": 0, "unchanged": 30, "retired": 70}
        assert preview.refused is not None and preview.first_keys["retired"][0] == "SKU-030"
        assert preview.as_dict()["refused"] is True

        with pytest.raises(SubmitError) as refused:
            client.submit(rows=rows_of(30), catalogue="shop", **OPTIONS)
        problem = refused.value.problems[0]
        assert "would retire 70 of its 100 current entries" in problem and "allow_retire" in problem
        assert written(client) == before

        result = intake(settings, client.ledger, v1("cut-1", rows_of(30)), tenant=DEFAULT_TENANT)
        assert result.status == "rejected" and result.problems == refused.value.problems
        assert written(client) == before
        out_of_range = intake(settings, client.ledger, v1("cut-2", rows_of(30), max_retire=101), tenant=DEFAULT_TENANT)
        assert out_of_range.status == "rejected" and "field 'max_retire'" in out_of_range.problems[0]
        with pytest.raises(RequestProblems, match="field 'max_retire'"):
            make_request(
                settings, Options(catalogue="shop", max_retire=-1), rows=rows_of(1), tenant_id=DEFAULT_TENANT_ID
            )
        with pytest.raises(RequestProblems, match="field 'allow_retire': applies to catalogue runs only"):
            make_request(settings, Options(allow_retire=True), rows=rows_of(1), tenant_id=DEFAULT_TENANT_ID)

        with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as http:
            answer = http.post("/v1/jobs", json=v1("cut-3", rows_of(30)))
            assert answer.status_code == 422 and answer.json()["problems"] == refused.value.problems
            assert written(client) == before
            answer = http.post("/v1/jobs", json=v1("cut-4", rows_of(30), max_retire=70))
            assert answer.status_code == 201, answer.text
            assert answer.json()["submission"]["changes"]["retired"] == 70
            job = answer.json()["job"]

            listed = http.get("/v1/catalogues").json()["catalogues"]
            assert [(c["name"], c["runs"], c["current"], c["retired"], c["last_job"]) for c in listed] == [
                ("shop", 2, 30, 70, job)
            ]
            manifest = http.get("/v1/catalogues/shop/manifest", params={"format": "jsonl"})
            assert manifest.status_code == 200 and "catalogue-shop.jsonl" in manifest.headers["content-disposition"]
            rows = [json.loads(line) for line in manifest.text.splitlines()]
            assert [r["key"] for r in rows] == [f"SKU-{i:03d}" for i in range(100)]
            assert sum(r["change"] == "retired" for r in rows) == 70
            assert http.get("/v1/catalogues/shop/manifest").text.startswith("key,variant,change,")
            missing = http.get("/v1/catalogues/shopp/manifest")
            assert missing.status_code == 404
            assert missing.json()["detail"] == "no catalogue 'shopp'; did you mean 'shop'?"

        allowed = intake(settings, client.ledger, v1("back", rows_of(100), allow_retire=True), tenant=DEFAULT_TENANT)
        assert allowed.status == "accepted" and allowed.submission is not None
        assert allowed.submission.changes == {"new": 0, "changed": 0, "unchanged": 100, "retired": 0}
        assert [c.current for c in client.catalogues()] == [100]


def test_client_jobs_lists_newest_first_with_their_catalogue_and_rows_jobs_are_named(env: Env) -> None:
    with Client(env.settings()) as client:
        plain = client.submit(rows=rows_of(2), **OPTIONS)
        run = client.submit(rows=rows_of(3), catalogue="mugs", **OPTIONS)
        assert plain.submission is not None and plain.submission.name.startswith("rows-")
        assert run.submission is not None and run.submission.name.startswith("mugs-")
        jobs = client.jobs(limit=10)
        assert [(j.job, j.catalogue, j.total) for j in jobs] == [(run.id, "mugs", 1), (plain.id, None, 2)]
        assert [j.job for j in client.jobs(limit=1)] == [run.id]
        assert client.job(run.id).status().as_dict()["catalogue"] == "mugs"
        preview = client.submit(rows=rows_of(2), dry_run=True, **OPTIONS)
        assert preview.items == 0 and preview.skipped == 2 and preview.catalogue is None
        assert len(client.jobs()) == 2  # the dry run wrote nothing
