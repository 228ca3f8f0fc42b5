"""Tenants (issue 22, findings 2 and 3): every door acts as its caller's tenant, and no request reaches past it.

Two tenants on one installation, driven through HTTP (FastAPI's TestClient over `create_app`, as the other route
tests), the Python API and the CLI (in process, through Typer's runner): neither can see, cancel, retry, or read
the manifests, sheets, catalogues or events of the other's jobs, and another tenant's job answers exactly as a
missing one. In process, no worker: items stay pending."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from conftest import LOOPBACK, Env, installation_on
from contract.schema import Delivery, Event, Item, Job, State, TenantToken
from contract.settings import Settings, get_settings
from contract.tenants import add_tenant, tenant_for_token
from pixelmill.api import Client, ManifestError, SubmitError, TenantError, UnknownJob
from pixelmill.api import Job as JobHandle
from pixelmill.api.http import create_app
from pixelmill.cli.commands import app as cli_app
from producer.request_v1 import intake
from producer.submit import REQUEST_ID_REUSED

OPTIONS: dict[str, Any] = {"key": "sku", "template": "photo of {title}", "size": "64x64", "steps": 4}


def rows_of(count: int, start: int = 0) -> list[dict[str, object]]:
    return [{"sku": f"SKU-{i:03d}", "title": f"mug {i}"} for i in range(start, start + count)]


def v1(rid: str, rows: list[dict[str, object]], **extra: Any) -> dict[str, Any]:
    return {"v": 1, "request_id": rid, "rows": rows, "key": "sku", "template": "photo of {title}", **extra}


def tenants(settings: Settings, *names: str) -> dict[str, str]:
    """Add the tenants; their tokens by name."""
    client = Client(settings)
    try:
        with client.ledger.session() as session:
            return {name: str(add_tenant(session, name)[1]) for name in names}
    finally:
        client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jobs_written(settings: Settings) -> int:
    with Client(settings) as client, client.ledger.session(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def same_as_missing(answer: Any, missing: Any, job: int, absent: int) -> bool:
    """Another tenant's job answered exactly as a job that does not exist: status and body, the id aside."""
    body, expected = str(answer.text).replace(str(job), "N"), str(missing.text).replace(str(absent), "N")
    return bool(answer.status_code == missing.status_code and body == expected)


def test_finding_2_a_second_token_cannot_read_or_cancel_the_first_tenants_job(env: Env) -> None:
    settings = env.settings()
    token = tenants(settings, "team-a", "team-b")
    with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as http:
        assert http.post("/v1/jobs", json=v1("a-1", rows_of(2))).status_code == 401  # tokens exist: no open door
        created = http.post("/v1/jobs", json=v1("a-1", rows_of(2), catalogue="shop"), headers=bearer(token["team-a"]))
        assert created.status_code == 201, created.text
        job, absent = created.json()["job"], 999_999
        a, b = bearer(token["team-a"]), bearer(token["team-b"])

        for method, path in [
            ("GET", "/v1/jobs/{}"),
            ("GET", "/v1/jobs/{}/items"),
            ("GET", "/v1/jobs/{}/manifest"),
            ("POST", "/v1/jobs/{}/cancel"),
            ("POST", "/v1/jobs/{}/retry"),
        ]:
            theirs = http.request(method, path.format(job), headers=b)
            missing = http.request(method, path.format(absent), headers=b)
            assert theirs.status_code == 404 and same_as_missing(theirs, missing, job, absent), (path, theirs.text)
            assert theirs.json() == {"detail": f"no job {job}"}

        assert http.get("/v1/catalogues", headers=b).json() == {"catalogues": []}
        hidden = http.get("/v1/catalogues/shop/manifest", headers=b)
        unheard = http.get("/v1/catalogues/qqqq/manifest", headers=b)
        assert hidden.status_code == unheard.status_code == 404
        assert hidden.text.replace("shop", "N") == unheard.text.replace("qqqq", "N")

        # The owner still sees its job whole: nothing of it was cancelled by the other token.
        status = http.get(f"/v1/jobs/{job}", headers=a).json()
        assert (status["total"], status["cancelled"]) == (2, 0)
        assert [c["name"] for c in http.get("/v1/catalogues", headers=a).json()["catalogues"]] == ["shop"]
        rows = http.get(f"/v1/jobs/{job}/manifest", params={"format": "jsonl"}, headers=a).text.splitlines()
        assert [json.loads(r)["key"] for r in rows] == ["SKU-000", "SKU-001"]

        # Catalogue names are per tenant: the second tenant's own `shop` is its own.
        mine = http.post("/v1/jobs", json=v1("a-1", rows_of(1, 50), catalogue="shop"), headers=b)
        assert mine.status_code == 201 and mine.json()["job"] != job
        [listed] = http.get("/v1/catalogues", headers=b).json()["catalogues"]
        assert (listed["last_job"], listed["current"]) == (mine.json()["job"], 1)

        with Client(settings) as operator, operator.ledger.session() as session:
            from contract.tenants import revoke_tenant

            revoke_tenant(session, "team-b")
        assert http.get(f"/v1/jobs/{mine.json()['job']}", headers=b).status_code == 401


