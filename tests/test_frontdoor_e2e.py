"""The front door with real processes: `pixelmill intake`, `pixelmill serve` (uvicorn), `pixelmill worker`, a
client that imports nothing from pixelmill, and the README's Python example run verbatim."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import servers
from sqlalchemy import func, select, update

from conftest import Env, installation_on, write_catalogue
from contract.queue import make_celery
from contract.schema import Event, Item, Job, Tenant

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"

# The client side, run as its own process: only celery and kombu, as any Celery-protocol client would.
CLIENT = textwrap.dedent("""
    import json, sys
    from celery import Celery
    from kombu import Connection, Queue

    broker, reply_to, requests, want = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    client = Celery(broker=broker)
    for request in requests:
        client.send_task("pixelmill.submit", args=[request], queue="pixelmill.intake")
    events = []
    with Connection(broker) as conn, conn.SimpleQueue(Queue(reply_to)) as replies:
        while any(sum(e["type"] == t for e in events) < n for t, n in want.items()):  # {event type: how many}
            message = replies.get(timeout=240)
            assert message.headers["task"] == "pixelmill.event", message.headers
            args = message.payload[0]
            events.append(args[0])
            message.ack()
    assert not [m for m in sys.modules if m.split(".")[0] in ("pixelmill", "producer", "worker")]
    print(json.dumps(events))
""")


def tiny_request(template: str, reply_to: str) -> dict[str, Any]:
    """What the requests of a test share: a v1 message keyed by sku, at the tiny size."""
    return {"v": 1, "key": "sku", "template": template, "reply_to": reply_to, "options": {"size": "64x64", "steps": 4}}


def logs(env: Env, name: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(env.data_dir.glob(f"{name}-*.log")))


def items_of(env: Env, request_id: str) -> tuple[list[int], list[str]]:
    ledger = env.ledger()
    try:
        with ledger.session(readonly=True) as session:
            jobs = list(session.scalars(select(Job.id).where(Job.request_id == request_id)))
            keys = list(session.scalars(select(Item.item_key).where(Item.job_id.in_(jobs)).order_by(Item.item_key)))
            return jobs, keys
    finally:
        ledger.close()


def allow_sources(env: Env, root: Path) -> None:
    """The operator lets the tenant `default` name catalogue files under `root` as a request's `source`."""
    ledger = env.ledger()
    try:
        with ledger.session() as session:
            session.execute(update(Tenant).where(Tenant.name == "default").values(source_roots=[str(root)]))
    finally:
        ledger.close()


def broker_url(env: Env) -> str:
    return str(make_celery(env.settings()).conf.broker_url)


def run_client(env: Env, requests: list[dict[str, Any]], reply_to: str, want: dict[str, int]) -> list[dict[str, Any]]:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIXELMILL_")}
    args = [broker_url(env), reply_to, json.dumps(requests), json.dumps(want)]
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, *args], env=clean, cwd="/", capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + logs(env, "intake")[-3000:] + env.worker_logs()[-3000:]
    replies: list[dict[str, Any]] = json.loads(proc.stdout)
    return replies


@pytest.fixture(params=["embedded", "pg-redis-local"])
def door_env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Any:
    """The embedded defaults, and PostgreSQL + redis-server (tests/servers.py)."""
    installation = installation_on(request, tmp_path, tiny_model, request.param)
    yield installation
    installation.close()