def test_finding_3_request_id_is_per_tenant_and_a_changed_body_is_refused(env: Env) -> None:
    settings = env.settings()
    token = tenants(settings, "team-a", "team-b")
    a, b = bearer(token["team-a"]), bearer(token["team-b"])
    first = v1("r-1", rows_of(2), reply_to="pixelmill.reply.team-a.replies")
    with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as http:
        accepted = http.post("/v1/jobs", json=first, headers=a)
        assert accepted.status_code == 201, accepted.text
        job = accepted.json()["job"]

        # The same request_id is the other tenant's own: a job of its own, not `existing` with the first one's.
        theirs = http.post("/v1/jobs", json=v1("r-1", rows_of(3), reply_to="pixelmill.reply.team-b.r"), headers=b)
        assert theirs.status_code == 201 and theirs.json()["job"] != job and theirs.json()["existing"] is False

        again = http.post("/v1/jobs", json=first, headers=a)
        assert again.status_code == 200 and again.json()["job"] == job and again.json()["existing"] is True

        before = jobs_written(settings)
        changed = {**first, "rows": rows_of(2, 10), "reply_to": "pixelmill.reply.team-a.other"}
        refused = http.post("/v1/jobs", json=changed, headers=a)
        assert refused.status_code == 409 and REQUEST_ID_REUSED in refused.json()["problems"][0], refused.text
        redirected = http.post("/v1/jobs", json={**first, "reply_to": "pixelmill.reply.team-a.other"}, headers=a)
        assert redirected.status_code == 409  # the destinations are part of the request: no events to a new one
        assert jobs_written(settings) == before

    # The intake and the Python API refuse the same reuse, each in its own words.
    with Client(settings, tenant="team-a") as client:
        result = intake(settings, client.ledger, changed, tenant=client.tenant)
        assert result.status == "rejected" and REQUEST_ID_REUSED in result.problems[0]
        with pytest.raises(SubmitError, match=REQUEST_ID_REUSED):
            client.submit(rows=rows_of(1), request_id="r-1", **OPTIONS)
        same = client.submit(rows=iter(rows_of(2)), request_id="r-py", **OPTIONS)  # a one-pass iterable
        assert client.submit(rows=iter(rows_of(2)), request_id="r-py", **OPTIONS).id == same.id
        assert jobs_written(settings) == before + 1

        with client.ledger.session(readonly=True) as session:
            targets = {
                (type_, target)
                for type_, job_id, target in session.execute(
                    select(Event.type, Event.job_id, Delivery.target).join(Delivery, Delivery.event_id == Event.id)
                )
                if job_id == job or job_id is None
            }
    # The first job's events went to its own reply queue only; the refusals to the queue that asked.
    assert ("job.accepted", "pixelmill.reply.team-a.replies") in targets
    assert ("job.rejected", "pixelmill.reply.team-a.other") in targets
    assert not {t for t in targets if t[0] != "job.rejected" and t[1] != "pixelmill.reply.team-a.replies"}