def test_a_plain_celery_client_gets_accepted_and_finished_on_its_reply_queue(door_env: Env) -> None:
    env = door_env
    source = write_catalogue(env.data_dir / "catalogue.csv", 3)
    allow_sources(env, env.data_dir)
    env.start("intake")
    env.start_worker()
    common = tiny_request("studio photo of {title}, {color}", "pixelmill.reply.default.client")
    inline = {
        **common,
        "request_id": "inline-1",
        "rows": [{"sku": "A-1", "title": "mug", "color": "red"}, {"sku": "A-2", "title": "cup", "color": "tan"}],
    }
    from_file = {
        **common,
        "request_id": "file-1",
        "source": str(source),
        "options": {"size": "64x64", "steps": 4, "images_per_item": 2},
    }
    bad = {**common, "request_id": "bad-1", "rows": [{"title": "no key"}], "options": {"size": "100x100"}}
    got = run_client(
        env, [inline, from_file, bad], "pixelmill.reply.default.client", want={"job.finished": 2, "job.rejected": 1}
    )
    [rejected] = [e for e in got if e["type"] == "job.rejected"]
    assert rejected["request_id"] == "bad-1" and rejected["job"] is None
    assert rejected["data"]["problems"] == [  # every problem at once: the bad option and the rows' problems
        "request: field 'size': width 100 must be a multiple of 8 from 64 to 2048 (got '100x100')",
        "<rows>:1: field 'sku': is missing: no such field in the first object for the item key (--key sku); give "
        "the key column with --key, e.g. --key title; available: 'title'",
        "<rows>:1: field 'color': is missing: no such field in the first object for the template field {color}; "
        "available: 'title'",
    ]
    assert items_of(env, "bad-1") == ([], [])
    got = [e for e in got if e["type"] != "job.rejected"]
    by_request: dict[str, list[str]] = {}
    for event in got:
        by_request.setdefault(event["request_id"], []).append(event["type"])
        assert {"v", "type", "id", "request_id", "job", "catalogue", "created_at", "data"} <= set(event)
    assert by_request == {"inline-1": ["job.accepted", "job.finished"], "file-1": ["job.accepted", "job.finished"]}
    finished = {e["request_id"]: e for e in got if e["type"] == "job.finished"}
    assert finished["inline-1"]["data"]["counts"]["succeeded"] == 2
    assert finished["file-1"]["data"]["counts"]["succeeded"] == 6
    jobs, keys = items_of(env, "inline-1")
    assert len(jobs) == 1 and keys == ["A-1", "A-2"]
    jobs, keys = items_of(env, "file-1")
    assert len(jobs) == 1 and keys == sorted([f"SKU-{i:03d}" for i in range(3)] * 2)


def test_repeats_and_a_killed_intake_each_give_exactly_one_job(env: Env) -> None:
    """The same request_id sent 3 times, and a request whose intake process is SIGKILLed while it works on it
    (redelivered after PIXELMILL_INTAKE_VISIBILITY_TIMEOUT to the restarted intake): one job each."""
    source = write_catalogue(env.data_dir / "big.csv", 3000)
    allow_sources(env, env.data_dir)
    fast = {"PIXELMILL_INTAKE_VISIBILITY_TIMEOUT": "3"}
    intake = env.start("intake", "--loglevel", "INFO", **fast)
    common = tiny_request("studio photo of {title}", "pixelmill.reply.default.repeat")
    repeated = {**common, "request_id": "again", "rows": [{"sku": "R-1", "title": "mug"}]}
    # Sent 3 times, each once the previous answer came: each time its job.accepted again (the same event id).
    got = [
        event
        for _ in range(3)
        for event in run_client(env, [repeated], "pixelmill.reply.default.repeat", {"job.accepted": 1})
    ]
    assert len(got) == 3 and len({e["id"] for e in got}) == 1 and {e["request_id"] for e in got} == {"again"}
    killed = {**common, "request_id": "killed", "source": str(source)}
    run_client(env, [killed], "unused", want={})
    deadline = time.monotonic() + 60
    while "killed" not in logs(env, "intake") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "killed" in logs(env, "intake"), logs(env, "intake")[-3000:]
    env.kill(intake)
    env.start("intake", **fast)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(items_of(env, "killed")[1]) < 3000:
        time.sleep(0.5)
    assert items_of(env, "again") == ([items_of(env, "again")[0][0]], ["R-1"])
    jobs, keys = items_of(env, "killed")
    assert len(jobs) == 1 and len(keys) == 3000 == len(set(keys)), logs(env, "intake")[-3000:]
    ledger = env.ledger()
    with ledger.session(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
    ledger.close()
    first, second = (env.data_dir / "intake-0.log").read_text(), (env.data_dir / "intake-1.log").read_text()
    assert "request accepted" not in first.split("request_id=killed", 1)[1]  # killed before it finished
    assert "request_id=killed" in second  # the message was delivered again to the restarted intake


@pytest.mark.minute(2)
def test_http_api_with_a_real_uvicorn(env: Env) -> None:
    import httpx

    env.vars["PIXELMILL_MAX_ATTEMPTS"] = "1"  # the retried job fails at once
    # A file in the way is a storage error, which backs off for PIXELMILL_INFRA_RETRY_BUDGET before it counts:
    # no budget, so the item fails now.
    env.vars["PIXELMILL_INFRA_RETRY_BUDGET"] = "0"
    _, base = env.serve(PIXELMILL_API_TOKENS=f"ci:{TOKEN}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {
        "v": 1,
        "request_id": "http-1",
        "key": "sku",
        "template": "studio photo of {title}",
        "rows": [{"sku": "H-1", "title": "mug"}, {"sku": "H-2", "title": "bowl"}],
        "options": {"size": "64x64", "steps": 4},
    }

    def wait_finished(http: httpx.Client, job: int) -> dict[str, Any]:
        deadline = time.monotonic() + 180
        while not (status := http.get(f"/v1/jobs/{job}", headers=auth).json())["finished"]:
            assert time.monotonic() < deadline, env.worker_logs()[-3000:]
            time.sleep(0.5)
        return dict(status)

    with httpx.Client(base_url=base, timeout=60) as http:
        assert http.post("/v1/jobs", json=body).status_code == 401
        assert http.post("/v1/jobs", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get("/v1/jobs/1", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
        created = http.post("/v1/jobs", json=body, headers=auth)
        assert created.status_code == 201, created.text
        job = created.json()["job"]
        assert created.headers["location"] == f"/v1/jobs/{job}"
        again = http.post(
            "/v1/jobs",
            json={k: v for k, v in body.items() if k != "request_id"},
            headers={**auth, "Idempotency-Key": "http-1"},
        )
        assert again.status_code == 200 and again.json()["job"] == job
        bad = http.post("/v1/jobs", json={**body, "request_id": "http-bad", "options": {"size": "65x65"}}, headers=auth)
        assert bad.status_code == 422
        assert bad.json()["problems"] == [
            "request: field 'size': width 65 must be a multiple of 8 from 64 to 2048 (got '65x65')"
        ]
        assert http.post("/v1/jobs", content=b"x" * (17 * 1024 * 1024), headers=auth).status_code == 413
        assert http.get("/v1/jobs/999999", headers=auth).status_code == 404

        # A job whose item F-1 fails (a file where its image directory must go), and one nobody serves.
        failing = http.post(
            "/v1/jobs",
            headers=auth,
            json={
                **body,
                "request_id": "http-fail",
                "rows": [{"sku": "F-1", "title": "jug"}, {"sku": "F-2", "title": "pot"}],
            },
        )
        assert failing.status_code == 201, failing.text
        failing_job = failing.json()["job"]
        blocker = env.data_dir / "images" / "jobs" / str(failing_job) / "F-1"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("in the way")
        nobody = env.data_dir / "unserved-model"  # a pipeline directory no worker serves: its queue keeps its items
        nobody.mkdir()
        (nobody / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
        unserved = http.post(
            "/v1/jobs",
            headers=auth,
            json={**body, "request_id": "http-cancel", "model": str(nobody), "rows": [{"sku": "C-1", "title": "cup"}]},
        )
        assert unserved.status_code == 201, unserved.text
        cancel_job = unserved.json()["job"]
        env.start_worker()

        assert wait_finished(http, job)["succeeded"] == 2
        items = http.get(f"/v1/jobs/{job}/items", params={"state": "succeeded"}, headers=auth).json()["items"]
        assert sorted(i["key"] for i in items) == ["H-1", "H-2"] and all(i["image"] for i in items)
        assert http.get(f"/v1/jobs/{job}/items", params={"state": "failed"}, headers=auth).json()["items"] == []
        assert http.get(f"/v1/jobs/{job}/items", params={"state": "bogus"}, headers=auth).status_code == 422

        # The manifest, streamed: one row per item, checksums of the stored objects.
        objects = env.objects()
        as_csv = http.get(f"/v1/jobs/{job}/manifest", headers=auth)
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.headers.get("content-length") is None  # streamed (chunked), not buffered
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        as_jsonl = http.get(f"/v1/jobs/{job}/manifest", params={"format": "jsonl"}, headers=auth)
        assert as_jsonl.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in as_jsonl.text.splitlines()]
        for got in (rows, lines):
            assert [(r["key"], r["state"]) for r in got] == [("H-1", "succeeded"), ("H-2", "succeeded")]
            assert all(r["object_key"] and r["sha256"] == objects[r["object_key"]] for r in got), (got, objects)
            assert [str(r["item"]) for r in got] == [str(i["id"]) for i in sorted(items, key=lambda i: i["id"])]
        parquet = http.get(f"/v1/jobs/{job}/manifest", params={"format": "parquet"}, headers=auth)
        if importlib.util.find_spec("pyarrow") is not None:
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(parquet.content))
            assert table.column("sha256").to_pylist() == [r["sha256"] for r in lines]
        else:
            assert parquet.status_code == 422 and "pyarrow" in parquet.text
        assert http.get(f"/v1/jobs/{job}/manifest", params={"format": "xml"}, headers=auth).status_code == 422
        assert http.get("/v1/jobs/999999/manifest", headers=auth).status_code == 404
        assert http.get(f"/v1/jobs/{job}/manifest").status_code == 401

        # Cancel: the unserved job's queued item is cancelled, and the job is finished (its job.finished event).
        waiting = http.get(f"/v1/jobs/{cancel_job}", headers=auth).json()  # pending, or sent by a scheduler
        assert waiting["pending"] + waiting["queued"] == 1, waiting
        assert http.post(f"/v1/jobs/{cancel_job}/cancel").status_code == 401
        cancelled = http.post(f"/v1/jobs/{cancel_job}/cancel", headers=auth)
        assert cancelled.status_code == 200, cancelled.text
        answer = cancelled.json()
        assert answer["pending"] + answer["queued"] == 1 and answer["pending"] == waiting["pending"], answer
        assert (answer["job"], answer["running"], answer["cancelled"]) == (cancel_job, 0, 1)
        status = http.get(f"/v1/jobs/{cancel_job}", headers=auth).json()
        assert status["cancelled"] == 1 and status["finished"] and status["queued"] == 0
        assert http.get(f"/v1/jobs/{cancel_job}/items", headers=auth).json()["items"][0]["state"] == "cancelled"
        assert http.post("/v1/jobs/999999/cancel", headers=auth).status_code == 404
        ledger = env.ledger()
        with ledger.session(readonly=True) as session:
            finished_events = list(
                session.scalars(select(Event.body).where(Event.job_id == cancel_job, Event.type == "job.finished"))
            )
        ledger.close()
        assert len(finished_events) == 1 and finished_events[0]["data"]["counts"]["cancelled"] == 1

        # Retry: F-1 failed; with the obstacle gone, a retry through HTTP succeeds.
        status = wait_finished(http, failing_job)
        assert (status["failed"], status["succeeded"]) == (1, 1), env.worker_logs()[-3000:]
        blocker.unlink()
        assert (
            http.post(f"/v1/jobs/{failing_job}/retry", headers=auth, json={"failed": False}).status_code == 422
        )  # nothing to retry
        assert (
            http.post(f"/v1/jobs/{failing_job}/retry", headers=auth, json={"blocked_by": "nonsense"}).status_code == 422
        )
        retried = http.post(f"/v1/jobs/{failing_job}/retry", headers=auth)  # no body: failed items
        assert retried.status_code == 200 and retried.json() == {"job": failing_job, "requeued": 1}, retried.text
        status = wait_finished(http, failing_job)
        assert (status["failed"], status["succeeded"]) == (0, 2), env.worker_logs()[-3000:]
        assert (
            http.post(f"/v1/jobs/{failing_job}/retry", headers=auth, json={"failed": True, "blocked_by": None}).json()[
                "requeued"
            ]
            == 0
        )
        assert http.post("/v1/jobs/999999/retry", headers=auth).status_code == 404

        spec = http.get("/openapi.json").json()
        for path in (
            "/v1/jobs",
            "/v1/jobs/{job_id}/items",
            "/v1/jobs/{job_id}/manifest",
            "/v1/jobs/{job_id}/cancel",
            "/v1/jobs/{job_id}/retry",
            "/v1/catalogues",
            "/v1/catalogues/{name}/manifest",
        ):
            assert path in spec["paths"], sorted(spec["paths"])
    # schemathesis against the served OpenAPI: no 5xx on anything it generates (bounded), new routes included
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "30",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=env.data_dir,
    )  # its .schemathesis cache stays out of the repository
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:] + logs(env, "serve")[-3000:]
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert operations == 11 and f"Tested: {operations}" in proc.stdout, proc.stdout[-4000:]  # /v1/backlog, /metrics too


def test_serve_refuses_a_public_address_without_tokens(env: Env) -> None:
    proc = env.cli("serve", "--host", "0.0.0.0", "--port", str(servers.free_port()), check=False)
    assert proc.returncode == 2 and "no PIXELMILL_API_TOKENS set" in proc.stderr


def test_the_readme_python_example_runs_verbatim(env: Env) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The same from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    env.start_worker()
    proc = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        env=env.vars,
        cwd=env.data_dir,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + env.worker_logs()[-3000:]
    assert "finished: 2 succeeded, 0 failed" in proc.stdout, proc.stdout