@pytest.fixture(params=["embedded", "pg-redis-local"])
def two_backends(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[Env]:
    """An installation on the embedded defaults, or on PostgreSQL and redis-server."""
    installation = installation_on(request, tmp_path, tiny_model, request.param)
    yield installation
    installation.close()


def cli(monkeypatch: pytest.MonkeyPatch, env: Env, *args: str) -> Any:
    """`pixelmill ARGS` in process, with the installation's settings."""
    for key, value in env.vars.items():
        if key.startswith("PIXELMILL_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli_app, list(args))
    finally:
        get_settings.cache_clear()


def error_of(result: Any) -> str:
    return " ".join(result.output.split())


def test_two_tenants_cannot_see_cancel_retry_or_read_each_other_through_cli_python_and_http(
    two_backends: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = two_backends
    settings = env.settings()
    token = tenants(settings, "team-a", "team-b")
    with Client(settings, tenant="team-a") as client_a, Client(settings, tenant="team-b") as client_b:
        a_job = client_a.submit(rows=rows_of(3), catalogue="shop", **OPTIONS).id
        b_job = client_b.submit(rows=rows_of(2, 20), catalogue="shop", **OPTIONS).id

        # Python API
        with pytest.raises(UnknownJob, match=f"no job {a_job}"):
            client_b.job(a_job)
        foreign = JobHandle(client_b, a_job)  # a handle made by hand reaches no further
        for act in (foreign.status, foreign.cancel, foreign.retry, foreign.items, foreign.events):
            with pytest.raises(UnknownJob):
                act()
        with pytest.raises(ManifestError):
            next(iter(foreign.manifest()))
        assert [j.job for j in client_b.jobs()] == [b_job] and [j.job for j in client_a.jobs()] == [a_job]
        assert [(c.name, c.last_job) for c in client_b.catalogues()] == [("shop", b_job)]
        assert [r.key for r in client_b.manifest(catalogue="shop")] == ["SKU-020", "SKU-021"]
        with pytest.raises(TenantError):
            Client(settings, tenant="nobody").jobs()

        # CLI: as team-b, team-a's job is a missing one, exit 2 in the same words.
        missing = cli(monkeypatch, env, "--tenant", "team-b", "status", "999999")
        sheet = str(tmp_path / "sheet.html")
        for args in (
            ["status", str(a_job)],
            ["cancel", str(a_job)],
            ["retry", str(a_job)],
            ["items", str(a_job)],
            ["manifest", "--job", str(a_job)],
            ["sheet", "--job", str(a_job), "-o", sheet],
        ):
            result = cli(monkeypatch, env, "--tenant", "team-b", *args)
            assert result.exit_code == 2 and f"no job {a_job}" in result.output, (args, result.output)
        assert missing.exit_code == 2
        assert error_of(result).replace(str(a_job), "N") == error_of(missing).replace("999999", "N")
        listed = cli(monkeypatch, env, "--tenant", "team-b", "jobs", "--json")
        assert [j["job"] for j in json.loads(listed.stdout)] == [b_job]
        catalogues = cli(monkeypatch, env, "--tenant", "team-b", "catalogues", "--json")
        assert [(c["name"], c["last_job"]) for c in json.loads(catalogues.stdout)] == [("shop", b_job)]
        monkeypatch.setenv("PIXELMILL_TENANT", "team-a")  # the setting, when no --tenant is given
        env.vars["PIXELMILL_TENANT"] = "team-a"
        assert [j["job"] for j in json.loads(cli(monkeypatch, env, "jobs", "--json").stdout)] == [a_job]
        unknown = cli(monkeypatch, env, "--tenant", "nobody", "jobs")
        assert unknown.exit_code == 2 and "no tenant 'nobody'" in unknown.output

        # HTTP, with team-b's token
        # HTTP, with team-b's token: every route that names a job answers team-a's job exactly as a missing one
        # (status and body, the job's number aside), and team-a's own catalogue is team-b's catalogue of that name.
        client_a.submit(rows=rows_of(1, 40), catalogue="only-a", **OPTIONS)
        with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as http:
            as_b = bearer(token["team-b"])
            for method, route in [
                ("GET", "/v1/jobs/{}"),
                ("GET", "/v1/jobs/{}/items"),
                ("GET", "/v1/jobs/{}/manifest"),
                ("POST", "/v1/jobs/{}/cancel"),
                ("POST", "/v1/jobs/{}/retry"),
            ]:
                foreign_answer = http.request(method, route.format(a_job), headers=as_b)
                missing_answer = http.request(method, route.format(999999), headers=as_b)
                assert foreign_answer.status_code == missing_answer.status_code == 404, (route, foreign_answer.text)
                assert foreign_answer.text.replace(str(a_job), "N") == missing_answer.text.replace("999999", "N")
            foreign_answer = http.get("/v1/catalogues/only-a/manifest", headers=as_b)
            missing_answer = http.get("/v1/catalogues/no-such/manifest", headers=as_b)
            assert foreign_answer.status_code == missing_answer.status_code == 404
            assert foreign_answer.text.replace("only-a", "N") == missing_answer.text.replace("no-such", "N")
            named = http.get("/v1/catalogues", headers=as_b).json()["catalogues"]
            assert [(c["name"], c["last_job"]) for c in named] == [("shop", b_job)]

        # Nothing of team-a's job was touched by any of it.
        with client_a.ledger.session(readonly=True) as session:
            states = session.scalars(select(Item.state).where(Item.job_id == a_job)).all()
        assert len(states) == 3 and State.cancelled not in states


def test_tenants_cli_prints_a_token_once_keeps_its_hash_and_rotate_and_revoke_take_effect(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = cli(monkeypatch, env, "tenants", "add", "team-a", "--source-root", "/srv/a", "--webhook-host", "hooks.lan")
    assert added.exit_code == 0, added.output
    first = added.stdout.strip()
    assert re.fullmatch(r"pm_[A-Za-z0-9_-]{40,}", first)  # the token alone on stdout, for `TOKEN=$(...)`
    with Client(env.settings()) as client:
        with client.ledger.session(readonly=True) as session:
            stored = session.scalars(select(TenantToken.digest)).all()
            assert stored == [hashlib.sha256(first.encode()).hexdigest()]  # a hash, never the token
            assert tenant_for_token(session, first) is not None

        listed = json.loads(cli(monkeypatch, env, "tenants", "list", "--json").stdout)
        mine = next(t for t in listed if t["name"] == "team-a")
        assert (mine["tokens"], mine["source_roots"], mine["webhook_hosts"], mine["revoked"]) == (
            1,
            ["/srv/a"],
            ["hooks.lan"],
            None,
        )
        assert mine["reply_prefix"] == "pixelmill.reply.team-a."
        assert cli(monkeypatch, env, "tenants", "add", "team-a").exit_code == 2

        kept = cli(monkeypatch, env, "tenants", "rotate", "team-a", "--keep-old").stdout.strip()
        second = cli(monkeypatch, env, "tenants", "rotate", "team-a").stdout.strip()
        with client.ledger.session(readonly=True) as session:
            assert [tenant_for_token(session, t) is not None for t in (first, kept, second)] == [False, False, True]

        assert cli(monkeypatch, env, "tenants", "revoke", "team-a").exit_code == 0
        with client.ledger.session(readonly=True) as session:
            assert tenant_for_token(session, second) is None
        refused = cli(monkeypatch, env, "--tenant", "team-a", "jobs")
        assert refused.exit_code == 2 and "no tenant 'team-a'" in refused.output
        assert cli(monkeypatch, env, "tenants", "revoke", "nobody").exit_code == 2


def test_api_tokens_name_their_tenant_and_a_name_that_cannot_be_one_is_refused(env: Env) -> None:
    """PIXELMILL_API_TOKENS keeps a one-team setup working: each name becomes its tenant, isolated as any other."""
    settings = env.settings(api_tokens="ci:" + "c" * 32 + ",ops:" + "o" * 32)
    with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as http:
        made = http.post("/v1/jobs", json=v1("e-1", rows_of(1)), headers=bearer("c" * 32))
        assert made.status_code == 201, made.text
        assert http.get(f"/v1/jobs/{made.json()['job']}", headers=bearer("o" * 32)).status_code == 404
        assert http.get(f"/v1/jobs/{made.json()['job']}", headers=bearer("c" * 32)).status_code == 200
    with Client(settings, tenant="ci") as client:
        assert [j.job for j in client.jobs()] == [made.json()["job"]]
    with pytest.raises(ValueError, match="PIXELMILL_API_TOKENS: name 'CI'"):
        create_app(env.settings(api_tokens="CI:" + "c" * 32), dispatch=False)


def test_a_tokenless_loopback_door_acts_as_the_default_tenant_only(env: Env) -> None:
    settings = env.settings()
    with TestClient(create_app(settings, dispatch=False), base_url=LOOPBACK) as http:
        made = http.post("/v1/jobs", json=v1("d-1", rows_of(1)))
        assert made.status_code == 201, made.text
    with Client(settings) as default, Client(settings, tenant="team-a") as other:
        assert [j.job for j in default.jobs()] == [made.json()["job"]]
        with default.ledger.session() as session:
            add_tenant(session, "team-a")
        assert other.jobs() == []


def test_the_same_rows_from_another_tenant_are_its_own_work_never_skipped_as_done(env: Env) -> None:
    """The skip lookup counts only the tenant's own items: another tenant's would tell it what others generate
    (`skipped`), and its job and catalogue would point at an image it does not own."""
    settings = env.settings()
    tenants(settings, "team-a", "team-b", "team-c")
    with Client(settings, tenant="team-a") as client_a, Client(settings, tenant="team-b") as client_b:
        first = client_a.submit(rows=rows_of(3), catalogue="shop", **OPTIONS).submission
        again = client_a.submit(rows=rows_of(3), **OPTIONS).submission
        theirs = client_b.submit(rows=rows_of(3), catalogue="shop", **OPTIONS).submission
        assert first is not None and again is not None and theirs is not None
        assert (first.items, again.skipped) == (3, 3)  # the tenant's own repeat is skipped
        assert (theirs.items, theirs.skipped) == (3, 0)  # the same rows from another tenant are new work
        assert {row.job for row in client_b.manifest(catalogue="shop")} == {theirs.job}
    with Client(settings, tenant="team-c") as client_c:  # a plain submit looks up hashes only: the same rule
        plain = client_c.submit(rows=rows_of(3), **OPTIONS).submission
        assert plain is not None and (plain.items, plain.skipped) == (3, 0)
